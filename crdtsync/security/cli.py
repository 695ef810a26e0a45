"""The ``crdtsync keys`` commands: create a mesh CA, issue certificates and tokens, revoke.

Registered on the main command group with ``main.add_command(keys)``. Every command takes
``--dir`` (default ``$CRDTSYNC_KEYS`` or ``./crdtsync-keys``), the keys dir described in
:mod:`crdtsync.security.ca`.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import CrdtSyncError
from .acl import Permissions

__all__ = ["keys"]

_DIR_HELP = "Keys directory [default: $CRDTSYNC_KEYS or ./crdtsync-keys]."


def _default_dir() -> Path:
    return Path(os.environ.get("CRDTSYNC_KEYS") or "crdtsync-keys")


def _dir_option(f: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--dir",
        "keys_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help=_DIR_HELP,
    )(f)


def _scopes(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--write",
        "write",
        multiple=True,
        metavar="PATTERNS",
        help="Shards it may write (and read), comma-separated or repeated, e.g. 'tasks/*'.",
    )(f)
    return click.option(
        "--read",
        "read",
        multiple=True,
        metavar="PATTERNS",
        help="Shards it may read, comma-separated or repeated; '**' is every shard.",
    )(f)


def _permissions(read: tuple[str, ...], write: tuple[str, ...], default_full: bool) -> Permissions:
    if not read and not write:
        return Permissions.full() if default_full else Permissions()
    return Permissions.parse(read, write)


@click.group()
def keys() -> None:
    """Mesh CA, agent certificates, bearer tokens and revocation (see `--help` of each)."""


@keys.command("init-mesh")
@_dir_option
@click.option(
    "--mesh", default="default", show_default=True, help="Mesh name, recorded in the certificates."
)
@click.option("--no-secret", is_flag=True, help="Do not create a mesh secret (certificates only).")
def init_mesh_cmd(keys_dir: Path | None, mesh: str, no_secret: bool) -> None:
    """Create the mesh CA (ca.key, ca.pem), mesh.json and a mesh secret in --dir."""
    from .ca import init_mesh

    root = keys_dir or _default_dir()
    try:
        init_mesh(root, mesh, secret=not no_secret)
    except CrdtSyncError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"mesh {mesh!r}: CA in {root}/ca.pem (keep {root}/ca.key on this machine only)")
    if not no_secret:
        click.echo(f"mesh secret in {root}/mesh.secret (for Agent(credentials=...) in secret mode)")
    click.echo(f"next: crdtsync keys issue NAME --dir {root}")


@keys.command("issue")
@click.argument("name")
@_dir_option
@_scopes
@click.option("--days", default=365.0, show_default=True, type=float, help="Validity in days.")
def issue_cmd(
    name: str, keys_dir: Path | None, read: tuple[str, ...], write: tuple[str, ...], days: float
) -> None:
    """Issue agent NAME's key and certificate (agents/NAME.pem, agents/NAME.key).

    Without --read/--write the agent may read and write every shard.
    """
    from .ca import MeshCA, agent_paths

    root = keys_dir or _default_dir()
    try:
        perms = _permissions(read, write, default_full=True)
        MeshCA.load(root).issue(name, perms, days=days)
    except CrdtSyncError as exc:
        raise click.ClickException(str(exc)) from exc
    cert, key = agent_paths(root, name)
    click.echo(f"{name}: read {list(perms.read)} write {list(perms.write)}, {days:g} days")
    click.echo(
        f"certificate {cert}, key {key}: copy them with ca.pem, mesh.json and revoked.pem to {name}"
    )


@keys.command("token")
@click.argument("name")
@_dir_option
@_scopes
@click.option("--days", default=30.0, show_default=True, type=float, help="Validity in days.")
def token_cmd(
    name: str, keys_dir: Path | None, read: tuple[str, ...], write: tuple[str, ...], days: float
) -> None:
    """Print a bearer token (JWT, EdDSA) for NAME with per-shard read/write scopes.

    Without --read/--write the token grants nothing: name the scopes it needs.
    """
    from .ca import MeshCA
    from .tokens import issue_token

    root = keys_dir or _default_dir()
    try:
        perms = _permissions(read, write, default_full=False)
        token = issue_token(MeshCA.load(root), name, perms, days=days)
    except CrdtSyncError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(token)


@keys.command("revoke")
@click.argument("name")
@_dir_option
def revoke_cmd(name: str, keys_dir: Path | None) -> None:
    """Revoke every certificate and token issued to NAME (writes revoked.pem).

    A running agent whose keys dir holds the new revoked.pem closes NAME's open connections
    (and Yjs clients with its tokens) with close code 4016 within about a second.
    """
    from .ca import MeshCA

    root = keys_dir or _default_dir()
    try:
        serials = MeshCA.load(root).revoke(name)
    except CrdtSyncError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"revoked {len(serials)} serials of {name!r} in {root}/revoked.pem; copy it to every "
        "agent's keys dir (running agents look at it every second and close its connections)"
    )
