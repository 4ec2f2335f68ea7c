"""The layout stays readable: short files, no import cycles, imports at the top (ARCHITECTURE.md).

An import of the package inside a function usually hides a cycle or a concept in the wrong home; the
few that remain defer an optional extra (fastapi, a remote client) or a heavy import off a fast path.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mmcascade"
MAX_LINES = 700
MAX_FUNCTION_LEVEL_IMPORTS = 10  # 77 before the layout of ARCHITECTURE.md; the issue allowed 30


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> list[str]:
    """The ``mmcascade`` modules an import statement names (``from a import b`` names ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = name.split(".") if is_package else name.split(".")[:-1]
        if node.level:
            base = base[: len(base) - node.level + 1]
            module = ".".join([*base, node.module] if node.module else base)
        else:
            module = node.module or ""
        targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return [target for target in targets if target == "mmcascade" or target.startswith("mmcascade.")]


def scan() -> tuple[dict[str, set[str]], list[str]]:
    """Module-level import graph inside the package, and the function-level imports of the package."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    in_functions: list[str] = []
    for name, path in modules.items():
        edges: set[str] = set()

        def walk(node: ast.AST, in_function: bool, name: str = name, path: Path = path, edges: set = edges) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    walk(child, True)
                elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue  # annotations only: never executed
                elif isinstance(child, (ast.Import, ast.ImportFrom)):
                    targets = imported_modules(child, name, path.name == "__init__.py")
                    if targets and in_function:
                        in_functions.append(f"{path.relative_to(PACKAGE)}:{child.lineno} {targets[0]}")
                    elif not in_function:
                        edges.update(target for target in targets if target in modules and target != name)
                else:
                    walk(child, in_function)

        walk(ast.parse(path.read_text()), False)
        graph[name] = edges
    return graph, in_functions


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_source_file_is_over_700_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_module_level_import_cycle() -> None:
    graph, _ = scan()
    assert "mmcascade.search.index" in graph["mmcascade.search"]  # the scan sees package imports
    assert cycles(graph) == []


def test_the_package_is_imported_at_module_level() -> None:
    _, in_functions = scan()
    assert len(in_functions) <= MAX_FUNCTION_LEVEL_IMPORTS, "\n".join(in_functions)
