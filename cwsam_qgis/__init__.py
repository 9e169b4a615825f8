"""QGIS plugin entry point: QGIS calls ``classFactory`` with its interface.

``cwsam_core`` comes with the plugin: in ``libs/`` of the packaged zip, or beside the plugin in a checkout
(a development install links the plugin folder into it). It is put on the import path here, for the parts
QGIS's process uses (model cards, class lists, paths: no torch, no rasterio), and handed to the engine's
worker process, which runs the rest.
"""

import sys as _sys
from pathlib import Path as _Path

_HERE = _Path(__file__).resolve().parent
ENGINE_SOURCE = (_HERE / "libs") if (_HERE / "libs" / "cwsam_core").is_dir() else (
    _HERE.parent if (_HERE.parent / "cwsam_core").is_dir() else None)
if ENGINE_SOURCE is not None and str(ENGINE_SOURCE) not in _sys.path:
    _sys.path.insert(0, str(ENGINE_SOURCE))  # the engine that came with this plugin wins


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """Return the plugin instance QGIS loads."""
    from .plugin import CwsamPlugin

    return CwsamPlugin(iface)
