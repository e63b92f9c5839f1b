"""The Python package's layering: imports point one way, and no module uses another's privates.

Read from the source with ``ast``: every import between tidelog modules counts, also those
made inside functions or only for type checking (``if TYPE_CHECKING:``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import tidelog

PACKAGE = Path(tidelog.__file__).parent
NATIVE = "tidelog._core"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The tidelog modules that module ``name`` imports, wherever the import is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from tidelog import consumer` imports the submodule, `from tidelog import X`
            # the package.
            candidates = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_imports_between_tidelog_modules_point_one_way() -> None:
    modules = _modules()
    known = {*modules, NATIVE}
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # The package's __init__ re-exports its modules; a module importing `tidelog` itself
    # (for `tidelog.open`) is above all of them, so the package is left out of the graph.
    graph = {n: {t for t in ts if t != "tidelog"} for n, ts in graph.items() if n != "tidelog"}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_no_module_uses_the_private_members_of_another_object() -> None:
    found: list[str] = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")):
                continue
            if node.attr.startswith("__") and node.attr.endswith("__"):
                continue
            owner = ast.unparse(node.value)
            # Its own members, and the native module `tidelog._core` (a module, not a
            # private member of an object).
            if owner in ("self", "cls") or (owner == "tidelog" and node.attr == "_core"):
                continue
            found.append(f"{name}:{node.lineno}: {owner}.{node.attr}")
    assert not found, "private members used from outside their object:\n" + "\n".join(found)
