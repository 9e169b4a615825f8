"""Check that every dependency of CWSAM imports in this interpreter and print its version.

Run by ``make setup``; exits non-zero naming what failed, so a broken set-up stops there
rather than as a confusing test failure later. ``--light`` (``make setup-light``) checks the light install
of requirements-classify.txt: classification with ONNX models, without PyTorch.
"""

from __future__ import annotations

import importlib
import sys

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
    ("scipy", "__version__", "used by QGIS Processing"),
    ("matplotlib", "__version__", "plots in the plugin"),
    ("qgis.core", None, "PyQGIS"),
    ("PyQt5.QtCore", "PYQT_VERSION_STR", "Qt bindings shared with QGIS"),
    ("tqdm", "__version__", "progress bars of the command line"),
    ("pytest", "__version__", "tests"),
    ("pytestqt", None, "Qt tests"),
]

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
            failed.append(f"{name} ({why}): {type(exc).__name__}: {exc}")
            continue
        version = getattr(module, attr, "?") if attr else "ok"
        if name == "qgis.core":
            version = module.Qgis.QGIS_VERSION
        print(f"  {name:<18} {version}")
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        failed.append("numpy >= 2 in the venv breaks Debian's GDAL/scipy/matplotlib: pin numpy<2")
    print(f"  python             {sys.version.split()[0]} ({sys.executable})")
    if failed:
        print("Environment check FAILED:", *failed, sep="\n  ", file=sys.stderr)
        return 1
    print("Environment check passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
