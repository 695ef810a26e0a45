"""The ``crdtsync`` command and the developer tools behind it.

* :mod:`~crdtsync.cli.commands`: the click group (``crdtsync = "crdtsync.cli:main"``).
* :mod:`~crdtsync.cli.node`: ``crdtsync agent``, one agent as a long-running process.
* :mod:`~crdtsync.cli.demo`: ``crdtsync demo`` (crash-and-recover, then a local mesh).
* :mod:`~crdtsync.cli.localmesh`: a mesh of agent processes on 127.0.0.1 (demo, fault tests).
* :mod:`~crdtsync.cli.meshview`: ``crdtsync inspect --peer``, who holds which shard.
* :mod:`~crdtsync.cli.bench`: ``crdtsync bench``, runs the scripts in ``benchmarks/``.

Nothing in the library imports this package (``tests/test_layers.py`` checks it). The old
module names (``crdtsync.demo``, ``crdtsync.node``, ...) remain as thin re-exports.
"""

from __future__ import annotations

from .commands import main

__all__ = ["main"]
