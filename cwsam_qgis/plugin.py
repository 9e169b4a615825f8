"""The plugin class: thin, it only wires actions into the QGIS interface."""

from __future__ import annotations

import importlib
from pathlib import Path

from qgis.core import Qgis, QgsMessageLog
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

PLUGIN_NAME = "CWSAM"
LOG_TAG = "CWSAM"
ICON_PATH = Path(__file__).resolve().parent.parent / "resources" / "icon.svg"
REQUIRED_MODULES = ("torch", "segment_anything", "rasterio", "cwsam_core")


def missing_dependencies() -> list[str]:
    """Names of the Python modules the plugin needs that cannot be imported here."""
    missing = []
    for name in REQUIRED_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # a broken install counts as missing
            missing.append(name)
    return missing


class CwsamPlugin:
    """Registers the CWSAM actions in the Raster menu and the toolbar."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: list[QAction] = []

    def initGui(self) -> None:  # noqa: N802 (QGIS's name)
        about = QAction(QIcon(str(ICON_PATH)), "About CWSAM / check dependencies", self.iface.mainWindow())
        about.triggered.connect(self.show_status)
        self.iface.addPluginToRasterMenu(PLUGIN_NAME, about)
        self.actions.append(about)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(PLUGIN_NAME, action)
            action.deleteLater()
        self.actions.clear()

    def show_status(self) -> str:
        """Tell the user whether the Python dependencies are importable; returns the message."""
        missing = missing_dependencies()
        if missing:
            message = f"CWSAM cannot find: {', '.join(missing)}. See the README, section 'Installing the plugin'."
            level = Qgis.Warning
        else:
            import cwsam_core

            message = f"CWSAM {cwsam_core.__version__}: all dependencies found."
            level = Qgis.Info
        QgsMessageLog.logMessage(message, LOG_TAG, level)
        self.iface.messageBar().pushMessage(PLUGIN_NAME, message, level=level)
        return message
