"""The plugin class: thin, it wires the dock, the menu/toolbar action and the Processing provider
into QGIS. Heavy dependencies are checked at load; when they are missing the plugin still loads
and says what to install."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import List, Optional

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import dependencies, messages

PLUGIN_NAME = "CWSAM"
ICON_PATH = Path(__file__).resolve().parent / "resources" / "icon.svg"  # as metadata.txt says


class CwsamPlugin:
    """A dock (Classify, Fine-tune, Setup) toggled from the Raster menu and the toolbar, plus the
    "cwsam" Processing provider."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: List[QAction] = []
        self.dock = None
        self.provider = None
        self.report: Optional[dependencies.DependencyReport] = None  # None until the load-time check ends
        self.check_task = None

    # --- QGIS hooks ---------------------------------------------------------------------------

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's name; qgis_process calls only this)
        # No check of the engine here: an algorithm that cannot run says why when it runs.
        if self.provider is None:
            from .processing.provider import CwsamProvider

            provider = CwsamProvider()
            # The registry deletes a provider whose id is taken (another copy of the plugin): keep none then.
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider
            else:
                messages.log("a Processing provider 'cwsam' is already registered; this copy adds none",
                             Qgis.MessageLevel.Warning)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        icon = QIcon(str(ICON_PATH))
        main_window = self.iface.mainWindow()
        self.dock_action = QAction(icon, "CWSAM SAR classification", main_window)
        self.dock_action.setCheckable(True)
        self.dock_action.setToolTip("Show the CWSAM dock: classify SAR rasters and fine-tune from polygons")
        self.dock_action.toggled.connect(self.show_dock)
        about = QAction(icon, "About CWSAM / check dependencies", main_window)
        about.triggered.connect(self.show_status)
        for action in (self.dock_action, about):
            self.iface.addPluginToRasterMenu(PLUGIN_NAME, action)
            self.actions.append(action)
        self.iface.addToolBarIcon(self.dock_action)
        if self.report is None:
            self.start_check()

    def start_check(self) -> None:
        """The engine's check in a background task: its worker's imports take seconds, and QGIS stays free
        meanwhile. The worker stays, ready for the first job; the report reaches the dock when it ends."""
        from . import settings
        from .tasks.check_task import CheckTask

        task = CheckTask(settings.value(settings.DEVICE))
        task.report_ready.connect(self._check_finished)
        self.check_task = task
        QgsApplication.taskManager().addTask(task)

    def _check_finished(self, report: dependencies.DependencyReport) -> None:
        self.check_task = None
        if not self.actions:
            return  # unloaded meanwhile
        self.report = report
        if not report.ok:
            messages.warning(self.iface, report.summary(), report.details())
        if self.dock is not None:
            self.dock.set_dependency_report(report)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(PLUGIN_NAME, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions.clear()
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        from .worker_client import POOL

        POOL.shutdown()  # the idle engine workers end with the plugin

    # --- actions ------------------------------------------------------------------------------

    def show_dock(self, visible: bool = True) -> None:
        """Create the dock on first use and show or hide it."""
        if self.dock is None:
            from .dock import CwsamDock

            self.dock = CwsamDock(self.iface, self.report)
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
            self.dock.visibilityChanged.connect(self._sync_action)
        self.dock.setVisible(visible)
        if self.dock_action.isChecked() != visible:
            self.dock_action.setChecked(visible)

    def _sync_action(self, visible: bool) -> None:
        if self.actions and self.dock_action.isChecked() != visible:
            self.dock_action.blockSignals(True)
            self.dock_action.setChecked(visible)
            self.dock_action.blockSignals(False)

    def show_status(self) -> str:
        """Check the dependencies again and tell the user; returns the message."""
        self.report = self._check_dependencies()
        if self.report.ok:
            import cwsam_core

            message = f"CWSAM {cwsam_core.__version__}: all dependencies found."
            messages.notify(self.iface, message, Qgis.MessageLevel.Info, self.report.details())
        else:
            message = self.report.summary()
            messages.warning(self.iface, message, self.report.details())
        if self.dock is not None:
            self.dock.set_dependency_report(self.report)
        return message

    @staticmethod
    def _check_dependencies() -> dependencies.DependencyReport:
        try:
            from . import settings

            return dependencies.check(device=settings.value(settings.DEVICE))
        except Exception as exc:  # noqa: BLE001 - loading must never raise into QGIS
            messages.log(traceback.format_exc(), Qgis.MessageLevel.Critical)
            return dependencies.DependencyReport(None, {"(check)": f"{type(exc).__name__}: {exc}"})
