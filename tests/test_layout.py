"""The package's layout holds: no import cycle, and each role imports only what it may.

Imports are read from the source (every `import` and `from ... import`, also those
inside functions and under TYPE_CHECKING), not by importing, so a cycle that only
a lazy import would close fails here too. The rules are native_notes/interfaces.md's.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "meshmedia"

# Each role (a subpackage, or a shared module at the top) and the meshmedia roles it
# may import; SHARED: the shared modules most roles may import.
SHARED = {"errors", "config", "hashing", "bounded", "torrentinfo", "private_files", "store"}
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "private_files": set(),
    "bounded": {"errors"},
    "hashing": {"errors"},
    "hash_child": {"errors", "hashing"},
    "torrentinfo": {"errors", "bounded"},
    "store": {"errors", "private_files"},
    "process": set(),
    "engine": SHARED,
    "manifest": SHARED,
    "jellyfin": SHARED,
    "groups": SHARED,
    "http": SHARED | {"manifest", "groups"},
    "curator": SHARED | {"process", "engine", "manifest", "http", "groups", "hash_child"},
    "client": SHARED | {"process", "engine", "manifest", "http", "jellyfin", "groups"},
    "cli": SHARED
    | {"process", "engine", "manifest", "http", "jellyfin", "curator", "client", "groups"}
    | {"hash_child"},
    "__main__": {"cli"},
}
# Third-party packages that belong to one role each.
# xxhash: whole files are hashed in hashing.py only (the client's verification was a copy).
OWNED = {
    "libtorrent": {"engine", "cli"},
    "watchdog": {"curator"},
    "click": {"cli"},
    "xxhash": {"hashing"},
}


def module_name(path: Path) -> str:
    """`meshmedia.engine.session` for meshmedia/engine/session.py (a package: its name)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> Iterator[str]:
    """Every module `name` imports (meshmedia's resolved to modules, others as given)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            for alias in node.names:  # `from meshmedia.http import routes` imports a module
                if f"{base}.{alias.name}" in MODULES:
                    yield f"{base}.{alias.name}"


def graph() -> dict[str, set[str]]:
    """meshmedia's modules and the meshmedia modules each imports."""
    return {name: {i for i in imports_of(name) if i in MODULES} for name in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for root, first in edges.items():
        if root in index:
            continue
        work = [(root, iter(sorted(first)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges[node]:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in stack:
                low[node] = min(low[node], index[child])
    return found


def role_of(name: str) -> str:
    """`engine` for meshmedia.engine.session, `config` for meshmedia.config."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "meshmedia"


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(edges) == [["a", "b", "c"], ["e"]]


@pytest.mark.parametrize("name", [n for n in MODULES if role_of(n) != "meshmedia"])
def test_each_module_imports_only_the_roles_its_role_may(name: str) -> None:
    role = role_of(name)
    allowed = MAY_IMPORT[role] | {role}
    wrong = sorted(
        i
        for i in imports_of(name)
        if (i.startswith("meshmedia.") and role_of(i) not in allowed)
        or (i.split(".")[0] in OWNED and role not in OWNED[i.split(".")[0]])
    )
    assert wrong == [], f"{name} ({role}) may not import {wrong}"


def test_the_engine_imports_nothing_of_http_cli_watchdog_curator_or_client() -> None:
    banned = ("meshmedia.http", "meshmedia.cli", "watchdog", "click", "meshmedia.curator")
    banned += ("meshmedia.client",)
    engine = [n for n in MODULES if role_of(n) == "engine"]
    assert len(engine) > 5
    wrong = {n: [i for i in imports_of(n) if i.startswith(banned)] for n in engine}
    assert {n: i for n, i in wrong.items() if i} == {}


def test_the_values_the_server_sees_do_not_import_libtorrent() -> None:
    stdlib = {"__future__", "dataclasses", "enum", "typing"}
    assert set(imports_of("meshmedia.engine.snapshots")) <= stdlib


def test_every_role_in_the_rules_exists() -> None:
    assert {role_of(n) for n in MODULES} - {"meshmedia"} <= set(MAY_IMPORT)
    assert set(MAY_IMPORT) <= {role_of(n) for n in MODULES}


def test_every_public_name_of_meshmedia_resolves() -> None:
    """`import meshmedia` names what it did before the layout; the lazy ones load."""
    import meshmedia  # noqa: PLC0415

    before_the_layout = {
        "Config", "ConfigError", "Curator", "Engine", "EngineError", "ManifestError",
        "ManifestStore", "MeshmediaError", "PublishError", "Publisher", "Share", "Store",
        "StoreError", "TorrentState", "__version__", "load_config", "serve", "sync_forever",
        "sync_once",
    }  # fmt: skip
    assert before_the_layout <= set(meshmedia.__all__)
    missing = [name for name in meshmedia.__all__ if getattr(meshmedia, name, None) is None]
    assert missing == []
