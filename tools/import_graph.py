"""The import graph of a package, function-level imports included, and its import cycles.

Run: ``.venv/bin/python tools/import_graph.py [PACKAGE_DIR]`` (default ``cwsam_core``): prints the number of
import cycles (strongly connected groups of modules) and each cycle, the number of function-level imports,
and with ``-v`` every module's imports. tests/test_layers.py asserts that cwsam_core has no cycle.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

Graph = Dict[str, Set[str]]


def module_files(package: Path) -> Dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a folder with ``__init__.py``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, known: Dict[str, Path]) -> List[str]:
    """The modules of the package that one import statement names."""
    root = module.split(".")[0]
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            here = module.split(".") if is_package else module.split(".")[:-1]
            base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{alias.name}" for alias in node.names] + [base]
    else:
        return []
    found = []
    for name in names:
        if not (name == root or name.startswith(root + ".")):
            continue
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module:
            found.append(name)
    return found


def import_graph(package: Path) -> Tuple[Graph, Graph]:
    """(module-level imports, function-level imports) between the modules of ``package``."""
    known = module_files(package)
    top: Graph = defaultdict(set)
    inner: Graph = defaultdict(set)

    def visit(node: ast.AST, module: str, is_package: bool, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for target in _imported(child, module, is_package, known):
                (inner if in_function else top)[module].add(target)
            visit(child, module, is_package, nested)

    for module, path in known.items():
        top.setdefault(module, set())
        visit(ast.parse(path.read_text(encoding="utf-8")), module, path.name == "__init__.py", False)
    return dict(top), {m: targets - top.get(m, set()) for m, targets in inner.items()}


def import_cycles(graph: Graph) -> List[List[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return groups


def main(argv: List[str]) -> int:
    verbose = "-v" in argv
    folders = [a for a in argv if a != "-v"]
    package = Path(folders[0] if folders else Path(__file__).resolve().parents[1] / "cwsam_core")
    top, inner = import_graph(package)
    both = {m: top.get(m, set()) | inner.get(m, set()) for m in set(top) | set(inner)}
    cycles = import_cycles(both)
    print(f"{len(top)} modules, {sum(map(len, top.values()))} module-level and "
          f"{sum(map(len, inner.values()))} function-level imports between them")
    print(f"import cycles (function-level imports included): {len(cycles)}")
    for cycle in cycles:
        print("  " + " <-> ".join(cycle))
    if verbose:
        for module in sorted(both):
            print(f"{module} -> {', '.join(sorted(top.get(module, ())))}"
                  + (f"  (in functions: {', '.join(sorted(inner[module]))})" if inner.get(module) else ""))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
