"""Test session set-up: one headless QgsApplication with a throw-away profile.

The QgsApplication is created at import time, before pytest-qt could create a plain QApplication,
and is never exited: ``exitQgis()`` segfaults at interpreter exit while Python still references
layers (see ENVIRONMENT.md, pitfall 5).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
_PROFILE_DIR = tempfile.mkdtemp(prefix="cwsam-qgis-profile-")
os.environ["QGIS_CUSTOM_CONFIG_PATH"] = _PROFILE_DIR
# rasterio bundles its own PROJ: a PROJ_LIB pointing at Debian's proj.db breaks it.
for _var in ("PROJ_LIB", "PROJ_DATA"):
    os.environ.pop(_var, None)

# The plugin's engine runs in a worker process: by default, this session's own environment (the full
# install's .venv here, the light one in the newest-QGIS chroot).
os.environ.setdefault("CWSAM_ENGINE_ENV", sys.prefix)

from qgis.core import QgsApplication  # noqa: E402
from qgis.PyQt.QtCore import QSettings  # noqa: E402

# QgsSettings here (no organisation name set) would live in ~/.config and outlast the session: a stale
# engine path from an earlier run then fails the next one. They live in the throw-away profile instead.
for _format in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
    QSettings.setPath(_format, QSettings.Scope.UserScope, _PROFILE_DIR)

_QGIS_APP = QgsApplication([], False, _PROFILE_DIR)
_QGIS_APP.setPrefixPath("/usr", True)
_QGIS_APP.initQgis()

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests (full-size backbones)")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def pytest_report_header(config: pytest.Config) -> list[str]:
    from importlib.util import find_spec

    import numpy
    import rasterio
    from qgis.core import Qgis

    torch_version = __import__("torch").__version__ if find_spec("torch") else "absent (light install)"
    return [
        f"QGIS {Qgis.QGIS_VERSION}, torch {torch_version}, numpy {numpy.__version__}, "
        f"rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__}), python {sys.version.split()[0]}",
        f"QGIS profile: {_PROFILE_DIR}",
    ]


@pytest.fixture(scope="session")
def qgis_app() -> QgsApplication:
    """The session's QgsApplication."""
    return _QGIS_APP


@pytest.fixture
def one_torch_thread():
    """One torch thread for a test: on a shared, busy 2-core machine one thread trains the tiny models
    several times faster than two (used by the plugin's training tests)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real SAR data beside the project; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real SAR data not found at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


_EXIT_STATUS = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _EXIT_STATUS
    _EXIT_STATUS = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without Python's interpreter teardown once pytest has reported everything.

    With the QgsApplication never exited (see above), finalisation destroys the remaining Qt and QGIS
    objects (docks, canvases, Processing providers) in an arbitrary order, and that crashed once with
    every test passed (make: Segmentation fault). The exit status stays pytest's own.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS)


@pytest.fixture(scope="session")
def light_engine(tmp_path_factory) -> Path:
    """A real light engine environment (ONNX Runtime, no torch), installed once a session by the Setup tab's
    one-click installer from the package registry (pip's cache makes later sessions fast)."""
    from cwsam_qgis.installer import install, plan_for

    folder = tmp_path_factory.mktemp("light-engine")
    plan = plan_for(folder / "engine", light=True, log_folder=folder / "logs")
    try:
        install(plan, lambda fraction, message: None, lambda: False)
    except Exception as exc:  # noqa: BLE001 - e.g. no registry reachable: say so in the tests that need it
        pytest.skip(f"the light engine could not be installed ({exc}); log: {plan.log}")
    return plan.target
