"""Static check that the plugin's code runs on QGIS 3.22 (Qt5) and QGIS 4 (Qt6) alike.

Run: ``.venv/bin/python tools/check_qt6.py [FOLDER_OR_FILE ...]`` (default ``cwsam_qgis``); exit 1 on findings.
The test suite runs it on ``cwsam_qgis`` (tests/test_qt6_compat.py).

It parses the code with ``ast`` and reports, one line each:

- unscoped enums: ``Qt.Checked``, ``Qgis.Info``, ``QgsTask.CanCancel``... (PyQt6 and QGIS 4 need
  ``Qt.CheckState.Checked``). A name imported from ``qgis.*`` is resolved in the running QGIS/PyQt
  (3.22 with PyQt5 in the tests): an attribute whose value is an enum member reached straight from a class,
  not through its enum, is unscoped. This is the rule of QGIS's own migration script
  (scripts/pyqt5_to_pyqt6/pyqt5_to_pyqt6.py in qgis/QGIS), which rewrites such names to ``Class.Enum.member``;
- Qt5-only names that PyQt6 removed or QGIS 4 no longer offers: ``QVariant`` types (``QVariant.Int``: use
  ``QMetaType``), ``exec_``, ``qApp``, ``QRegExp``, ``QDesktopWidget`` and ``desktop()``, compiled ``resources_rc``, Qt's
  renamed enum members (``Qt.MidButton``...), ``activated[str]``, ``QFontMetrics.width``, imports from
  ``PyQt5``/``PyQt6`` instead of ``qgis.PyQt``, and matplotlib's Qt5-only backends.
"""

from __future__ import annotations

import ast
import enum
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

# Classes PyQt6 (Qt6) removed, with what to use instead.
REMOVED_NAMES = {
    "QRegExp": "QRegularExpression",
    "QDesktopWidget": "QScreen (QGuiApplication.screens())",
    "qApp": "QApplication.instance()",
    "QGLWidget": "QOpenGLWidget",
    "QMatrix": "QTransform",
    "QTextCodec": "Python's str encoding",
    "QStringRef": "str",
    "QSound": "QSoundEffect",
}
# Qt enum members Qt6 renamed (pyqt5_to_pyqt6.py's deprecated_renamed_enums).
RENAMED_MEMBERS = {
    ("Qt", "MidButton"): "Qt.MouseButton.MiddleButton",
    ("Qt", "TextColorRole"): "Qt.ItemDataRole.ForegroundRole",
    ("Qt", "BackgroundColorRole"): "Qt.ItemDataRole.BackgroundRole",
    ("QPainter", "HighQualityAntialiasing"): "QPainter.RenderHint.Antialiasing",
}
QT5_MATPLOTLIB_BACKENDS = {"matplotlib.backends.backend_qt5agg", "matplotlib.backends.backend_qt5",
                           "matplotlib.backends.backend_qt4agg", "matplotlib.backends.backend_qt4"}
# A line that must use a Qt5-only form (only in cwsam_qgis/compat.py, for QGIS 3.22) says why after this.
ALLOW_PRAGMA = "# qt6-compat:"
# Modules whose names are resolved at run time to tell an enum member from anything else.
RESOLVED_PREFIXES = ("qgis.", "PyQt5.", "PyQt6.")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _is_enum_type(value: Any) -> bool:
    """An enum class of sip (PyQt5: metaclass ``sip.enumtype``) or of Python's ``enum`` (PyQt6, scoped C++ enums)."""
    return isinstance(value, type) and (type(value).__name__ == "enumtype" or issubclass(value, enum.Enum))


def _is_enum_member(value: Any) -> bool:
    return not isinstance(value, type) and _is_enum_type(type(value))


def _imported_names(tree: ast.AST) -> Dict[str, Tuple[str, Optional[str]]]:
    """Local name -> (module, attribute) for ``from M import A [as B]``; (module, None) for ``import M``."""
    names: Dict[str, Tuple[str, Optional[str]]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = (alias.name, None)
    return names


class _Resolver:
    """Imports on demand (and caches) the objects that names of qgis.* and PyQt modules stand for."""

    def __init__(self) -> None:
        self._cache: Dict[Tuple[str, Optional[str]], Any] = {}

    def resolve(self, module: str, attribute: Optional[str]) -> Any:
        key = (module, attribute)
        if key not in self._cache:
            try:
                value = importlib.import_module(module)
                if attribute is not None:
                    value = getattr(value, attribute)
            except Exception:  # not importable here (e.g. no QGIS): such names are not checked for enums
                value = None
            self._cache[key] = value
        return self._cache[key]


_RESOLVER = _Resolver()


def _dotted(node: ast.AST) -> Optional[List[str]]:
    """``a.b.c`` as ['a', 'b', 'c'], or None for anything but names and attributes."""
    parts: List[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def check_source(source: str, path: str = "<string>") -> List[Finding]:
    """Every Qt5-only form in ``source``, in line order."""
    tree = ast.parse(source, filename=path)
    imported = _imported_names(tree)
    findings: List[Finding] = []

    def report(node: ast.AST, message: str) -> None:
        findings.append(Finding(path, getattr(node, "lineno", 0), message))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in ("PyQt5", "PyQt6"):
                report(node, f"import from {module}: import Qt through qgis.PyQt ({module.replace(module.split('.')[0], 'qgis.PyQt', 1)})")
            if module in QT5_MATPLOTLIB_BACKENDS:
                report(node, f"{module} is Qt5-only: use matplotlib.backends.backend_qtagg")
            for alias in node.names:
                if alias.name in REMOVED_NAMES:
                    report(node, f"{alias.name} is removed in Qt6: use {REMOVED_NAMES[alias.name]}")
                if alias.name == "resources_rc" or module.endswith("resources_rc"):
                    report(node, "compiled Qt resources (resources_rc) are removed in Qt6: load files by path")
                if module in ("matplotlib.backends",) and alias.name in {m.rsplit(".", 1)[1] for m in QT5_MATPLOTLIB_BACKENDS}:
                    report(node, f"matplotlib.backends.{alias.name} is Qt5-only: use backend_qtagg")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("PyQt5", "PyQt6"):
                    report(node, f"import {alias.name}: import Qt through qgis.PyQt")
                if alias.name in QT5_MATPLOTLIB_BACKENDS:
                    report(node, f"{alias.name} is Qt5-only: use matplotlib.backends.backend_qtagg")
        elif isinstance(node, ast.FunctionDef) and node.name == "exec_":
            report(node, "exec_ is removed in PyQt6: name it exec")
        elif isinstance(node, ast.Name) and node.id in REMOVED_NAMES and isinstance(node.ctx, ast.Load):
            report(node, f"{node.id} is removed in Qt6: use {REMOVED_NAMES[node.id]}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "desktop"
              and not node.args and not node.keywords):
            report(node, "desktop() (QDesktopWidget) is removed in Qt6: use QScreen (QGuiApplication.screens())")
        elif isinstance(node, ast.Subscript):
            target = node.value
            if (isinstance(target, ast.Attribute) and target.attr == "activated"
                    and isinstance(node.slice, ast.Name) and node.slice.id == "str"):
                report(node, "activated[str] is removed in Qt6: use textActivated")
        elif isinstance(node, ast.Attribute):
            _check_attribute(node, imported, report)
    lines = source.splitlines()
    findings = [f for f in findings if not (0 < f.line <= len(lines) and ALLOW_PRAGMA in lines[f.line - 1])]
    findings.sort(key=lambda f: f.line)
    return findings


def _check_attribute(node: ast.Attribute, imported: Dict[str, Tuple[str, Optional[str]]], report) -> None:
    if node.attr == "exec_":
        report(node, "exec_() is removed in PyQt6: call exec()")
        return
    if node.attr == "width" and isinstance(node.value, ast.Call):
        func = node.value.func
        if (isinstance(func, ast.Attribute) and func.attr == "fontMetrics") or (
                isinstance(func, ast.Name) and func.id in ("QFontMetrics", "QFontMetricsF")):
            report(node, "QFontMetrics.width() is removed in Qt6: use horizontalAdvance()")
            return
    parts = _dotted(node)
    if parts is None or parts[0] not in imported:
        return
    owner_name = ".".join(parts[:-1])
    if parts[0] == "QVariant" and len(parts) == 2 and parts[1] not in ("isNull", "isValid"):
        report(node, f"QVariant.{parts[1]}: QVariant types are removed in PyQt6: use QMetaType.Type "
                     "(cwsam_qgis.compat for QgsField types)")
        return
    if len(parts) == 2 and (parts[0], parts[1]) in RENAMED_MEMBERS:
        report(node, f"{owner_name}.{node.attr} is renamed in Qt6: use {RENAMED_MEMBERS[(parts[0], parts[1])]}")
        return
    module, attribute = imported[parts[0]]
    if not (module + ".").startswith(RESOLVED_PREFIXES) and module != "qgis":
        return
    owner = _RESOLVER.resolve(module, attribute)
    for part in parts[1:-1]:
        owner = getattr(owner, part, None)
        if owner is None:
            return
    if not isinstance(owner, type) or _is_enum_type(owner):
        return  # members reached through their enum (Class.Enum.member) are scoped
    try:
        value = getattr(owner, node.attr)
    except Exception:
        return
    if _is_enum_member(value):
        enum_name = type(value).__name__
        report(node, f"unscoped enum {owner_name}.{node.attr}: write {owner_name}.{enum_name}.{node.attr} "
                     "(or its QGIS 4 spelling through cwsam_qgis.compat)")


def iter_python_files(paths: Iterable[Path]) -> Iterable[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        else:
            yield path


def check_paths(paths: Iterable[Path]) -> List[Finding]:
    findings: List[Finding] = []
    for path in iter_python_files(paths):
        findings.extend(check_source(path.read_text(encoding="utf-8"), str(path)))
    return findings


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    repo = Path(__file__).resolve().parents[1]
    findings = check_paths([Path(a) for a in args] or [repo / "cwsam_qgis"])
    for finding in findings:
        print(finding)
    print(f"{len(findings)} Qt5-only form(s) found" if findings else "no Qt5-only forms found")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
