"""The import layers of crdtsync, checked by an AST scan of ``crdtsync/`` and ``transports/``.

Every import counts: top-level, lazy (inside a function) and ``if TYPE_CHECKING:`` alike, since a
type-only import is still a dependency a reader has to follow. The rules:

1. A module imports only modules of its own or a lower layer (:data:`LAYERS`).
2. No import cycle between modules (Tarjan's strongly connected components).
3. Third-party and I/O packages only from their layer up (:data:`EXTERNAL_MIN_LAYER`), msgpack
   only in the codec.
4. The sans-I/O gossip core (``crdtsync.gossip``, a module or a package) reaches, through its
   own imports and theirs, none of asyncio, time, pycrdt, lmdb, msgpack or websockets, and
   never calls the module-level ``random`` functions (``random.Random`` instances only).

:data:`KNOWN` lists today's exceptions, each with its reason; the checks fail on anything new
*and* on an entry that no longer occurs, so the list only ever shrinks. The checker is plain
functions over a tree root, so :func:`test_a_planted_upward_import_is_reported` can run it on a
copy of the tree with one bad import added.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (module or package prefix, layer): a module may import modules of its layer or below.
#: Most specific prefix wins. A module that matches nothing fails the test: classify it here.
LAYERS: list[tuple[str, int]] = [
    # 0: leaves
    ("crdtsync.errors", 0),
    ("crdtsync.names", 0),
    ("crdtsync._layout", 0),  # import plumbing for crdtsync.transports (stdlib only)
    ("crdtsync.observer", 0),  # the Observer hooks committer and transports call (metrics)
    # (entries for modules of branches not merged yet are harmless until the modules exist)
    # 1: bytes on the wire and the pycrdt-free Yjs byte layer
    ("crdtsync.yjs._lib0", 1),
    ("crdtsync.yjs.parse", 1),
    ("crdtsync.yjs.state", 1),
    ("crdtsync.yjs", 1),  # the package __init__ (re-exports; must not pull pycrdt in)
    ("crdtsync.messages", 1),
    ("crdtsync.wire", 1),
    ("crdtsync._wire_decoders", 1),  # wire's field checkers and decoders (split of wire.py)
    # 2: the sans-I/O gossip core and the interface it owns
    ("crdtsync.gossip", 2),
    ("crdtsync.replica", 2),  # the ReplicaSet Protocol (moves into crdtsync.gossip)
    ("crdtsync.quotas", 2),  # pure quota policies the core calls (issue #11)
    ("crdtsync._quota_buckets", 2),  # quotas' token buckets and budgets (split of quotas.py)
    ("crdtsync._quota_pacing", 2),  # quotas' per-message rates (split of quotas.py)
    ("crdtsync._quota_caps", 2),  # quotas' transfer and connection caps (split of quotas.py)
    # 3: partial replication and remote reads, plug-ins of the core
    ("crdtsync.sharding", 3),
    ("crdtsync._sharding_reads", 3),  # Sharding's remote reads (issue 9 split)
    ("crdtsync._sharding_placement", 3),  # Sharding's placement plan executed (split)
    ("crdtsync.placement", 3),
    ("crdtsync.query", 3),
    # 4: pycrdt, LMDB and the user-facing data types
    ("crdtsync.yjs.doc", 4),
    ("crdtsync.yjs.ready", 4),
    ("crdtsync.yjs.replay", 4),
    ("crdtsync.updates", 4),  # pycrdt-side Yjs helpers (being split into crdtsync.yjs)
    ("crdtsync.store", 4),
    ("crdtsync._store_env", 4),  # Store's directory lock and LMDB environment (issue 9 split)
    ("crdtsync._store_format", 4),  # Store's records, checksums, format versions (issue 9 split)
    ("crdtsync._store_space", 4),  # Store's disk space given back (reclaim, issue 17)
    ("crdtsync._store_read", 4),  # Store's read path: names, stats, metadata, load (split)
    ("crdtsync._store_compact", 4),  # Store's compaction and deletion of shards (split)
    ("crdtsync.durability", 4),
    ("crdtsync._durability_task", 4),  # GroupCommitter's background task (split)
    ("crdtsync.values", 4),
    ("crdtsync._render", 4),  # total, iterative rendering of stored values (issue #11)
    ("crdtsync.views", 4),
    ("crdtsync.changes", 4),
    ("crdtsync.containers", 4),  # named containers and counters (issue 16)
    ("crdtsync.shard", 4),
    ("crdtsync._shard_remote", 4),  # Shard's remote-apply path (split of shard.py)
    ("crdtsync._shard_durable", 4),  # Shard's digest and durable state (split of shard.py)
    ("crdtsync._shard_changes", 4),  # Shard's changes/subscribe/on_change (split of shard.py)
    ("crdtsync._registry", 4),
    ("crdtsync._registry_replicas", 4),  # the registry's ReplicaSet side (split of _registry)
    ("crdtsync.readcache", 4),
    ("crdtsync.jsonform", 4),  # JSON form of shard values (h-http, h-mcp)
    ("crdtsync.security", 4),  # credentials, TLS, handshake, ACLs (h-sec); used by drivers
    # 5: drivers (asyncio, websockets, the simulator) and what they are built from
    ("crdtsync.transport", 5),  # the Transport protocol the agent takes
    ("crdtsync._switchboard", 5),  # one core, two drivers (websockets and a broker)
    ("crdtsync._activity", 5),
    ("crdtsync._extensions", 5),  # the HTTP door and metrics the agent is given (like transport)
    ("crdtsync.reads", 5),
    ("crdtsync.reader", 5),
    ("crdtsync.agent", 5),
    ("crdtsync._agent_figures", 5),  # the agent's read-only figures (HTTP, metrics, inspect)
    ("crdtsync._agent_wiring", 5),  # the agent's start of gossip, hooks, ShardHost (issue 9 split)
    ("crdtsync._agent_reads", 5),  # the agent's read and read_many, ReadMany (split of agent.py)
    ("crdtsync._agent_shards", 5),  # the agent's shard, shard_names, registry (split of agent.py)
    ("crdtsync.transports", 5),
    ("crdtsync.testing", 5),
    ("crdtsync.claims", 5),  # claims and the job queue, over an agent (issue 16)
    ("crdtsync.lifecycle", 5),  # SIGTERM helpers for an agent (issue 16)
    ("crdtsync._hub", 5),  # in-process transport for real agents (crdtsync.testing.LocalHub)
    # 6: composition root, command line and dev tools
    ("crdtsync._compose", 6),  # wires the default transport into the agent
    ("crdtsync", 6),  # the package __init__ only (exact): re-exports, runs the composition root
    ("crdtsync.cli", 6),
    ("crdtsync._cli_options", 6),  # click options shared by the agent and mcp commands
    ("crdtsync.security.cli", 6),  # h-sec's click commands
    ("crdtsync.http", 6),  # HTTP API on top of an agent (h-http)
    ("crdtsync.metrics", 6),  # (h-http)
    ("crdtsync.mcp", 6),  # MCP server (h-mcp)
    ("crdtsync.langgraph", 6),  # LangGraph store (h-mcp)
    # old names of crdtsync.cli.* modules, thin re-exports
    ("crdtsync.demo", 6),
    ("crdtsync.node", 6),
    ("crdtsync.localmesh", 6),
    ("crdtsync.meshview", 6),
    ("crdtsync.bench", 6),
]

#: Edges forbidden even within or below a layer: (importer prefix, imported prefix, why).
FORBIDDEN: list[tuple[str, str, str]] = [
    ("crdtsync.agent", "crdtsync.transports", "the agent takes a transport (Agent(transport=))"),
    (
        "crdtsync._agent_wiring",
        "crdtsync.transports",
        "the agent takes a transport (its wiring too)",
    ),
    ("crdtsync.reads", "crdtsync.agent", "the reader takes Protocols, not the agent"),
    ("crdtsync.shard", "crdtsync.agent", "a shard talks to a ShardHost"),
    ("crdtsync._registry", "crdtsync.agent", "the registry is the agent's part, not its client"),
]

#: Third-party and I/O packages, and the lowest layer that may import each: the wire layer and
#: the core stay free of pycrdt and LMDB, the data layer of sockets, the library of the CLI's.
EXTERNAL_MIN_LAYER: dict[str, int] = {
    "pycrdt": 4,
    "lmdb": 4,
    "asyncio": 4,
    "websockets": 5,
    "aiomqtt": 5,
    "paho": 5,
    "click": 6,
    "rich": 6,
}
#: Packages that only the named modules may import (the codec owns msgpack).
EXTERNAL_ONLY_IN: dict[str, tuple[str, ...]] = {"msgpack": ("crdtsync.wire",)}

#: Packages whose own imports, transitively, must stay free of I/O and clocks.
PURE = "crdtsync.gossip"
FORBIDDEN_IN_PURE = frozenset({"asyncio", "time", "pycrdt", "lmdb", "msgpack", "websockets"})
#: Names of the random module a pure module may use (a seeded instance is passed in).
ALLOWED_RANDOM = frozenset({"Random"})

#: Known exceptions as (importer prefix, imported prefix): edges that break a rule today. The
#: lead empties this list as the gossip/sharding split (issue 9) lands; an entry that no longer
#: occurs fails the test, so remove it then.
KNOWN: dict[tuple[str, str], str] = {
    # Empty: gossip <-> sharding became a ReplicationPolicy owned by gossip (gossip/policy.py),
    # and gossip and sharding parse Yjs bytes with the pycrdt-free crdtsync.yjs.parse/state.
}


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``imported`` at ``line`` of ``path``."""

    importer: str
    imported: str
    path: str
    line: int
    type_only: bool = False  # inside ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} ({self.path}:{self.line})"


@dataclass
class Graph:
    """Modules of one tree, their internal import edges and their external imports."""

    modules: dict[str, Path] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    external: dict[str, list[tuple[str, int]]] = field(
        default_factory=dict
    )  # module -> (top name, line)
    random_calls: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    packages: set[str] = field(default_factory=set)


def _module_names(root: Path) -> dict[str, Path]:
    """Module name -> file, with ``transports/`` mapped onto ``crdtsync.transports``."""
    out: dict[str, Path] = {}
    for folder, prefix in (
        (root / "crdtsync", "crdtsync"),
        (root / "transports", "crdtsync.transports"),
    ):
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def scan(root: Path) -> Graph:
    """Parse every module under ``root`` and record its imports (every one, at any depth)."""
    graph = Graph(modules=_module_names(root))
    graph.packages = {m for m, p in graph.modules.items() if p.name == "__init__.py"}
    for module, path in graph.modules.items():
        tree = ast.parse(path.read_text(), str(path))
        rel = str(path.relative_to(root))
        package = module if module in graph.packages else module.rpartition(".")[0]
        ext = graph.external.setdefault(module, [])
        rnd = graph.random_calls.setdefault(module, [])
        random_aliases: set[str] = set()
        type_only_lines: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                for inner in node.body:
                    type_only_lines.update(range(inner.lineno, (inner.end_lineno or 0) + 1))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    targets.append(alias.name)
                    if alias.name == "random":
                        random_aliases.add(alias.asname or "random")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                if base == "random":
                    rnd.extend(
                        (f"from random import {a.name}", node.lineno)
                        for a in node.names
                        if a.name not in ALLOWED_RANDOM
                    )
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in graph.modules else base)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in random_aliases
                and node.attr not in ALLOWED_RANDOM
            ):
                rnd.append((f"{node.value.id}.{node.attr}", node.lineno))
            for target in targets:
                if target in graph.modules:
                    if target != module:
                        graph.edges.append(
                            Edge(module, target, rel, node.lineno, node.lineno in type_only_lines)
                        )
                elif target.split(".")[0] != "crdtsync":
                    ext.append((target.split(".")[0], node.lineno))
                else:
                    raise AssertionError(
                        f"{rel}:{node.lineno}: {target} is not a module of the tree"
                    )
    return graph


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    """The layer of ``module``: its most specific entry in LAYERS (the root entry
    ``crdtsync`` matches the package ``__init__`` only, so new modules must be classified)."""
    best: tuple[int, int] | None = None
    for prefix, layer in LAYERS:
        matches = module == prefix if prefix == "crdtsync" else _within(module, prefix)
        if matches and (best is None or len(prefix) > best[0]):
            best = (len(prefix), layer)
    return None if best is None else best[1]


def _known(edge: Edge) -> tuple[str, str] | None:
    for a, b in KNOWN:
        if _within(edge.importer, a) and _within(edge.imported, b):
            return (a, b)
    return None


def upward_imports(graph: Graph) -> list[Edge]:
    """Edges from a lower layer to a higher one (known exceptions included)."""
    out = []
    for edge in graph.edges:
        low, high = layer_of(edge.importer), layer_of(edge.imported)
        assert low is not None and high is not None
        if high > low:
            out.append(edge)
    return out


def _sibling_type_reference(edge: Edge) -> bool:
    """A type-only import between two modules of one subpackage (``crdtsync.gossip.acks``
    naming the ``Link`` record of ``crdtsync.gossip.links`` in an annotation). It imports
    nothing at run time and crosses no layer: a component and the record it works on may name
    each other. Across packages, or at run time, every edge counts."""
    if not edge.type_only:
        return False
    a, b = edge.importer.split("."), edge.imported.split(".")
    return len(a) > 2 and len(b) > 2 and a[:2] == b[:2]


def cycles(graph: Graph, *, skip_known: bool = True) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), known edges and
    type-only references between siblings of one subpackage left out."""
    succ: dict[str, set[str]] = {m: set() for m in graph.modules}
    for edge in graph.edges:
        if not (skip_known and _known(edge)) and not _sibling_type_reference(edge):
            succ[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (~50)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph.modules):
        if v not in index:
            visit(v)
    return out


def impurities(graph: Graph) -> list[str]:
    """What the pure core reaches that it must not: forbidden imports and random calls, found
    in gossip's modules and every module they import (not following known edges)."""
    reach = {m for m in graph.modules if _within(m, PURE)}
    todo = list(reach)
    while todo:
        m = todo.pop()
        for edge in graph.edges:
            if edge.importer == m and edge.imported not in reach and not _known(edge):
                reach.add(edge.imported)
                todo.append(edge.imported)
    out = []
    for m in sorted(reach):
        out += [
            f"{m}:{line} imports {name}"
            for name, line in graph.external[m]
            if name in FORBIDDEN_IN_PURE
        ]
        out += [f"{m}:{line} uses {what}" for what, line in graph.random_calls[m]]
    return out


def violations(root: Path) -> list[str]:
    """Everything that breaks a rule in the tree at ``root``, known exceptions excepted."""
    graph = scan(root)
    out = [
        f"{m} has no layer: add it to LAYERS in tests/test_layers.py"
        for m in graph.modules
        if layer_of(m) is None
    ]
    if out:
        return out
    out += [f"upward import {e}" for e in upward_imports(graph) if not _known(e)]
    out += [
        f"forbidden import {e}: {why}"
        for e in graph.edges
        for a, b, why in FORBIDDEN
        if _within(e.importer, a) and _within(e.imported, b)
    ]
    for m, imports in graph.external.items():
        layer = layer_of(m)
        assert layer is not None
        for name, line in imports:
            floor = EXTERNAL_MIN_LAYER.get(name)
            if floor is not None and layer < floor:
                out.append(f"{m}:{line} (layer {layer}) imports {name} (layer {floor} and up)")
            only = EXTERNAL_ONLY_IN.get(name)
            if only is not None and not any(_within(m, o) for o in only):
                out.append(f"{m}:{line} imports {name} (only {', '.join(only)} may)")
    # (Importing the package root from below layer 6 is an upward import: the root is layer 6.)
    out += [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    out += [f"impure core: {x}" for x in impurities(graph)]
    return out


# -- the tests --------------------------------------------------------------------------------


def test_layers_cycles_and_pure_core() -> None:
    assert violations(ROOT) == []


def test_every_known_exception_still_occurs() -> None:
    """An exception that no longer occurs must leave :data:`KNOWN` (the list only shrinks)."""
    graph = scan(ROOT)
    used = {k for e in graph.edges if (k := _known(e)) is not None}
    assert set(KNOWN) - used == set()


def test_known_exceptions_are_what_they_say() -> None:
    """The allow-list is empty now (gossip <-> sharding and the pycrdt reach through
    crdtsync.updates are gone): without it the checker sees no upward edge and no cycle."""
    assert KNOWN == {}
    graph = scan(ROOT)
    assert upward_imports(graph) == []
    assert cycles(graph, skip_known=False) == []


def test_a_type_only_reference_counts_across_packages() -> None:
    """Only a type-only import between siblings of one subpackage is exempt from the cycle
    rule; the same import across packages, or at run time, still closes a cycle."""
    sib = Edge("crdtsync.gossip.acks", "crdtsync.gossip.links", "x.py", 1, type_only=True)
    cross = Edge("crdtsync.sharding", "crdtsync.gossip.core", "x.py", 1, type_only=True)
    runtime = Edge("crdtsync.gossip.acks", "crdtsync.gossip.links", "x.py", 1)
    assert _sibling_type_reference(sib)
    assert not _sibling_type_reference(cross)
    assert not _sibling_type_reference(runtime)


def test_the_scan_sees_lazy_and_type_checking_imports() -> None:
    edges = {(e.importer, e.imported, e.type_only) for e in scan(ROOT).edges}
    # under `if TYPE_CHECKING:` (the Link record named in a component's annotations)
    assert ("crdtsync.gossip.acks", "crdtsync.gossip.links", True) in edges
    edges = {(a, b) for a, b, _ in edges}
    assert ("crdtsync._compose", "crdtsync.transports.websocket") in edges  # inside a function


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for folder in ("crdtsync", "transports"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _plant(path: Path, line: str) -> int:
    """Add ``line`` right after the module's ``from __future__`` import; its line number."""
    text = path.read_text()
    anchor = "from __future__ import annotations\n"
    assert anchor in text
    path.write_text(text.replace(anchor, anchor + line + "\n", 1))
    return text[: text.index(anchor)].count("\n") + 2


def test_a_new_module_must_be_classified(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    (root / "crdtsync" / "newthing.py").write_text('"""New."""\n')
    assert violations(root) == [
        "crdtsync.newthing has no layer: add it to LAYERS in tests/test_layers.py"
    ]


def test_a_planted_upward_import_is_reported(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    assert violations(root) == []
    line = _plant(root / "crdtsync" / "names.py", "from .agent import Agent  # planted")
    found = violations(root)
    assert [v for v in found if v.startswith("upward import")] == [
        f"upward import crdtsync.names -> crdtsync.agent (crdtsync/names.py:{line})"
    ]
    # names is imported by almost everything, so the planted edge also closes cycles, and the
    # pure core now reaches asyncio through names -> agent
    assert all(v.startswith(("upward import", "import cycle", "impure core")) for v in found)
    assert any(v.startswith("import cycle") and "crdtsync.names" in v for v in found)


def test_a_planted_lazy_transport_import_in_the_agent_is_reported(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    agent = root / "crdtsync" / "agent.py"
    agent.write_text(
        agent.read_text() + "\n\ndef _planted() -> None:\n"
        "    from .transports.websocket import WebsocketTransport  # noqa\n"
    )
    found = violations(root)
    assert len(found) == 1
    assert found[0].startswith("forbidden import crdtsync.agent -> crdtsync.transports.websocket")


def test_a_planted_third_party_import_below_its_layer_is_reported(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    line = _plant(root / "crdtsync" / "messages.py", "import pycrdt  # planted")
    # the core imports messages, so it now reaches pycrdt too
    assert violations(root) == [
        f"crdtsync.messages:{line} (layer 1) imports pycrdt (layer 4 and up)",
        f"impure core: crdtsync.messages:{line} imports pycrdt",
    ]


def test_a_planted_lazy_cycle_and_impurity_are_reported(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    # a cycle inside one layer: store (4) lazily importing shard (4), which imports store
    store = root / "crdtsync" / "store.py"
    store.write_text(
        store.read_text() + "\n\ndef _planted() -> None:\n    from . import shard  # noqa\n"
    )
    # the pure core starts using the clock (handles gossip.py and a gossip/ package alike)
    gossip = root / "crdtsync" / "gossip.py"
    if not gossip.exists():
        gossip = root / "crdtsync" / "gossip" / "__init__.py"
    line = _plant(gossip, "import time  # planted")
    found = violations(root)
    assert any(
        v.startswith("import cycle:") and "crdtsync.shard" in v and "crdtsync.store" in v
        for v in found
    )
    assert [v for v in found if v.startswith("impure core")] == [
        f"impure core: crdtsync.gossip:{line} imports time"
    ]


def test_a_planted_module_random_call_is_reported(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    gossip = root / "crdtsync" / "gossip.py"
    if not gossip.exists():
        gossip = root / "crdtsync" / "gossip" / "__init__.py"
    gossip.write_text(gossip.read_text() + "\n\nimport random as _r\n_JITTER = _r.random()\n")
    found = violations(root)
    assert (
        len(found) == 1
        and found[0].startswith("impure core: crdtsync.gossip:")
        and found[0].endswith("uses _r.random")
    )
