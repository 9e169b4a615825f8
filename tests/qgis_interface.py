"""A small QgisInterface for headless tests, built from real Qt/QGIS widgets.

QGIS's own interface exists only inside the desktop application; the plugin uses a handful of its
methods, which are provided here by a real main window, real menus and a real message bar.
"""

from __future__ import annotations

from qgis.core import QgsProject
from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapCanvas, QgsMessageBar
from qgis.PyQt.QtWidgets import QMainWindow, QMenu, QToolBar


class HeadlessInterface:
    def __init__(self) -> None:
        self._main_window = QMainWindow()
        self._message_bar = QgsMessageBar(self._main_window)
        self.raster_menus: dict[str, QMenu] = {}
        self.toolbar = QToolBar("Plugins", self._main_window)
        self.dock_widgets: list = []
        # A real canvas that follows the project's layer tree, as in the desktop application.
        self._canvas = QgsMapCanvas(self._main_window)
        self._canvas.resize(600, 400)
        self._bridge = QgsLayerTreeMapCanvasBridge(QgsProject.instance().layerTreeRoot(), self._canvas)

    def mainWindow(self) -> QMainWindow:  # noqa: N802
        return self._main_window

    def messageBar(self) -> QgsMessageBar:  # noqa: N802
        return self._message_bar

    def addPluginToRasterMenu(self, name: str, action) -> None:  # noqa: N802
        self.raster_menus.setdefault(name, QMenu(name, self._main_window)).addAction(action)

    def removePluginRasterMenu(self, name: str, action) -> None:  # noqa: N802
        menu = self.raster_menus.get(name)
        if menu is not None:
            menu.removeAction(action)
            if not menu.actions():
                del self.raster_menus[name]

    def addToolBarIcon(self, action) -> None:  # noqa: N802
        self.toolbar.addAction(action)

    def removeToolBarIcon(self, action) -> None:  # noqa: N802
        self.toolbar.removeAction(action)

    def mapCanvas(self) -> QgsMapCanvas:  # noqa: N802
        return self._canvas

    def addDockWidget(self, area, dock) -> None:  # noqa: N802
        self._main_window.addDockWidget(area, dock)
        self.dock_widgets.append(dock)

    def removeDockWidget(self, dock) -> None:  # noqa: N802
        self._main_window.removeDockWidget(dock)
        if dock in self.dock_widgets:
            self.dock_widgets.remove(dock)
