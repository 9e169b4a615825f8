"""The dock's Change tab: two dates (class maps, or SAR scenes and a model) compared in a background task, the
styled transition layer added to the project and the gains and losses per class drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QComboBox, QGroupBox, QWidget

from .. import compat, messages
from ..layers import (
    OUTPUT_PROPERTY, LayerError, cwsam_group, free_path, layer_file, output_folder, raster_source, safe_stem,
)
from ..tasks.change_task import ChangeJob, ChangeTask, gains_and_losses
from .change_chart import ChangeChart
from .scrolling import run_rows, run_widgets, scrolling_content, wrapping_form

CHANGE_PROPERTY = "change"  # the layer's cwsam/output property: a transition raster (not a class map to review)


class ChangePanel(QWidget):
    """Before and after layers, an optional model, the output, Compare / Cancel, the summary and the chart."""

    def __init__(self, iface, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.task: Optional[ChangeTask] = None
        self.last_task: Optional[ChangeTask] = None
        self.layer: Optional[QgsRasterLayer] = None
        dates = QGroupBox("Two dates", self)
        form = wrapping_form(dates)
        self.before_combo = QgsMapLayerComboBox(dates)
        self.after_combo = QgsMapLayerComboBox(dates)
        for combo, tip in ((self.before_combo, "The first date: a class map, or its SAR scene with a model"),
                           (self.after_combo, "The second date, read on the first one's grid over their overlap")):
            combo.setFilters(compat.LayerFilter.RasterLayer)
            combo.setToolTip(tip)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        form.addRow("Before", self.before_combo)
        form.addRow("After", self.after_combo)
        self.model_widget = QgsFileWidget(dates)
        self.model_widget.setFilter("CWSAM model (*.cwsam.pt *.pt *.onnx)")
        self.model_widget.lineEdit().setPlaceholderText("[none: the layers are class maps]")
        self.model_widget.setToolTip("To compare two SAR scenes: the model that classifies both first")
        form.addRow("Model", self.model_widget)
        self.output_widget = QgsFileWidget(dates)
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.output_widget.setFilter("GeoTIFF (*.tif)")
        self.output_widget.lineEdit().setPlaceholderText("[<before>_change.tif, beside it]")
        form.addRow("Output file", self.output_widget)
        self.run_button, self.cancel_button, self.progress_bar, self.status_label = run_widgets(self, "Compare the two dates")
        self.chart = ChangeChart(self)
        content, layout = scrolling_content(self)
        layout.addWidget(dates)
        layout.addLayout(run_rows(self.run_button, self.cancel_button, self.progress_bar))
        layout.addWidget(self.status_label)
        layout.addWidget(self.chart, 1)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)

    def default_output(self, before: QgsRasterLayer) -> Path:
        folder, _ = output_folder(QgsProject.instance(), layer_file(before), "")
        return free_path(folder, safe_stem(before.name(), "map") + "_change", ".tif")

    def start(self) -> Optional[ChangeTask]:
        """Compare the two layers chosen in a background task; None (the tab says why) when it cannot start."""
        if self.task is not None:
            return None
        before, after = self.before_combo.currentLayer(), self.after_combo.currentLayer()
        if before is None or after is None or before.id() == after.id():
            self._fail("choose two layers: the first date (Before) and the second (After)")
            return None
        model = self.model_widget.filePath().strip()
        if model and not Path(model).is_file():
            self._fail(f"model file not found: {model}; choose a CWSAM model file, or none for two class maps")
            return None
        try:
            job = ChangeJob(raster_source(before), raster_source(after),
                            Path(self.output_widget.filePath().strip() or self.default_output(before)),
                            Path(model) if model else None)
        except LayerError as exc:
            self._fail(str(exc))
            return None
        task = ChangeTask(job)
        task.fraction_done.connect(self._on_fraction)  # bound methods: dropped with the panel
        task.outcome_ready.connect(self._on_outcome)
        self.task = task
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setValue(0)
        self.status_label.setText(f"Comparing {before.name()} and {after.name()}...")
        QgsApplication.taskManager().addTask(task)
        return task

    def _on_fraction(self, fraction: float, message: str) -> None:
        self.progress_bar.setValue(int(100 * fraction))
        self.status_label.setText(message)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.status_label.setText("Cancelling...")

    def _fail(self, message: str) -> None:
        self.status_label.setText(message)
        messages.warning(self.iface, message)

    def _on_outcome(self, task: ChangeTask) -> None:
        self.task, self.last_task = None, task
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if task.result is None:
            self.progress_bar.setValue(0)
            if task.cancelled:
                self.status_label.setText("Cancelled: nothing was written")
            else:
                self._fail(task.error or "the comparison failed")
            return
        result = task.result
        self.progress_bar.setValue(100)
        layer = QgsRasterLayer(str(result.output), Path(result.output).stem, "gdal")  # styled by its .qml
        layer.setCustomProperty(OUTPUT_PROPERTY, CHANGE_PROPERTY)
        project = QgsProject.instance()
        project.addMapLayer(layer, False)
        cwsam_group(project).insertLayer(0, layer)
        self.layer = layer
        rows = gains_and_losses(result)
        unit = "ha" if result.area_unit == "m2" else "pixels"
        changed = sum(gain for _, gain, _ in rows)
        self.chart.show_rows(rows, unit)
        self.status_label.setText(f"{changed:,.2f} {unit} changed class in {len(result.transitions)} transition(s); "
                                  f"table: {Path(result.table).name}")
        messages.notify(self.iface, f"Change written to {Path(result.output).name}: {changed:,.2f} {unit} changed")

    def shutdown(self) -> None:
        if self.task is not None:
            self.task.cancel()
