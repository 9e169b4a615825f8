"""CWSAM core: ClassWise-SAM-Adapter for SAR semantic segmentation.

A plain Python library (torch, segment-anything, rasterio, numpy). It never imports Qt or QGIS,
so the QGIS plugin, the Processing algorithms and the ``cwsam`` command line share one engine.
"""

__version__ = "0.1.0"
