"""cwsam_core's shape: its parts import only downwards (import-linter's contracts in pyproject.toml), no import
cycle even through function-level imports, the light parts never import torch, every error on one base."""

from __future__ import annotations

import ast
import inspect
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "cwsam_core"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
sys.path.insert(0, str(REPO / "tools"))
import import_graph  # noqa: E402

sys.path.remove(str(REPO / "tools"))

CONTRACTS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
LIGHT = next(c for c in CONTRACTS if c["name"] == "the light install's parts never import PyTorch")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_contracts_are_kept():
    run = lint_imports(REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 3 kept, 0 broken." in run.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("common/card.py", "from ..training import metrics  # an upward import", "cwsam_core's parts import only downwards"),
    ("raster/windows.py", "import torch  # torch in a light part", "the light install's parts never import PyTorch"),
    ("vector/polygons.py", "from qgis.core import QgsProject  # QGIS in the core", "cwsam_core never imports Qt or QGIS"),
])
def test_a_contract_broken_on_purpose_fails(tmp_path, module, line, broken):
    shutil.copytree(CORE, tmp_path / "cwsam_core", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "cwsam_core" / module
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    path.write_text(text.replace(marker, marker + "\n" + line + "\n", 1))
    run = lint_imports(tmp_path)
    assert run.returncode == 1, run.stdout
    assert f"{broken} BROKEN" in run.stdout and "Contracts: 2 kept, 1 broken." in run.stdout


def test_no_import_cycle_even_through_function_level_imports():
    top, inner = import_graph.import_graph(CORE)
    both = {m: top.get(m, set()) | inner.get(m, set()) for m in set(top) | set(inner)}
    assert import_graph.import_cycles(both) == []
    assert any(inner.values())  # the few lazy imports are seen, so they would count in a cycle


def _imports_inside(tree: ast.AST, target: str, module: str):
    """(line, in a function) of each import of ``target`` (a cwsam_core module or a top-level package)."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    package = module.split(".")[:-1]
                    base = ".".join(package[:len(package) - child.level + 1] + [child.module or ""]).rstrip(".")
                else:
                    base = child.module or ""
                if base == target or base.startswith(target + "."):
                    found.append((child.lineno, in_function))
            elif isinstance(child, ast.Import):
                if any(a.name == target or a.name.startswith(target + ".") for a in child.names):
                    found.append((child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


@pytest.mark.parametrize("ignored", LIGHT["ignore_imports"])
def test_each_lazy_import_the_contract_allows_sits_in_a_function_and_says_why(ignored):
    importer, target = (part.strip() for part in ignored.split("->"))
    path = CORE.parent / (importer.replace(".", "/") + ".py")
    text = path.read_text()
    lines = text.splitlines()
    found = _imports_inside(ast.parse(text), target, importer)
    assert found, f"{importer} does not import {target}: remove it from ignore_imports"
    for line, in_function in found:
        assert in_function, f"{importer}:{line} imports {target} at module level"
        said = " ".join(lines[max(0, line - 3):line])  # the import, or the comment over its group
        assert "# torch" in said or "# " in said and "torch" in said, f"{importer}:{line}: say why it is lazy"


def test_importing_the_light_parts_does_not_import_torch():
    modules = sorted(LIGHT["source_modules"])
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "import pkgutil, cwsam_core\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'segment_anything'))\n"
            "print(len(sys.modules), heavy)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("[]"), run.stdout


def test_every_core_error_has_one_base():
    from cwsam_core import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 15 and all(issubclass(c, errors.CwsamError) for c in classes)
    assert {c.__name__ for c in classes if issubclass(c, errors.Cancelled)} == {
        "Cancelled", "ClassificationCancelled", "VectorizeCancelled", "RetrainCancelled", "ChangeCancelled"}
    # No other module of the core defines an exception class of its own.
    for path in CORE.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                assert not bases & {"Exception", "ValueError", "RuntimeError"}, f"{path}: {node.name}"


def test_the_core_has_few_top_level_modules_and_no_long_module():
    top = sorted(p.name for p in CORE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file())
    assert len([name for name in top if name.endswith(".py")]) <= 8, top
    long = {str(p.relative_to(CORE)): n for p in CORE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 700}
    assert long == {}, long
