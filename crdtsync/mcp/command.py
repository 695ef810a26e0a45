"""The ``crdtsync mcp`` click command (imports the ``mcp`` SDK only when it runs)."""

from __future__ import annotations

from pathlib import Path

import click

from crdtsync._cli_options import agent_node_options

__all__ = ["mcp_command"]


@click.command("mcp")
@agent_node_options
@click.option("--shard", "shards", multiple=True, help="Shard to open at start (repeatable).")
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio for desktop/IDE clients; http for streamable HTTP on loopback.",
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="HTTP bind address (loopback only)."
)
@click.option(
    "--port",
    default=0,
    show_default=True,
    help="HTTP port (0 picks a free one; see the ready line).",
)
def mcp_command(
    name: str,
    data_dir: Path | None,
    listen: str | None,
    peers: tuple[str, ...],
    shards: tuple[str, ...],
    mesh: str,
    seed: int | None,
    replication_factor: int | None,
    transport: str,
    host: str,
    port: int,
) -> None:
    """Run an agent node serving the Model Context Protocol (tools + shard resources).

    Prints one JSON "ready" line to stderr with the agent's address and the MCP URL.
    """
    import asyncio

    try:
        from .server import serve
    except ImportError as exc:
        raise click.ClickException(
            f"the MCP server needs the mcp SDK: pip install -e '.[mcp]' in a checkout ({exc})"
        ) from exc
    from ..errors import CrdtSyncError

    options = {
        "name": name,
        "data_dir": data_dir,
        "listen": listen,
        "peers": peers,
        "mesh": mesh,
        "seed": seed,
        "replication_factor": replication_factor,
    }
    try:
        asyncio.run(serve(options, transport=transport, host=host, port=port, shards=shards))
    except (CrdtSyncError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass
