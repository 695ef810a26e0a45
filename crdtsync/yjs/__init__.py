"""The Yjs (lib0 v1) byte layer: parse, validate, summarise and apply Yjs updates.

Modules, lowest first:

- :mod:`~crdtsync.yjs._scan`: the validator's inner loops (the struct section, the delete set;
  the lib0 readers and item content it uses are in ``_scan_content`` and re-exported), both
  compiled with mypyc as one group where ``setup.py`` could build it, else run as Python;
  :mod:`~crdtsync.yjs._native` picks the build (``CRDTSYNC_PURE_PYTHON=1`` forces the pure one)
  and :mod:`~crdtsync.yjs._malformed` holds the failure types both raise;
- :mod:`~crdtsync.yjs._lib0`: varuint/varint/string readers and the varuint encoder;
- :mod:`~crdtsync.yjs.parse`: the strict v1 parser (:func:`~crdtsync.yjs.parse.parse_update`
  returns an :class:`~crdtsync.yjs.parse.UpdateInfo`), with item content in ``_content`` and
  the readiness simulation in ``_causal``;
- :mod:`~crdtsync.yjs.limits`: :class:`~crdtsync.yjs.limits.UpdateLimits`, the work limits the
  parser applies to updates from peers (issue #11);
- :mod:`~crdtsync.yjs.state`: state vectors, canonical delete sets, ``covers``;
- :mod:`~crdtsync.yjs.doc`: the pycrdt side (apply, state vector, delete set, digest of a Doc);
- :mod:`~crdtsync.yjs.ready`: causal readiness, ``apply_if_ready`` and ``Backlog``;
- :mod:`~crdtsync.yjs.replay`: compaction.

``_scan``, ``_scan_content``, ``_native``, ``_malformed``, ``_lib0``, ``_content``, ``_causal``, ``limits``, ``parse``
and ``state`` import neither pycrdt nor anything of crdtsync but :mod:`crdtsync.errors`, so the
sans-I/O gossip core can use them.
This package file imports nothing, so that importing one of those never drags pycrdt in.
"""

from __future__ import annotations

__all__: list[str] = []
