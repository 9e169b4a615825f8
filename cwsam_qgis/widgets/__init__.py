"""Part of the CWSAM QGIS plugin."""
