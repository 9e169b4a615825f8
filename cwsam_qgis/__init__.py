"""QGIS plugin entry point: QGIS calls ``classFactory`` with its interface."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """Return the plugin instance QGIS loads."""
    from .plugin import CwsamPlugin

    return CwsamPlugin(iface)
