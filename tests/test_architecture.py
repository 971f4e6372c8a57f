"""The layer rule and no import circles, read from the source (every import counts, lazy and type-only ones too):
data -> models -> engine -> interfaces / server, imports pointing one way."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cadx"
# A layer may import its own and the ones listed (lower) layers only.
ALLOWED = {
    "data": {"data"},
    "models": {"models"},
    "engine": {"engine", "data", "models"},
    "server": {"server", "engine", "data", "models"},
    "interfaces": {"interfaces", "engine", "data", "models", "server"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The cadx modules ``path`` imports (``from cadx.x import y`` counts as cadx.x.y when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("cadx.") and name != "cadx":
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    modules = set(files)
    edges = {m: imports_of(p, modules) - {m} for m, p in files.items()}
    # A package's __init__ is not an import of its own submodules' users: drop edges into packages that only
    # re-export (cadx.models) when the importer is inside them.
    return {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in edges.items()}


def test_layers_import_downwards_only() -> None:
    wrong = []
    for module, targets in graph().items():
        layer = module.split(".")[1] if module.count(".") else None
        if layer not in ALLOWED:
            continue
        wrong += [f"{module} -> {t}" for t in targets if t.count(".") and t.split(".")[1] not in ALLOWED[layer]]
    assert wrong == []


def test_no_import_circles() -> None:
    edges = graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [node, target]) if target in stack
                              else f"{node} -> {target}")
            elif target not in state:
                visit(target, [*stack, node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert cycles == []
