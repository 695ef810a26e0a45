"""A real mosquitto broker for tests: its own process, a free port on 127.0.0.1, a temp config.

Never a system service. Tests that need one skip, with the reason, when the ``mosquitto``
binary is absent (Debian: ``apt-get install -y mosquitto``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["MOSQUITTO", "Mosquitto", "free_port"]

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
PASSWD = shutil.which("mosquitto_passwd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One broker process. ``users``: {name: password} turns anonymous logins off; ``extra``:
    more config lines (a bridge); ``tls``: serve mqtts:// with this CA, certificate and key."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        extra: list[str] = (),  # type: ignore[assignment]
        tls: tuple[Path, Path, Path] | None = None,  # (ca, cert, key) for mqtts://
    ) -> None:
        assert MOSQUITTO is not None
        self.workdir = workdir
        self.port = free_port()
        self.users = users
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_type error"]
        lines.append("set_tcp_nodelay true")  # (default false: Nagle + delayed ACKs, ~40 ms a hop)
        if tls is not None:
            lines += [f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}"]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to user "mosquitto", which cannot read files in
            # pytest's private temp directory: stay who we are (a test broker on loopback).
            lines.append("user root")
        if users:
            assert PASSWD is not None, "mosquitto_passwd is missing"
            pwfile = workdir / "passwd"
            pwfile.touch()
            for user, password in users.items():
                subprocess.run(
                    [PASSWD, "-b", str(pwfile), user, password], check=True, capture_output=True
                )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        lines += list(extra)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
