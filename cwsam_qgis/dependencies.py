"""Where the engine runs, whether it works there, and how to install it.

The engine (torch, ONNX Runtime, rasterio and the parts of ``cwsam_core`` that use them) never runs in QGIS's
own process: it runs in a worker process (``worker_client``) started with the Python of an *engine
environment*, a virtual environment or conda environment of its own, built for any Python version. Two
installs are offered: the light one (requirements-classify.txt: ONNX Runtime, classification with ``.onnx``
exports, about 300 MB) and the full one (requirements.txt: PyTorch too, for training and ``.cwsam.pt``
models, about 6 GB). The Setup tab installs either with one click (``installer``); ``cwsam_core`` itself comes
with the plugin (its ``libs`` folder, or the checkout of a development install) and is handed to the worker.

QGIS's process imports only the torch-free, rasterio-free parts of ``cwsam_core`` (model cards, class lists,
paths). Nothing here raises: problems are returned as text.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from . import ENGINE_SOURCE, settings
from .worker_client import Engine, WorkerError, environment_python, run_job

PLUGIN_DIR = Path(__file__).resolve().parent  # resolved: a development install is a symlink into the checkout
CHECKOUT = PLUGIN_DIR.parent if (PLUGIN_DIR.parent / "cwsam_core").is_dir() else None
USER_ENV = Path.home() / ".local" / "share" / "cwsam" / "venv"  # where earlier versions told users to build it

# The modules the engine imports. cwsam_core comes with the plugin (bundled) or the checkout.
REQUIRED = ("torch", "torchvision", "segment_anything", "onnxruntime", "rasterio", "pyogrio", "shapely", "numpy",
            "cwsam_core")
# What only the full install has: training and .cwsam.pt models need them.
FULL_ONLY = ("torch", "torchvision", "segment_anything")
LIGHT = tuple(name for name in REQUIRED if name not in FULL_ONLY)
LIGHT_SIZE, FULL_SIZE = "about 300 MB", "about 6 GB"


def modules_for_model(model_path: str | Path) -> List[str]:
    """The modules classifying with this model needs: ONNX Runtime for .onnx exports, PyTorch otherwise."""
    if str(model_path).lower().endswith(".onnx"):
        return list(LIGHT)
    return [name for name in REQUIRED if name != "onnxruntime"]


def python_tag() -> str:
    """"3.11": the Python QGIS runs (the engine environment may have another)."""
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
    """A Python interpreter that can build engine environments: QGIS's own, as a real file.

    Inside QGIS ``sys.executable`` names QGIS itself (on Debian the shell script ``/usr/bin/qgis``, on Windows
    ``qgis-bin.exe``, on macOS ``QGIS.app/Contents/MacOS/QGIS``): the interpreter of the same version is
    looked for under ``sys.base_prefix`` (OSGeo4W: ``apps/Python3*/python.exe``; macOS: ``Contents/MacOS/bin``).
    """
    names = ["python.exe", "python3.exe"] if os.name == "nt" else [f"python{python_tag()}", "python3"]
    folders = ([sys.base_prefix, os.path.join(sys.base_prefix, "Scripts")] if os.name == "nt"
               else [os.path.join(sys.base_prefix, "bin"), "/usr/bin"])
    candidates = [sys.executable, getattr(sys, "_base_executable", "")]
    candidates += [os.path.join(folder, name) for folder in folders for name in names]
    for candidate in candidates:
        if _is_interpreter(candidate):
            return Path(os.path.realpath(candidate))
    return Path(sys.executable)


def profile_environment() -> Path:
    """The one-click install's default folder: ``cwsam/engine`` in the QGIS profile folder."""
    try:
        from qgis.core import QgsApplication

        base = Path(QgsApplication.qgisSettingsDirPath())
    except Exception:  # noqa: BLE001 - outside QGIS
        base = USER_ENV.parent
    return base / "cwsam" / "engine"


ENGINE_VARIABLE = "CWSAM_ENGINE_ENV"  # an environment chosen for every profile (deployments, the tests)


def candidate_environments() -> List[Path]:
    """Default environments, in order: $CWSAM_ENGINE_ENV, the checkout's ``.venv`` (``make setup``), the
    one-click install's folder, then the folder earlier versions suggested."""
    chosen = [Path(os.environ[ENGINE_VARIABLE])] if os.environ.get(ENGINE_VARIABLE) else []
    return chosen + ([CHECKOUT / ".venv"] if CHECKOUT else []) + [profile_environment(), USER_ENV]


def configured_environment() -> Optional[Path]:
    """The environment from the settings, else the first default that has a Python, else None."""
    chosen = str(settings.value(settings.PYTHON_ENV) or "").strip()
    if chosen:
        return Path(chosen).expanduser()
    for env in candidate_environments():
        if environment_python(env) is not None:
            return env
    return None


def engine_for(environment: Optional[Path]) -> Engine:
    """The worker's Python and ``cwsam_core``'s folder for ``environment``; ``WorkerError`` naming what is wrong."""
    if environment is None:
        raise WorkerError("no engine environment found (looked in "
                          + ", ".join(str(e) for e in candidate_environments())
                          + "): install the engine in the CWSAM dock's Setup tab")
    python = environment_python(environment)
    if python is None:
        raise WorkerError(f"{environment} has no Python interpreter (bin/python3, or Scripts\\python.exe on "
                          "Windows): choose an environment folder, or install the engine there from the Setup tab")
    return Engine(python, ENGINE_SOURCE, Path(profile_environment()).parent / "logs")


def engine() -> Engine:
    """The engine of the configured environment (see :func:`engine_for`)."""
    return engine_for(configured_environment())


@dataclass
class DependencyReport:
    """The outcome of one check: the environment used, what is missing (module -> error) and notes."""

    environment: Optional[Path]
    missing: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    # A complete light install: the full install's modules that do not import (they are not an error).
    light_only: Dict[str, str] = field(default_factory=dict)
    versions: Dict[str, str] = field(default_factory=dict)
    python: str = ""  # the engine's Python: "3.12.3 (/path/bin/python3)"
    device_line: str = ""
    onnx_line: str = ""

    @property
    def ok(self) -> bool:
        """Nothing to fix: the full install, or a complete light one."""
        return not self.missing

    @property
    def light(self) -> bool:
        return self.ok and bool(self.light_only)

    def summary(self, in_setup_tab: bool = False) -> str:
        """One line for the message bar, or with ``in_setup_tab`` for the Setup tab itself (whose install
        buttons are below the line, not elsewhere)."""
        where = f" (environment {self.environment})" if self.environment else ""
        if self.light:
            return (f"CWSAM light install{where}: classification with ONNX models (.onnx); training and .cwsam.pt "
                    "models need the full install with PyTorch ("
                    + ("\"Full engine\" below)" if in_setup_tab else "see the Setup tab)"))
        if self.ok:
            return "CWSAM: all Python dependencies found" + where
        return (f"CWSAM cannot import {', '.join(self.missing)}: classification and training are unavailable. "
                + ("Install the engine below." if in_setup_tab
                   else "Install the engine in the CWSAM dock's Setup tab."))

    def details(self) -> str:
        """What was tried and what fixes it, for the log panel and the Setup tab."""
        lines = [f"QGIS Python: {sys.version.split()[0]} ({interpreter()})",
                 f"Engine environment: {self.environment or '(none found)'}"]
        if self.python:
            lines.append(f"Engine Python: {self.python} (the engine runs in its own process)")
        lines += self.notes
        if self.versions:
            lines.append("Found: " + ", ".join(f"{k} {v}".strip() for k, v in self.versions.items()))
        if self.light:
            lines.append("Light install: classification with ONNX models (.onnx) works. Not installed: "
                         + ", ".join(self.light_only) + ".")
            lines.append(f"Training and .cwsam.pt models need the full install (PyTorch, {FULL_SIZE}): click "
                         "\"Full engine\" above, or run:")
            lines += ["  " + c for c in fix_commands(self.environment)]
            return "\n".join(lines)
        if self.ok:
            return "\n".join(lines)
        lines.append("Missing modules:")
        lines += [f"  {name}: {error}" for name, error in self.missing.items()]
        lines.append("Click \"Light engine\" or \"Full engine\" under \"Install the engine\" above, or in a "
                     f"terminal run the light install (classification with ONNX models, {LIGHT_SIZE}):")
        lines += ["  " + c for c in fix_commands(self.environment, light=True)]
        lines.append(f"or the full install (also training and .cwsam.pt models; PyTorch, {FULL_SIZE}):")
        lines += ["  " + c for c in fix_commands(self.environment)]
        return "\n".join(lines)


_LAST: Dict[str, DependencyReport] = {}
_IN_FLIGHT: List[str] = []  # environments a check is running for (e.g. the plugin's, in a background task)
_LAST_LOCK = threading.Lock()


def check(modules: Optional[List[str]] = None, device: str = "auto") -> DependencyReport:
    """Ask a worker of the configured environment which engine modules import there (never in QGIS's process).

    The report is kept (:func:`last_report`) for the tabs' quick checks before a run.
    """
    environment = configured_environment()
    wanted = list(modules) if modules is not None else list(REQUIRED)
    with _LAST_LOCK:
        _IN_FLIGHT.append(str(environment))
    try:
        answer = run_job(engine_for(environment), "check", {"modules": wanted, "device": device})
    except WorkerError as exc:
        report = DependencyReport(environment, {name: str(exc) for name in wanted}, [str(exc)])
    else:
        missing = dict(answer["missing"])
        report = DependencyReport(environment, missing, versions=dict(answer["versions"]),
                                  python=f"{answer['python']} ({answer['executable']})",
                                  device_line=answer.get("device") or "", onnx_line=answer.get("onnx") or "")
        if modules is None and missing and all(name in FULL_ONLY for name in missing):
            report.missing, report.light_only = {}, missing
    finally:
        with _LAST_LOCK:
            _IN_FLIGHT.remove(str(environment))
    if modules is None:
        with _LAST_LOCK:
            _LAST[str(environment)] = report
    return report


def last_report() -> Optional[DependencyReport]:
    """The newest full check's report of the configured environment, or None before its first."""
    with _LAST_LOCK:
        return _LAST.get(str(configured_environment()))


def missing_modules(modules: List[str]) -> Dict[str, str]:
    """Module name -> error for each of ``modules`` that the newest check found missing (a check is run the first
    time; none while one is running, so QGIS never waits for it). The engine's process says the rest when it runs."""
    report = last_report()
    if report is None:
        with _LAST_LOCK:
            running = str(configured_environment()) in _IN_FLIGHT
        if running:
            return {}
        report = check()
    absent = {**report.missing, **report.light_only}
    return {name: absent[name] for name in modules if name in absent}


def fix_commands(environment: Optional[Path] = None, light: bool = False) -> List[str]:
    """Shell commands that create or complete an engine environment: the full install, or with ``light`` the
    light one (classification with ONNX models). Any Python 3.10+ will do: the engine runs in its own process."""
    python = str(interpreter()) if os.name != "nt" else "python"
    if CHECKOUT is not None and (CHECKOUT / "Makefile").is_file():
        commands = [f"cd {CHECKOUT} && make {'setup-light' if light else 'setup'}"]
        target = CHECKOUT / ".venv"
    else:
        target = environment or profile_environment()
        requirements = PLUGIN_DIR / ("requirements-classify.txt" if light else "requirements.txt")
        pip = target / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        commands = [f"{python} -m venv {target}", f"{pip} -m pip install -r {requirements}"]
    configured = str(settings.value(settings.PYTHON_ENV) or "").strip()
    found_by_default = not configured and target in candidate_environments()
    if not found_by_default and (not configured or Path(configured).expanduser() != target):
        commands.append(f"then set the CWSAM engine environment (dock, Setup tab) to {target}")
    commands.append("then click \"Check again\" in the Setup tab")
    return commands
