"""The ``cwsam`` console script installed into the venv tells the truth about itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cwsam_core

CWSAM = Path(sys.executable).with_name("cwsam")


def run_cwsam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CWSAM), *args], capture_output=True, text=True, timeout=120)


def test_console_script_version():
    assert CWSAM.is_file(), "make setup installs the project in editable mode with its console script"
    result = run_cwsam("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"cwsam {cwsam_core.__version__}"


def test_console_script_help():
    result = run_cwsam("--help")
    assert result.returncode == 0
    assert "usage: cwsam" in result.stdout
    assert "ClassWise-SAM-Adapter" in result.stdout
