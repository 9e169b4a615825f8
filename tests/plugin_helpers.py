"""Small real inputs for the plugin tests: SAR GeoTIFFs, label rasters and a vit_nano model file.

Torch-free at import, so that the plugin tests run with the light install (ONNX Runtime, no PyTorch; on the
newest QGIS, `make test-newest-qgis`): there ``plugin_model`` gives the ONNX export of the same vit_nano
model, made beforehand with the full install by tools/make_light_test_models.py.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from cwsam_core.common.card import ClassInfo, ModelCard

CLASSES = [ClassInfo(1, "water", "#1f5fff"), ClassInfo(2, "field", "#2e9e3f"), ClassInfo(5, "urban", "#c73b3b")]
NORMALIZATION = {"mean": [-14.0, -21.0, 7.0], "std": [5.0, 5.0, 3.0]}
CRS = "EPSG:32633"
ORIGIN = (500000.0, 4600000.0)
PIXEL = 10.0


def write_sar(path: Path, height: int = 80, width: int = 96, seed: int = 0, crs: str = CRS,
              origin=ORIGIN, pixel: float = PIXEL) -> Path:
    """A 2-band (VV, VH) dB GeoTIFF with smooth regions plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    vv = -14 + 8 * np.sin(xx / 13.0) * np.cos(yy / 17.0) + rng.normal(0, 1.5, (height, width))
    vh = vv - 7 + rng.normal(0, 1.0, (height, width))
    profile = dict(driver="GTiff", width=width, height=height, count=2, dtype="float32", crs=crs,
                   transform=from_origin(origin[0], origin[1], pixel, pixel))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack([vv, vh]).astype(np.float32))
        dst.set_band_description(1, "VV")
        dst.set_band_description(2, "VH")
    return path


def write_labels(path: Path, image: Path) -> Path:
    """A label raster on ``image``'s grid: class values by VV thresholds (1 dark, 2 middle, 5 bright)."""
    with rasterio.open(image) as src:
        vv = src.read(1)
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform, nodata=0)
    labels = np.where(vv < -18, 1, np.where(vv < -10, 2, 5)).astype(np.uint8)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(labels[None])
    return path


HAVE_TORCH = find_spec("torch") is not None
# The folder of tools/make_light_test_models.py's exports, for the light install.
LIGHT_MODELS_VARIABLE = "CWSAM_LIGHT_TEST_MODELS"
LIGHT_MODEL_NAME = "nano.onnx"
DEMO_ONNX_NAME = "demo.onnx"
DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
DEMO_MODEL = DEMO / "model.cwsam.pt"


def write_model(path: Path, input_size: int = 64, seed: int = 0) -> Path:
    """A randomly initialised vit_nano CWSAM with three classes, saved as a model file."""
    import torch

    from cwsam_core.model.build import build_cwsam
    from cwsam_core.model.model_file import save_model_file

    torch.manual_seed(seed)
    model = build_cwsam("vit_nano", len(CLASSES), input_size=input_size)
    card = ModelCard(backbone="vit_nano", input_size=input_size, classes=list(CLASSES), bands=["VV", "VH"],
                     input_scale="db", normalization=dict(NORMALIZATION))
    return save_model_file(path, model, card)


def plugin_model(folder: Path) -> Path:
    """The model file the plugin tests classify with, in ``folder``: write_model's vit_nano with PyTorch;
    without it (the light install) its ONNX export from $CWSAM_LIGHT_TEST_MODELS, else the test skips."""
    if HAVE_TORCH:
        return write_model(folder / "nano.cwsam.pt")
    return light_test_model(LIGHT_MODEL_NAME, folder)


def demo_onnx_model(folder: Path) -> Path:
    """The ONNX export of the bundled demo model, in ``folder``: exported here with PyTorch, else (the light
    install) copied from $CWSAM_LIGHT_TEST_MODELS, else the test skips."""
    if HAVE_TORCH:
        from cwsam_core.engine.onnx_export import export_onnx

        return export_onnx(DEMO_MODEL, folder / DEMO_ONNX_NAME).path
    return light_test_model(DEMO_ONNX_NAME, folder)


def light_test_model(name: str, folder: Path) -> Path:
    """``name`` from the folder of tools/make_light_test_models.py's exports, copied into ``folder``."""
    exported = Path(os.environ.get(LIGHT_MODELS_VARIABLE, "")) / name
    if not os.environ.get(LIGHT_MODELS_VARIABLE) or not exported.is_file():
        pytest.skip(f"no PyTorch and no ONNX test model {name}: set {LIGHT_MODELS_VARIABLE} to the folder written "
                    "by tools/make_light_test_models.py (make test-newest-qgis does)")
    return Path(shutil.copy(exported, folder / name))


@contextmanager
def cwsam_processing():
    """Processing initialised in this process with the CWSAM provider registered; yields the ``processing``
    module and removes the provider afterwards if it was added here."""
    import sys

    from qgis.core import QgsApplication

    if "/usr/share/qgis/python/plugins" not in sys.path:
        sys.path.append("/usr/share/qgis/python/plugins")
    import processing
    from processing.core.Processing import Processing

    from cwsam_qgis.processing.provider import CwsamProvider

    Processing.initialize()
    registry = QgsApplication.processingRegistry()
    provider = None
    if registry.providerById("cwsam") is None:
        provider = CwsamProvider()
        registry.addProvider(provider)
    try:
        yield processing
    finally:
        if provider is not None:
            registry.removeProvider(provider)


def load_plugin():
    """The plugin loaded through ``classFactory`` into a fresh headless interface, its dock shown, the
    project emptied first. Returns (iface, plugin)."""
    from qgis.core import QgsProject
    from qgis_interface import HeadlessInterface

    import cwsam_qgis

    QgsProject.instance().clear()
    iface = HeadlessInterface()
    plugin = cwsam_qgis.classFactory(iface)
    plugin.initGui()
    wait_for_check(plugin)
    plugin.show_dock(True)
    return iface, plugin


def wait_for_check(plugin, timeout_s: float = 180) -> None:
    """Process QGIS's events until the plugin's load-time engine check (a background task) has reported."""
    import time

    from qgis.core import QgsApplication

    deadline = time.monotonic() + timeout_s
    while plugin.report is None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert plugin.report is not None, f"the plugin's engine check gave no report within {timeout_s} s"
