"""The CWSAM dock: Classify, Review, Change, Fine-tune and Setup tabs."""

from __future__ import annotations

from typing import Optional

from qgis.PyQt.QtWidgets import QDockWidget, QTabWidget, QWidget

from . import dependencies
from .widgets.change_panel import ChangePanel
from .widgets.classify_panel import ClassifyPanel
from .widgets.review_panel import ReviewPanel
from .widgets.setup_panel import SetupPanel
from .widgets.train_panel import TrainPanel


class CwsamDock(QDockWidget):
    """Holds the panels; a model trained in Fine-tune is offered to Classify, a map classified there to Review."""

    def __init__(self, iface, report: Optional[dependencies.DependencyReport] = None,
                 parent: Optional[QWidget] = None) -> None:
        super().__init__("CWSAM SAR classification", parent or iface.mainWindow())
        self.setObjectName("CwsamDock")
        self.tabs = QTabWidget(self)
        self.classify_panel = ClassifyPanel(iface, self.tabs)
        self.review_panel = ReviewPanel(iface, self.tabs)
        self.change_panel = ChangePanel(iface, self.tabs)
        self.train_panel = TrainPanel(iface, self.tabs)
        self.setup_panel = SetupPanel(report, self.tabs)
        self.tabs.addTab(self.classify_panel, "Classify")
        self.tabs.addTab(self.review_panel, "Review")
        self.tabs.addTab(self.change_panel, "Change")
        self.tabs.addTab(self.train_panel, "Fine-tune")
        self.tabs.addTab(self.setup_panel, "Setup")
        if report is not None and not report.ok:
            self.tabs.setCurrentWidget(self.setup_panel)
        self.setWidget(self.tabs)
        self.train_panel.model_trained.connect(self.classify_with)
        self.classify_panel.classified.connect(self.review_panel.offer_map)

    def offer_model(self, model_path: str, layer_id: str) -> None:
        """Prefill the Classify tab with a model and a layer, and show it."""
        self.classify_panel.offer_model(model_path, layer_id)
        self.tabs.setCurrentWidget(self.classify_panel)

    def classify_with(self, model_path: str, layer_id: str):
        """What "Classify <layer> with this model" does: classify the layer with the new model in the
        Classify tab (its earlier results cleared). Returns the task, or None (the tab says why)."""
        self.offer_model(model_path, layer_id)
        return self.classify_panel.start()

    def set_dependency_report(self, report: dependencies.DependencyReport) -> None:
        """A check's report (the load-time one arrives after the dock may exist): the Setup tab, the Fine-tune
        tab's note on the full install, and the Setup tab shown when something is missing."""
        self.setup_panel.show_report(report)
        self.train_panel.show_install_note()
        if not report.ok:
            self.tabs.setCurrentWidget(self.setup_panel)

    def shutdown(self) -> None:
        """Stop running tasks before the plugin unloads."""
        self.classify_panel.shutdown()
        self.review_panel.shutdown()
        self.change_panel.shutdown()
        stop = getattr(self.train_panel, "shutdown", None)
        if stop is not None:
            stop()
