"""tools/check_env.py: it passes on this set-up and says clearly what is too old or shadows the system's numpy."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import check_env  # noqa: E402

sys.path.remove(str(REPO / "tools"))


def test_this_environment_passes():
    run = subprocess.run([sys.executable, str(REPO / "tools" / "check_env.py")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Environment check passed." in run.stdout and "qgis.core" in run.stdout


def test_a_package_older_than_the_tested_minimum_is_named(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(check_env.importlib.metadata, "version",
                        lambda name: "1.3.9" if name == "rasterio" else real(name))
    message = check_env._older_than_minimum("rasterio")
    assert message.startswith("rasterio 1.3.9 is too old: CWSAM needs rasterio >= 1.4.4")
    assert check_env._older_than_minimum("shapely") == ""  # the installed one is recent enough
    assert check_env._older_than_minimum("qgis.core") == ""  # not a pip package: not versioned here


def test_a_venv_numpy_of_another_major_version_than_the_systems_is_named(monkeypatch, tmp_path):
    import numpy

    system = tmp_path / "dist-packages"
    (system / f"numpy-{int(numpy.__version__.split('.')[0]) + 1}.0.0.egg-info").mkdir(parents=True)
    monkeypatch.setattr(check_env, "SYSTEM_SITE", str(system))
    message = check_env._numpy_not_the_systems()
    assert f"numpy {numpy.__version__} in the venv shadows the system's numpy" in message
    assert "make setup" in message
    (system / f"numpy-{int(numpy.__version__.split('.')[0]) + 1}.0.0.egg-info").rmdir()
    (system / f"numpy-{numpy.__version__}.dist-info").mkdir()
    assert check_env._numpy_not_the_systems() == ""
