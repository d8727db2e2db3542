"""The house rules of DESIGN.md §2, checked on the source: layers and rooms import one way, no two
modules import each other, riskfolio has one door.

Imports are read from the syntax tree (every ``import`` statement, including those inside
functions and under ``TYPE_CHECKING``: a cycle that only type checkers see is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

from services import ROOMS

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("services", "capabilities", "patterns", "agents")  # lowest first


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (``from a.b import c`` counts as ``a.b`` and,
    when ``a.b.c`` is a module of ours, as ``a.b.c``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    files = [p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


GRAPH = _graph()


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def _room(module: str) -> int | None:
    """The rank of the services room ``module`` is in; None for ``services`` and its shared modules."""
    parts = module.split(".")
    if parts[0] != "services" or len(parts) < 3:
        return None
    return ROOMS.index(parts[1])


def test_every_services_package_is_a_declared_room() -> None:
    packages = {p.parent.name for p in (ROOT / "services").glob("*/__init__.py")}
    assert packages <= set(ROOMS), f"undeclared rooms: {sorted(packages - set(ROOMS))}"
    for package in packages:
        doc = ast.get_docstring(ast.parse((ROOT / "services" / package / "__init__.py").read_text()))
        assert doc and len(doc) > 80, f"services/{package}/__init__.py needs a docstring of what it owns"


def test_layers_import_downwards_only() -> None:
    upward = [
        f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps if _layer(b) > _layer(a)
    ]
    assert not upward, "a lower layer imports a higher one:\n" + "\n".join(sorted(upward))


def test_rooms_import_downwards_only() -> None:
    upward = []
    for a, deps in GRAPH.items():
        for b in deps:
            ra, rb = _room(a), _room(b)
            if _layer(a) == _layer(b) == 0 and rb is not None and (ra is None or rb > ra):
                upward.append(f"{a} -> {b}")
    # The deprecated ``services.rebalance`` alias is the one shared module allowed to look up.
    upward = [u for u in upward if not u.startswith("services.rebalance ->")]
    assert not upward, "a lower room imports a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    cycles = []
    for a, deps in GRAPH.items():
        for b in deps:
            if a in _reachable(b) and a < b:
                cycles.append(f"{a} <-> {b}")
    assert not cycles, "modules that import each other (directly or through others):\n" + "\n".join(
        sorted(cycles)
    )


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_only_the_adapter_imports_riskfolio() -> None:
    importers = sorted(
        _module_name(p)
        for layer in LAYERS
        for p in (ROOT / layer).rglob("*.py")
        if any(m == "riskfolio" or m.startswith("riskfolio.") for m in _imports(p))
    )
    assert importers == ["services.estimation.riskfolio_adapter"]


def test_services_know_nothing_of_llms_or_protocols() -> None:
    foreign = ("langchain", "langgraph", "mcp", "fastapi", "uvicorn", "starlette")
    offenders = sorted(
        f"{_module_name(p)} imports {m}"
        for p in (ROOT / "services").rglob("*.py")
        for m in _imports(p)
        if m.split(".")[0] in foreign or m.split(".")[0].startswith("langchain")
    )
    assert not offenders, "\n".join(offenders)


def test_the_old_propose_trades_path_still_works_with_a_deprecation_warning() -> None:
    import warnings

    from services.allocation.rebalance import propose_trades

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from services.rebalance import propose_trades as old

    assert old is propose_trades
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "services.allocation.rebalance" in str(caught[0].message)
