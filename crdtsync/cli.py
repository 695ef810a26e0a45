"""The ``crdtsync`` command: demo, inspect a store, run an agent node, run benchmarks."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

__all__ = ["main"]

_console = Console()

DEFAULT_DEMO_DIR = Path("crdtsync-data") / "demo"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crdtsync")
def main() -> None:
    """crdtsync: durable CRDT shards shared by agents, peer to peer."""


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=DEFAULT_DEMO_DIR,
              show_default=True, help="Where the demo keeps its stores (wiped first).")
@click.option("--rounds", default=3, show_default=True, help="Kill-and-recover rounds.")
@click.option("--seed", default=None, type=int, help="Seed for the kill moments.")
def demo(data_dir: Path, rounds: int, seed: int | None) -> None:
    """Show that flushed writes survive SIGKILL, then a local mesh of agents converging."""
    import random

    from .demo import crash_and_recover

    rng = random.Random(seed)
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    _console.rule("[bold]1. Durability: a writer killed with SIGKILL mid-write")
    table = Table("round", "acknowledged (flushed)", "keys after reopen", "lost", "reopen ms")
    total_lost = 0
    with _console.status("writing, killing, reopening..."):
        for i in range(rounds):
            report = crash_and_recover(data_dir / "durability", kill_after=rng.uniform(0.3, 1.0))
            total_lost += report.lost
            table.add_row(str(i + 1), str(report.acknowledged), str(report.present),
                          f"[{'red' if report.lost else 'green'}]{report.lost}",
                          f"{report.reopen_seconds * 1000:.1f}")
    _console.print(table)
    if total_lost:
        _console.print(f"[red bold]{total_lost} acknowledged writes were lost")
        sys.exit(1)
    _console.print("[green]every acknowledged write survived.")


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def inspect(data_dir: Path) -> None:
    """List the shards in DATA_DIR's store with sizes, update counts and last compaction."""
    from .store import Store

    with Store(data_dir) as store:  # type: ignore[attr-defined]
        table = Table("shard", "log updates", "log bytes", "snapshot bytes", "updates ever",
                      "last compaction", title=str(data_dir))
        for name in store.shard_names():
            s = store.stats(name)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.last_compaction)) \
                if s.last_compaction else "never"
            table.add_row(name, str(s.log_count), str(s.log_bytes), str(s.snapshot_bytes),
                          str(s.total_updates), when)
    _console.print(table)


if __name__ == "__main__":
    main()
