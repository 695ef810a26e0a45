"""The ``crdtsync`` command: demo, inspect a store, run an agent node, run benchmarks."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from crdtsync._cli_options import agent_node_options

__all__ = ["main"]

_console = Console()

DEFAULT_DEMO_DIR = Path("crdtsync-data") / "demo"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crdtsync")
def main() -> None:
    """crdtsync: durable CRDT shards shared by agents, peer to peer."""


@main.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DEMO_DIR,
    show_default=True,
    help="Where the demo keeps its stores: a new or empty folder, or an earlier demo's "
    "(wiped first).",
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Kill-and-recover rounds.",
)
@click.option("--seed", default=None, type=int, help="Seed for the kill moments.")
@click.option(
    "--agents",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Agent processes in the mesh.",
)
@click.option(
    "--writes",
    default=150,
    show_default=True,
    type=click.IntRange(min=1),
    help="Keys each agent writes.",
)
def demo(data_dir: Path, rounds: int, seed: int | None, agents: int, writes: int) -> None:
    """Show that flushed writes survive SIGKILL, then a local mesh of agents converging."""
    import random

    from .demo import crash_and_recover, fresh_demo_dir

    rng = random.Random(seed)
    try:
        fresh_demo_dir(data_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _console.rule("[bold]1. Durability: a writer killed with SIGKILL mid-write")
    table = Table("round", "acknowledged (flushed)", "keys after reopen", "lost", "reopen ms")
    total_lost = 0
    with _console.status("writing, killing, reopening..."):
        for i in range(rounds):
            report = crash_and_recover(data_dir / "durability", kill_after=rng.uniform(0.3, 1.0))
            total_lost += report.lost
            table.add_row(
                str(i + 1),
                str(report.acknowledged),
                str(report.present),
                f"[{'red' if report.lost else 'green'}]{report.lost}",
                f"{report.reopen_seconds * 1000:.1f}",
            )
    _console.print(table)
    if total_lost:
        _console.print(f"[red bold]{total_lost} acknowledged writes were lost")
        sys.exit(1)
    _console.print("[green]every acknowledged write survived.")

    from .demo import mesh_demo

    _console.rule(f"[bold]2. A local mesh of {agents} agent processes over websockets")
    result = mesh_demo(data_dir / "mesh", agents=agents, writes=writes, console=_console)
    if not result["converged"]:
        _console.print(f"[red bold]the mesh did not converge: {result}")
        sys.exit(1)
    _console.print(
        f"[green]all {agents} agents converged on {result['expected_keys']} keys "
        f"in {result['seconds']} s, including the one killed with SIGKILL and "
        f"restarted; clean exits: {result['exit_codes']}"
    )


@main.command()
@agent_node_options
@click.option(
    "--shard",
    "shards",
    multiple=True,
    default=("board",),
    show_default=True,
    help="Shard to open and replicate (repeatable).",
)
@click.option(
    "--write",
    "writes",
    default=0,
    help="Workload: write this many keys NAME-<n> to the first shard.",
)
@click.option("--write-rate", default=50.0, show_default=True, help="Workload writes per second.")
@click.option("--status-interval", default=0.0, help="Print a JSON status line this often (s).")
@click.option(
    "--keys",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keys dir from `crdtsync keys`: authenticate peers (wss:// with a certificate, "
    "else the mesh secret) and HTTP callers (bearer tokens from `crdtsync keys token`).",
)
@click.option(
    "--broker",
    default=None,
    metavar="URL",
    help="Gossip through this MQTT 5 broker: mqtt[s]://[USER@]HOST:PORT[/PREFIX] (password "
    "from $CRDTSYNC_MQTT_PASSWORD). With --listen/--peer too: websockets to near peers, "
    "the broker for the rest.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow --listen beyond loopback without --keys (or a broker without TLS and a "
    "login); not --http, which serves beyond loopback only with --keys (bearer tokens).",
)
@click.option(
    "--http",
    "http",
    default=None,
    metavar="HOST:PORT",
    help="Serve the HTTP API, metrics and dashboard here (e.g. 127.0.0.1:8080; beyond "
    "loopback only with --keys: callers then need tokens from `crdtsync keys token`).",
)
def agent(
    name: str,
    data_dir: Path | None,
    listen: str | None,
    peers: tuple[str, ...],
    shards: tuple[str, ...],
    mesh: str,
    writes: int,
    write_rate: float,
    status_interval: float,
    seed: int | None,
    replication_factor: int | None,
    keys: Path | None,
    broker: str | None,
    insecure: bool,
    http: str | None,
) -> None:
    """Run one agent node until SIGINT/SIGTERM (then flush and close peers cleanly)."""
    import asyncio

    from ..errors import CrdtSyncError
    from .node import NodeOptions, run_node

    opts = NodeOptions(
        name=name,
        data_dir=data_dir,
        listen=listen,
        peers=peers,
        shards=shards,
        mesh=mesh,
        writes=writes,
        write_rate=write_rate,
        status_interval=status_interval,
        seed=seed,
        replication_factor=replication_factor,
        keys=keys,
        insecure=insecure,
        http=http,
        broker=broker,
    )
    try:
        asyncio.run(run_node(opts))
    except CrdtSyncError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.argument(
    "data_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    metavar="URL",
    help="Inspect a running mesh instead: http://HOST:PORT (repeatable) reads each agent's "
    "metrics from its HTTP door; ws://HOST:PORT joins the mesh and scans who holds what.",
)
@click.option(
    "--token", default=None, help="Bearer token for the agents' HTTP doors (with --peer http://)."
)
@click.option("--mesh", default="default", show_default=True, help="Mesh name (with --peer).")
@click.option("--prefix", default="", help="Only shards named PREFIX...")
@click.option(
    "--replication-factor",
    "r",
    default=None,
    type=int,
    help="Also show each shard's expected placement holders (with --peer).",
)
@click.option(
    "--dump",
    "dump",
    default=None,
    metavar="SHARD",
    help="Print the contents of SHARD (from DATA_DIR) as JSON.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(
    data_dir: Path | None,
    peers: tuple[str, ...],
    token: str | None,
    mesh: str,
    prefix: str,
    r: int | None,
    dump: str | None,
    as_json: bool,
) -> None:
    """List the shards in DATA_DIR's store with sizes, update counts and last compaction
    (read-only: works beside the running agent that holds DATA_DIR); --dump SHARD prints one
    shard's contents. With --peer http://HOST:PORT (repeat it for more agents): those agents'
    metrics, the same figures as their /metrics and dashboard. With --peer ws://HOST:PORT:
    per agent and per shard of a running mesh, its holders and replicated sizes (a scan)."""
    if peers:
        web = [p for p in peers if p.startswith(("http://", "https://"))]
        if web and len(web) != len(peers):
            raise click.UsageError("give either http:// peers (metrics) or one ws:// peer")
        if web:
            _inspect_metrics(web, token, prefix, as_json)
        elif len(peers) > 1:
            raise click.UsageError("give one ws:// peer (it leads to the whole mesh)")
        else:
            _inspect_mesh(peers[0], mesh, prefix, r, as_json)
        return
    if data_dir is None:
        raise click.UsageError("give a DATA_DIR or --peer URL")
    import json

    from ..errors import CrdtSyncError
    from ..store import Store

    try:
        with Store.open_readonly(data_dir) as store:
            if dump is not None:
                click.echo(
                    json.dumps(_dump(store, dump), indent=2, sort_keys=True, default=_jsonable)
                )
                return
            rows: list[dict[str, Any]] = []
            for name in store.shard_names():
                if not name.startswith(prefix):
                    continue
                s = store.stats(name)
                rows.append(
                    {
                        "shard": name,
                        "log_updates": s.log_count,
                        "log_bytes": s.log_bytes,
                        "snapshot_bytes": s.snapshot_bytes,
                        "updates_ever": s.total_updates,
                        "last_compaction": s.last_compaction,
                    }
                )
    except CrdtSyncError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(
        "shard",
        "log updates",
        "log bytes",
        "snapshot bytes",
        "updates ever",
        "last compaction",
        title=str(data_dir),
    )
    # Full shard names: the name column never wraps or ends in an ellipsis (the numbers do).
    table.columns[0].no_wrap = True
    table.columns[0].min_width = max((len(str(row["shard"])) for row in rows), default=5)
    for row in rows:
        ts = row["last_compaction"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "never"
        table.add_row(
            str(row["shard"]),
            str(row["log_updates"]),
            str(row["log_bytes"]),
            str(row["snapshot_bytes"]),
            str(row["updates_ever"]),
            when,
        )
    _console.print(table)


def _dump(store: object, name: str) -> object:
    from ..containers import plain_state
    from ..errors import ShardNotFound
    from ..shard import load_doc

    loaded = store.load(name)  # type: ignore[attr-defined]
    if loaded is None:
        raise ShardNotFound(f"no shard {name!r} in this store")
    return plain_state(load_doc(loaded.snapshot, loaded.log, name, trusted=loaded.verified))


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return {"bytes_hex": value.hex()}
    return repr(value)


def _inspect_metrics(urls: list[str], token: str | None, prefix: str, as_json: bool) -> None:
    import json

    from ..errors import CrdtSyncError
    from .metricsview import inspect_metrics

    try:
        view = inspect_metrics(urls, token=token)
    except CrdtSyncError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(view.to_json(prefix), indent=2))
        return
    for table in view.tables(prefix):
        _console.print(table)


def _inspect_mesh(peer: str, mesh: str, prefix: str, r: int | None, as_json: bool) -> None:
    import asyncio
    import json

    from ..errors import CrdtSyncError
    from .meshview import inspect_mesh

    try:
        view = asyncio.run(inspect_mesh(peer, mesh=mesh, prefix=prefix, replication_factor=r))
    except CrdtSyncError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(view.to_json(), indent=2))
        return
    agents = Table(
        "agent", "address", "state", "shards", "bytes", title=f"mesh {mesh!r} via {peer}"
    )
    for name, (n, size) in view.agents().items():
        address, state = view.members.get(name, (None, "?"))
        agents.add_row(name, address or "-", state, str(n), str(size))
    _console.print(agents)
    shards = Table("shard", "holders (bytes)", *(["expected holders"] if r is not None else []))
    for shard, copies in sorted(view.shards.items()):
        held = ", ".join(f"{a} ({b})" for a, b in sorted(copies.items()))
        extra = []
        if r is not None:
            want = view.expected.get(shard, ())
            ok = set(want) <= set(copies)
            extra = [("" if ok else "[red]") + ", ".join(want)]
        shards.add_row(shard, held, *extra)
    _console.print(shards)
    if view.missing:
        _console.print(f"[yellow]no answer from: {', '.join(view.missing)}")


@main.command()
@click.argument(
    "scenarios",
    nargs=-1,
    metavar="[all|local|fanout|catchup|join|idle|restart|stream|trace|glomers|http|yjs|broker|hostile]...",
)
@click.option(
    "--quick", "size", flag_value="quick", help="Smaller sizes: all scenarios in a few minutes."
)
@click.option(
    "--tiny", "size", flag_value="tiny", help="Smallest sizes: only proves each scenario works."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Results folder [default: ./results/<timestamp>].",
)
@click.option(
    "--bench-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The checkout's benchmarks/ directory [default: found next to the package].",
)
@click.option("--list", "list_only", is_flag=True, help="List the scenarios and exit.")
def bench(
    scenarios: tuple[str, ...],
    size: str | None,
    out_dir: Path | None,
    bench_dir: Path | None,
    list_only: bool,
) -> None:
    """Measure crdtsync next to its floors and pycrdt-websocket, in one run (JSON + PNG)."""
    from . import bench as _bench

    if list_only or not scenarios:
        for name in _bench.ORDER:
            _console.print(f"[bold]{name:8}[/] {_bench.SCENARIOS[name].what}")
        if not list_only:
            _console.print(
                "usage: crdtsync bench all [--quick|--tiny]  |  crdtsync bench fanout catchup ..."
            )
        return
    names = list(_bench.ORDER) if "all" in scenarios else list(dict.fromkeys(scenarios))
    unknown = [n for n in names if n not in _bench.SCENARIOS]
    if unknown:
        raise click.UsageError(f"unknown scenario(s): {', '.join(unknown)}; see --list")
    out = out_dir or Path("results") / time.strftime("%Y%m%d-%H%M%S")
    try:
        results = _bench.run(names, size or "full", out, _console, bench_dir=bench_dir)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    if any("error" in r for r in results.values()):
        sys.exit(1)


# Registered here, after `main` exists: these groups live beside the tools they run.
from crdtsync.security.cli import keys  # noqa: E402

main.add_command(keys)

from crdtsync.mcp.command import mcp_command  # noqa: E402

main.add_command(mcp_command)

if __name__ == "__main__":
    main()
