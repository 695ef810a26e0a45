"""The click options every command that runs an agent node shares (``crdtsync agent``,
``crdtsync mcp``): one definition, so the commands cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["agent_node_options"]

F = TypeVar("F", bound=Callable[..., Any])


def agent_node_options(func: F) -> F:
    """Add --name, --data, --listen, --peer, --mesh, --seed and --replication-factor."""
    options = [
        click.option("--name", required=True, help="This agent's name, unique in its mesh."),
        click.option(
            "--data",
            "data_dir",
            type=click.Path(path_type=Path),
            default=None,
            help="Data directory [default: ~/.crdtsync/NAME or $CRDTSYNC_HOME/NAME].",
        ),
        click.option(
            "--listen", default=None, metavar="URL", help="Accept peers on ws://HOST:PORT."
        ),
        click.option(
            "--peer", "peers", multiple=True, metavar="URL", help="Seed peer to dial (repeatable)."
        ),
        click.option(
            "--mesh", default="default", show_default=True, help="Mesh name; peers must match."
        ),
        click.option(
            "--seed", default=None, type=int, help="Seed of the protocol's random choices."
        ),
        click.option(
            "--replication-factor",
            "replication_factor",
            default=None,
            type=int,
            help="Hold each shard on this many agents (placement); default: every shard everywhere.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func
