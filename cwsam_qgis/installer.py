"""The Setup tab's one-click engine install: a virtual environment of its own, and pip.

The engine runs in its own process (``worker_client``), so its environment needs nothing from QGIS: no
``--system-site-packages``, no numpy pinned to QGIS's, any Python 3.10+. ``cwsam_core`` itself is not
installed there: it comes with the plugin and is handed to the worker. Plain Python (no Qt): the
``InstallTask`` runs :func:`install` in its thread.

Interpreters: QGIS's own (``dependencies.interpreter``: Debian ``/usr/bin/python3.X``, OSGeo4W
``apps/Python3*/python.exe``, macOS ``QGIS.app/Contents/MacOS/bin/python3``); on Debian and Ubuntu it needs
the python3-venv package, which the error names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from .worker_client import environment_python

PLUGIN_DIR = Path(__file__).resolve().parent
# PyPI's torch for Linux is a CUDA build (several GB); without an NVIDIA GPU the CPU build is enough. PyPI's torch
# for Windows is a CPU build: with an NVIDIA GPU the CUDA build comes from PyTorch's own index.
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYTORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu126"


class InstallError(Exception):
    """An install that did not finish: the message says why and where the log is."""


@dataclass
class InstallPlan:
    """What one click installs: the folder, light (ONNX Runtime) or full (PyTorch), with which Python."""

    target: Path
    light: bool
    python: Path
    log: Path

    @property
    def requirements(self) -> Path:
        name = "requirements-classify.txt" if self.light else "requirements.txt"
        for folder in (PLUGIN_DIR, PLUGIN_DIR.parent):  # the packaged zip carries them; a checkout has them above
            if (folder / name).is_file():
                return folder / name
        raise InstallError(f"{name} is missing from the plugin: reinstall the plugin")

    def pip_command(self, python: Path) -> List[str]:
        command = [str(python), "-m", "pip", "install", "--progress-bar", "off", "-r", str(self.requirements)]
        if not self.light and sys.platform.startswith("linux") and not has_nvidia_gpu():
            command += ["--extra-index-url", PYTORCH_CPU_INDEX]
        elif not self.light and sys.platform == "win32" and has_nvidia_gpu():
            command += ["--extra-index-url", PYTORCH_CUDA_INDEX]
        return command


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is loaded (Linux) or its tool is on the path: the full install takes PyTorch's CUDA build."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


# Share of the progress bar at each stage of pip's output.
_STAGES = ((re.compile(r"^Collecting |^Requirement already satisfied"), 0.10, 0.55),
           (re.compile(r"^Downloading |^\s+Downloading "), 0.10, 0.55),
           (re.compile(r"^Installing collected packages"), 0.60, 0.60),
           (re.compile(r"^Successfully installed"), 0.95, 0.95))


def install(plan: InstallPlan, progress: Callable[[float, str], None], should_cancel: Callable[[], bool]) -> Path:
    """Create ``plan.target`` (unless it already has a Python) and pip-install the engine into it; returns the
    environment's Python. Cancel stops pip at once; a folder this install created is then removed.
    ``InstallError`` naming what failed and the log."""
    plan.log.parent.mkdir(parents=True, exist_ok=True)
    created = environment_python(plan.target) is None
    if created and plan.target.exists() and any(plan.target.iterdir()):
        raise InstallError(f"{plan.target} is a folder with files but no Python environment: choose an empty or new "
                           "folder for the engine")
    with open(plan.log, "w", encoding="utf-8") as log:
        try:
            if created:
                progress(0.02, f"creating the environment {plan.target}")
                _run([str(plan.python), "-m", "venv", str(plan.target)], log, should_cancel, lambda line: None)
            python = environment_python(plan.target)
            if python is None:
                raise InstallError(f"{plan.python} -m venv made no Python in {plan.target}")
            collected = [0]

            def follow(line: str) -> None:
                for pattern, low, high in _STAGES:
                    if pattern.search(line):
                        if low != high:
                            collected[0] += 1
                            fraction = low + (high - low) * (1 - 1 / (1 + collected[0] / 12))
                        else:
                            fraction = low
                        progress(fraction, line.strip()[:120])
                        return

            progress(0.08, "installing the engine's packages with pip")
            _run(plan.pip_command(python), log, should_cancel, follow)
        except BaseException:
            if created:
                shutil.rmtree(plan.target, ignore_errors=True)
            raise
    progress(1.0, "installed")
    return python


def _run(command: List[str], log, should_cancel: Callable[[], bool], follow: Callable[[str], None]) -> None:
    """One step, its output in the log and to ``follow``; killed at once on cancel."""
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    variables = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV")}
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   encoding="utf-8", errors="replace", env=variables, creationflags=flags)
    except OSError as exc:
        raise InstallError(f"cannot run {command[0]} ({exc})") from None
    lines: List[str] = []

    def read() -> None:
        for line in process.stdout:
            log.write(line)
            log.flush()
            lines.append(line)
            follow(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while process.poll() is None:
        if should_cancel():
            process.kill()
            process.wait()
            reader.join(timeout=5)
            raise InstallError("install cancelled: nothing was kept")
        time.sleep(0.1)
    reader.join(timeout=5)
    if process.returncode != 0:
        tail = "".join(lines[-6:]).strip()
        hint = ""
        if "ensurepip" in tail or "python3-venv" in tail:
            hint = " (on Debian and Ubuntu install the python3-venv package: sudo apt install python3-venv)"
        raise InstallError(f"{Path(command[0]).name} {' '.join(command[1:4])} failed with status "
                           f"{process.returncode}{hint}: {tail.splitlines()[-1] if tail else 'no output'}. "
                           f"The whole log: {log.name}")


def default_log(folder: Path, light: bool) -> Path:
    return folder / f"install-{'light' if light else 'full'}-{time.strftime('%Y%m%d-%H%M%S')}.log"


def plan_for(target: Path, light: bool, python: Optional[Path] = None, log_folder: Optional[Path] = None) -> InstallPlan:
    """The plan for one click: QGIS's own Python builds the environment unless another is given."""
    from .dependencies import interpreter, profile_environment

    logs = log_folder or profile_environment().parent / "logs"
    return InstallPlan(Path(target).expanduser(), light, Path(python) if python else interpreter(),
                       default_log(logs, light))
