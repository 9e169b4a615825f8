"""Check that every dependency of CWSAM imports in this interpreter and print its version.

Run by ``make setup``; exits non-zero naming what is missing, too old or broken, so a broken set-up stops
there rather than as a confusing test failure later. ``--light`` (``make setup-light``) checks the light install
of requirements-classify.txt: classification with ONNX models, without PyTorch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from pathlib import Path

# (import name, how to get the version, why we need it)
CHECKS = [
    ("torch", "__version__", "model and training"),
    ("torchvision", "__version__", "imported by segment_anything"),
    ("numpy", "__version__", "arrays"),
    ("segment_anything", None, "SAM modules reused by the model"),
    ("onnx", "__version__", "cwsam export"),
    ("onnxruntime", "__version__", "classification with ONNX models"),
    ("rasterio", "__version__", "raster I/O"),
    ("affine", "__version__", "geotransforms"),
    ("pyogrio", "__version__", "polygon label files"),
    ("shapely", "__version__", "polygon repair"),
    ("osgeo.gdal_array", None, "Debian's GDAL bindings used by QGIS Processing (breaks with numpy 2)"),
    ("scipy", "__version__", "used by some QGIS Processing algorithms (optional)"),
    ("matplotlib", "__version__", "plots in the plugin"),
    ("qgis.core", None, "PyQGIS"),
    ("qgis.PyQt.QtCore", "PYQT_VERSION_STR", "Qt bindings shared with QGIS"),
    ("tqdm", "__version__", "progress bars of the command line"),
    ("pytest", "__version__", "tests"),
    ("pytestqt", None, "Qt tests"),
]

# The oldest versions the code is tested with (the lower bounds of requirements*.txt), by distribution name.
MINIMUM_VERSIONS = {
    "numpy": "1.24", "onnxruntime": "1.30", "rasterio": "1.4.4", "affine": "2.4", "pyogrio": "0.13",
    "shapely": "2.1", "onnx": "1.23", "ml_dtypes": "0.5.4",
}
DISTRIBUTIONS = {"segment_anything": "segment-anything"}
# Where Debian and Ubuntu keep the system's Python packages (QGIS's compiled modules among them).
SYSTEM_SITE = "/usr/lib/python3/dist-packages"

# Reported when present; their absence fails nothing (Debian sid's python3-qgis does not pull scipy).
OPTIONAL = {"scipy"}

# Not part of the light install.
FULL_ONLY = {"torch", "torchvision", "segment_anything", "onnx", "pytest", "pytestqt"}


def main() -> int:
    light = "--light" in sys.argv[1:]
    failed = []
    for name, attr, why in CHECKS:
        if light and name in FULL_ONLY:
            continue
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # any import-time failure counts
            if name in OPTIONAL and isinstance(exc, ModuleNotFoundError):
                print(f"  {name:<18} absent ({why})")
            else:
                failed.append(f"{name} ({why}): {type(exc).__name__}: {exc}")
            continue
        version = getattr(module, attr, "?") if attr else "ok"
        if name == "qgis.core":
            version = module.Qgis.QGIS_VERSION
        print(f"  {name:<18} {version}")
        too_old = _older_than_minimum(name)
        if too_old:
            failed.append(too_old)
    numpy_problem = _numpy_not_the_systems()
    if numpy_problem:
        failed.append(numpy_problem)
    print(f"  python             {sys.version.split()[0]} ({sys.executable})")
    if failed:
        print("Environment check FAILED:", *failed, sep="\n  ", file=sys.stderr)
        return 1
    print("Environment check passed.")
    return 0


def _version_tuple(text: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _older_than_minimum(name: str) -> str:
    """A line naming ``name`` when its installed version is below the tested minimum, else ''."""
    if name not in MINIMUM_VERSIONS:
        return ""
    try:
        installed = importlib.metadata.version(DISTRIBUTIONS.get(name, name))
    except importlib.metadata.PackageNotFoundError:
        return ""
    if _version_tuple(installed) < _version_tuple(MINIMUM_VERSIONS[name]):
        return (f"{name} {installed} is too old: CWSAM needs {name} >= {MINIMUM_VERSIONS[name]} "
                f"(python -m pip install --upgrade -r requirements.txt)")
    return ""


def _numpy_not_the_systems() -> str:
    """A line when the venv's numpy shadows a system numpy of another major version (QGIS's compiled modules
    need the one they were built with), else ''."""
    import numpy

    system = sorted(Path(SYSTEM_SITE).glob("numpy-*-info"))
    if not system or numpy.__file__.startswith(SYSTEM_SITE):
        return ""
    system_version = system[0].name.split("-")[1]
    if _version_tuple(system_version)[:1] != _version_tuple(numpy.__version__)[:1]:
        return (f"numpy {numpy.__version__} in the venv shadows the system's numpy {system_version}, which QGIS's "
                f"GDAL, scipy and matplotlib are built against: remove it (python -m pip uninstall numpy) and "
                f"reinstall with `make setup`, which keeps the system's numpy")
    return ""


if __name__ == "__main__":
    sys.exit(main())
