"""Where the plugin finds torch & co, whether they import, and the exact commands that fix it.

QGIS runs its own Python (on Debian the system one), which has no torch. Two installs are offered: the
light one (requirements-classify.txt, ``make setup-light``: ONNX Runtime, classification with ``.onnx``
exports only, about 300 MB) and the full one (requirements.txt, ``make setup``: PyTorch too, for training,
export and ``.cwsam.pt`` models, about 6 GB). The dependencies live in a separate virtual environment (by default the project's ``.venv`` made by ``make setup``)
whose site-packages folder is added to the import path with ``site.addsitedir``, so the
environment's ``.pth`` files (the editable install of ``cwsam_core``) apply too. Nothing here
imports torch at module import time, and nothing raises: problems are returned as text.
"""

from __future__ import annotations

import importlib
import os
import site
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from . import settings

PLUGIN_DIR = Path(__file__).resolve().parent  # resolved: a development install is a symlink into the checkout
BUNDLED_LIBS = PLUGIN_DIR / "libs"  # the packaged plugin carries cwsam_core here
CHECKOUT = PLUGIN_DIR.parent if (PLUGIN_DIR.parent / "cwsam_core").is_dir() else None
USER_ENV = Path.home() / ".local" / "share" / "cwsam" / "venv"

# Module -> pip requirement. cwsam_core comes with the plugin (bundled) or the checkout (editable install).
REQUIRED: Dict[str, Optional[str]] = {
    "torch": "torch",
    "torchvision": "torchvision",
    "segment_anything": "segment-anything",
    "onnxruntime": "onnxruntime",
    "rasterio": "rasterio",
    "pyogrio": "pyogrio",
    "shapely": "shapely",
    "cwsam_core": None,
}
# What only the full install has: training, export and .cwsam.pt models need them.
FULL_ONLY = ("torch", "torchvision", "segment_anything")
# The light install: classification with ONNX exports.
LIGHT = tuple(name for name in REQUIRED if name not in FULL_ONLY)
LIGHT_SIZE, FULL_SIZE = "about 300 MB", "about 6 GB"


def modules_for_model(model_path: str | Path) -> List[str]:
    """The modules classifying with this model needs: ONNX Runtime for .onnx exports, PyTorch otherwise."""
    if str(model_path).lower().endswith(".onnx"):
        return list(LIGHT)
    return [name for name in REQUIRED if name != "onnxruntime"]


def python_tag() -> str:
    """"3.11": environments must be built for the Python version QGIS runs."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _is_interpreter(path: str) -> bool:
    """True for an executable Python binary; False for wrapper scripts (Debian's ``/usr/bin/qgis``, pyenv
    shims) and for other programs (``qgis.bin``, ``qgis-bin.exe``)."""
    real = os.path.realpath(path) if path else ""
    if not real or not os.path.isfile(real) or not os.access(real, os.X_OK):
        return False
    if not os.path.basename(real).lower().startswith("python"):
        return False
    try:
        with open(real, "rb") as handle:
            return handle.read(2) != b"#!"
    except OSError:
        return False


def interpreter() -> Path:
    """The Python interpreter QGIS runs, as a real file.

    Inside QGIS ``sys.executable`` names QGIS itself (on Debian the shell script ``/usr/bin/qgis``):
    the interpreter of the same version under ``sys.base_prefix`` is the one that builds environments.
    """
    names = ["python.exe"] if os.name == "nt" else [f"python{python_tag()}", "python3"]
    folders = [sys.base_prefix] if os.name == "nt" else [os.path.join(sys.base_prefix, "bin"), "/usr/bin"]
    candidates = [sys.executable, getattr(sys, "_base_executable", "")]
    candidates += [os.path.join(folder, name) for folder in folders for name in names]
    for candidate in candidates:
        if _is_interpreter(candidate):
            return Path(os.path.realpath(candidate))
    return Path(sys.executable)


def site_packages(env: Path) -> Path:
    """The site-packages folder of the virtual environment ``env`` for this Python version."""
    if os.name == "nt":
        return env / "Lib" / "site-packages"
    return env / "lib" / f"python{python_tag()}" / "site-packages"


def candidate_environments() -> List[Path]:
    """Default environments, in order: the checkout's ``.venv`` (``make setup``), then the user's one."""
    return ([CHECKOUT / ".venv"] if CHECKOUT else []) + [USER_ENV]


def configured_environment() -> Optional[Path]:
    """The environment from the settings, else the first default built for this Python, else None."""
    chosen = str(settings.value(settings.PYTHON_ENV) or "").strip()
    if chosen:
        return Path(chosen).expanduser()
    for env in candidate_environments():
        if site_packages(env).is_dir():
            return env
    return None


@dataclass
class DependencyReport:
    """The outcome of one check: the environment used, what is missing (module -> error) and notes."""

    environment: Optional[Path]
    missing: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    # A complete light install: the full install's modules that do not import (they are not an error).
    light_only: Dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing to fix: the full install, or a complete light one."""
        return not self.missing

    @property
    def light(self) -> bool:
        return self.ok and bool(self.light_only)

    def summary(self) -> str:
        """One line for the message bar."""
        where = f" (environment {self.environment})" if self.environment else ""
        if self.light:
            return (f"CWSAM light install{where}: classification with ONNX models (.onnx); training, export and "
                    ".cwsam.pt models need the full install with PyTorch (see the Setup tab)")
        if self.ok:
            return "CWSAM: all Python dependencies found" + where
        return (f"CWSAM cannot import {', '.join(self.missing)}: classification and training are unavailable. "
                "See the CWSAM dock's Setup tab or the log for the commands that fix it.")

    def details(self) -> str:
        """What was tried and the commands that fix it, for the log panel and the Setup tab."""
        lines = [f"QGIS Python: {sys.version.split()[0]} ({interpreter()})",
                 f"Python environment: {self.environment or '(none found)'}"]
        lines += self.notes
        if self.light:
            lines.append("Light install: classification with ONNX models (.onnx) works. Not installed: "
                         + ", ".join(self.light_only) + ".")
            lines.append(f"Training, export and .cwsam.pt models need the full install (PyTorch, {FULL_SIZE}):")
            lines += ["  " + c for c in fix_commands(self.environment)]
            return "\n".join(lines)
        if self.ok:
            return "\n".join(lines)
        lines.append("Missing modules:")
        lines += [f"  {name}: {error}" for name, error in self.missing.items()]
        if any(name in self.missing for name in FULL_ONLY):
            lines.append(f"Fix it with the light install (classification with ONNX models, .onnx; {LIGHT_SIZE}):")
            lines += ["  " + c for c in fix_commands(self.environment, light=True)]
            lines.append(f"or the full install (also training, export and .cwsam.pt models; PyTorch, {FULL_SIZE}):")
        else:
            lines.append("Fix it with:")
        lines += ["  " + c for c in fix_commands(self.environment)]
        return "\n".join(lines)


def activate(environment: Optional[Path]) -> List[str]:
    """Put the bundled ``cwsam_core`` and ``environment``'s site-packages on the import path.

    Returns notes about anything that looks wrong (not found, built for another Python version).
    """
    notes: List[str] = []
    if environment is None:
        notes.append("No Python environment found at " + " or ".join(str(e) for e in candidate_environments()))
    else:
        notes += _add_environment(environment)
    if BUNDLED_LIBS.is_dir() and str(BUNDLED_LIBS) not in sys.path:
        sys.path.insert(0, str(BUNDLED_LIBS))  # the engine that came with this plugin wins
    for variable in ("PROJ_LIB", "PROJ_DATA"):
        if os.environ.get(variable):
            notes.append(f"{variable} is set ({os.environ[variable]}): if rasterio reports PROJ errors, unset it")
    return notes


def _add_environment(environment: Path) -> List[str]:
    notes: List[str] = []
    packages = site_packages(environment)
    if not packages.is_dir():
        built = sorted(p.name for p in (environment / "lib").glob("python*")) if (environment / "lib").is_dir() else []
        notes.append(
            f"{environment} has no {packages.relative_to(environment)}"
            + (f": it was built for {', '.join(built)}, QGIS runs Python {python_tag()}" if built else "")
        )
        return notes
    if str(packages) not in sys.path:
        before = set(sys.path)
        site.addsitedir(str(packages))  # also runs its .pth files (the editable cwsam_core)
        # As inside the environment itself: its packages before the system's (torch needs a newer sympy
        # than Debian's, which addsitedir's append would let win).
        added = [p for p in sys.path if p not in before]
        sys.path[:] = added + [p for p in sys.path if p in before]
    return notes


def missing_modules(modules: Optional[List[str]] = None) -> Dict[str, str]:
    """Module name -> one-line import error, for each required module that cannot be imported."""
    missing: Dict[str, str] = {}
    for name in modules if modules is not None else list(REQUIRED):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a broken install (DLL, ABI) counts as missing, never raises
            missing[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return missing


def check(modules: Optional[List[str]] = None) -> DependencyReport:
    """Activate the configured environment and import each required module."""
    environment = configured_environment()
    notes = activate(environment)
    missing = missing_modules(modules)
    if modules is None and missing and all(name in FULL_ONLY for name in missing):
        return DependencyReport(environment, {}, notes, light_only=missing)
    return DependencyReport(environment, missing, notes)


def _keep_qgis_numpy() -> str:
    """A pip requirement that keeps the numpy QGIS runs with (its compiled GDAL, scipy and matplotlib need
    it), or '' where that cannot be told."""
    try:
        import numpy
    except ImportError:
        return ""
    return f' "numpy=={numpy.__version__}"'


def fix_commands(environment: Optional[Path] = None, light: bool = False) -> List[str]:
    """Shell commands that create or complete the environment, for this QGIS's Python version: the full
    install, or with ``light`` the light one (classification with ONNX models)."""
    python = str(interpreter()) if os.name != "nt" else "python"
    if CHECKOUT is not None and (CHECKOUT / "Makefile").is_file():
        commands = [f"cd {CHECKOUT} && make {'setup-light' if light else 'setup'}"]
        target = CHECKOUT / ".venv"
    else:
        target = environment or USER_ENV
        requirements = PLUGIN_DIR / ("requirements-classify.txt" if light else "requirements.txt")
        pip = target / ("Scripts" if os.name == "nt" else "bin") / "python"
        commands = [f"{python} -m venv --system-site-packages {target}",
                    f"{pip} -m pip install -r {requirements}{_keep_qgis_numpy()}"]
    configured = str(settings.value(settings.PYTHON_ENV) or "").strip()
    found_by_default = not configured and target in candidate_environments()
    if not found_by_default and (not configured or Path(configured).expanduser() != target):
        commands.append(f"then set the CWSAM Python environment (dock, Setup tab) to {target}")
    commands.append("and restart QGIS")
    return commands
