"""The dock's "Review" tab: correct a class map and retrain its model from the corrections, round after round.

After a classification the tab offers the new map. *Start review* creates a correction layer (polygons
in ``<map>_corrections.gpkg`` beside the map, or the existing one, with the model's class field
``class``, a style per class in the model's colours and editing on); every polygon drawn gets the class
chosen in *Class to draw* (the field's default value; the form stays closed). *Retrain from
corrections* runs a ``RetrainTask``: a short training from the map's model on the corrections (plus,
replayed, its own map outside them and its training data where still on disk), then the same raster
classified with the new version, added above the previous map, and a summary of what changed. *Undo*
returns to the previous version (its map and model; the newer files stay on disk). The engine does the
work (``cwsam_core.training.retrain``); this file only wires widgets to it.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import List, Optional

from qgis.core import (
    QgsApplication, QgsDefaultValue, QgsEditorWidgetSetup, QgsProject, QgsRasterLayer, QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QMetaType, pyqtSignal
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QGroupBox, QLabel, QProgressBar, QPushButton, QSpinBox, QTextBrowser, QWidget,
)

from .. import compat, messages, settings
from ..layers import (
    OUTPUT_PROPERTY, LayerError, add_classification, cwsam_group, free_path, layer_file, polygon_renderer,
)
from ..polygon_source import PolygonSourceError, polygon_file
from ..tasks.retrain_task import (
    DEFAULT_MINUTES, DEFAULT_REPLAY, RetrainJob, RetrainOutcome, RetrainTask, ReviewedMap, change_rows, reviewed_map,
)
from .scrolling import run_rows, scrolling_content, wrapping_form

# Keys under "cwsam/".
KEY_TIME = "review/time_budget"  # minutes; 0: train for Steps
KEY_STEPS = "review/steps"
KEY_REPLAY = "review/replay"
CLASS_FIELD = "class"
CORRECTIONS_LAYER = "corrections"
CORRECTIONS_PROPERTY = "corrections"  # OUTPUT_PROPERTY of a correction layer
EXTENT_LAYER, EXTENT_VIEW = 0, 1
_DETACHED: set = set()  # tasks still running after their panel was shut down


def _model_card(model: Path):
    from cwsam_core.model.card_reader import read_card  # torch-free: QGIS's process reads only the card

    return read_card(model)


class ReviewPanel(QWidget):
    """Class map under review, correction layer and class to draw, retrain, undo, summary."""

    retrained = pyqtSignal(str, str)  # the new map's layer id, the new model file

    def __init__(self, iface, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.task: Optional[RetrainTask] = None
        self.reviewed: Optional[ReviewedMap] = None
        self.classes: list = []
        self.map_error = ""  # why the map chosen cannot be reviewed (e.g. its model file is gone)
        self._corrections_id = ""
        self.history: List[str] = []  # layer ids of the maps of earlier versions, oldest first
        self.last_outcome: Optional[RetrainOutcome] = None
        self._build()
        project = QgsProject.instance()
        project.layersAdded.connect(self._refresh_maps)
        project.layersRemoved.connect(self._refresh_maps)
        self._refresh_maps()

    @property
    def corrections(self) -> Optional[QgsVectorLayer]:
        """The correction layer, while it is in the project."""
        return QgsProject.instance().mapLayer(self._corrections_id) if self._corrections_id else None

    # --- layout -------------------------------------------------------------------------------

    def _build(self) -> None:
        self.map_combo = QComboBox(self)
        self.map_combo.setToolTip("A class map made by the Classify tab (its run record names the model and raster)")
        self.map_label = QLabel(self)
        self.map_label.setWordWrap(True)
        self.start_button = QPushButton("Start review", self)
        self.start_button.setToolTip("Add a correction layer (polygons, in <map>_corrections.gpkg beside the map) "
                                     "in edit mode: draw polygons where the map is wrong")
        self.class_combo = QComboBox(self)
        self.class_combo.setToolTip("The class every new correction polygon gets")
        self.time_spin = QDoubleSpinBox(self)
        self.time_spin.setRange(0.0, 1000.0)
        self.time_spin.setDecimals(1)
        self.time_spin.setSuffix(" min")
        self.time_spin.setSpecialValueText("off: train for Steps")
        self.time_spin.setValue(DEFAULT_MINUTES)
        self.steps_spin = QSpinBox(self)
        self.steps_spin.setRange(1, 100000)
        self.steps_spin.setValue(60)
        self.replay_check = QCheckBox("earlier data", self)
        self.replay_check.setChecked(True)
        self.replay_check.setToolTip(f"{DEFAULT_REPLAY:.0%} of the training windows come from the model's own map "
                                     "outside the corrections and from the data it was trained on (where still on "
                                     "disk), so that correcting one place does not unlearn the rest")
        self.extent_combo = QComboBox(self)
        self.extent_combo.addItems(["Whole layer", "Current map view"])
        self.retrain_button = QPushButton("Retrain from corrections", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.undo_button = QPushButton("Undo (previous version)", self)
        self.undo_button.setToolTip("Return to the previous version: its map and model (the newer files stay on disk)")
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 100)
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.summary = QTextBrowser(self)
        self.summary.setMinimumHeight(170)

        review = QGroupBox("Review", self)
        form = wrapping_form(review)
        form.addRow("Class map", self.map_combo)
        form.addRow(self.map_label)
        form.addRow(self.start_button)
        form.addRow("Class to draw", self.class_combo)
        options = QGroupBox("Retraining", self)
        form = wrapping_form(options)
        form.addRow("Training time", self.time_spin)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Replay", self.replay_check)
        form.addRow("Classify again", self.extent_combo)
        content, layout = scrolling_content(self)
        layout.addWidget(review)
        layout.addWidget(options)
        layout.addLayout(run_rows(self.retrain_button, self.cancel_button, self.progress_bar))
        layout.addWidget(self.undo_button)
        layout.addWidget(self.status_label)
        layout.addWidget(self.summary, 1)

        for combo in (self.map_combo, self.class_combo, self.extent_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        self.map_combo.currentIndexChanged.connect(self._map_changed)
        self.start_button.clicked.connect(self.start_review)
        self.class_combo.currentIndexChanged.connect(self._class_changed)
        self.time_spin.valueChanged.connect(lambda value: self.steps_spin.setEnabled(not value))
        self.retrain_button.clicked.connect(self.retrain)
        self.cancel_button.clicked.connect(self.cancel)
        self.undo_button.clicked.connect(self.undo)
        self.time_spin.setValue(settings.value(KEY_TIME, DEFAULT_MINUTES))
        self.steps_spin.setValue(settings.value(KEY_STEPS, 60))
        self.replay_check.setChecked(settings.value(KEY_REPLAY, True))
        self.steps_spin.setEnabled(not self.time_spin.value())
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.task is not None
        self.start_button.setEnabled(not running and self.reviewed is not None)
        self.retrain_button.setEnabled(not running and self.corrections is not None)
        self.cancel_button.setEnabled(running)
        self.undo_button.setEnabled(not running and bool(self.history))

    # --- the map under review -------------------------------------------------------------------

    def _class_maps(self) -> List[QgsRasterLayer]:
        return [layer for layer in QgsProject.instance().mapLayers().values()
                if isinstance(layer, QgsRasterLayer) and layer.customProperty(OUTPUT_PROPERTY) == "classes"]

    def _refresh_maps(self, *_) -> None:
        current = self.map_combo.currentData()
        self.map_combo.blockSignals(True)
        self.map_combo.clear()
        for layer in self._class_maps():
            self.map_combo.addItem(layer.name(), layer.id())
        index = self.map_combo.findData(current)
        self.map_combo.setCurrentIndex(index if index >= 0 else self.map_combo.count() - 1)
        self.map_combo.blockSignals(False)
        if self.map_combo.currentData() != current:
            self._map_changed()

    def offer_map(self, layer_id: str) -> None:
        """Put a freshly classified map under review (from the Classify tab)."""
        self._refresh_maps()
        index = self.map_combo.findData(layer_id)
        if index >= 0:
            self.map_combo.setCurrentIndex(index)

    def map_layer(self) -> Optional[QgsRasterLayer]:
        return QgsProject.instance().mapLayer(self.map_combo.currentData() or "")

    def _map_changed(self, *_) -> None:
        """Read the run record of the chosen map: its model (classes, colours) and raster."""
        if self.task is not None:
            return
        layer = self.map_layer()
        self.reviewed, self.classes, self.map_error = None, [], ""
        if layer is None:
            self.map_label.setText("Classify a SAR layer in the Classify tab, then review its map here.")
        else:
            try:
                path = layer_file(layer)
                if path is None:
                    raise LayerError(f"layer {layer.name()} has no file of its own")
                self.reviewed = reviewed_map(path)
                try:
                    self.classes = _model_card(self.reviewed.model).classes
                except ImportError:
                    raise LayerError("retraining needs the full install (PyTorch): see the Setup tab") from None
                self.map_label.setText(messages.breakable(
                    f"Model {self.reviewed.model.name} on {Path(self.reviewed.raster.split(',')[0]).name}"))
            except Exception as exc:  # noqa: BLE001 - any unreadable record or model is a message
                self.reviewed, self.map_error = None, str(exc)
                self.map_label.setText(f"<span style='color:#c0392b'>{html.escape(str(exc))}</span>")
        # Corrections belong to one map: another map's layer is never retrained with this map's model.
        self._corrections_id = self._corrections_of_this_map()
        self.class_combo.clear()
        for c in self.classes:
            pixmap = QPixmap(12, 12)
            pixmap.fill(QColor(c.color))
            self.class_combo.addItem(QIcon(pixmap), c.name, int(c.value))
        self._update_buttons()

    # --- the correction layer -------------------------------------------------------------------

    def _corrections_of_this_map(self) -> str:
        """The id of the map under review's correction layer where it is in the project, else ""."""
        if self.reviewed is None:
            return ""
        path = str(self.corrections_path())
        for layer in QgsProject.instance().mapLayers().values():
            if isinstance(layer, QgsVectorLayer) and layer.customProperty(OUTPUT_PROPERTY) == CORRECTIONS_PROPERTY \
                    and layer.source().split("|")[0] == path:
                return layer.id()
        return ""

    def corrections_path(self) -> Path:
        return self.reviewed.path.with_name(_base(self.reviewed.path.stem) + "_corrections.gpkg")

    def start_review(self) -> Optional[QgsVectorLayer]:
        """Add (or reuse) the correction layer of the map under review, styled and in edit mode."""
        if self.reviewed is None:
            self._fail("choose a class map made by the Classify tab first")
            return None
        path = self.corrections_path()
        layer = self._open_corrections(path) if path.is_file() else self._create_corrections(path)
        if layer is None:
            return None
        # A polygon without a class (or of a value the model lacks) still shows while drawn and after.
        layer.setRenderer(polygon_renderer(self.classes, others="no class: choose Class to draw"))
        layer.setOpacity(0.7)
        index = layer.fields().lookupField(CLASS_FIELD)
        layer.setEditorWidgetSetup(index, QgsEditorWidgetSetup(
            "ValueMap", {"map": [{c.name: int(c.value)} for c in self.classes]}))
        form = layer.editFormConfig()
        form.setSuppress(compat.FORM_SUPPRESSED)  # the class comes from "Class to draw"
        layer.setEditFormConfig(form)
        layer.setCustomProperty(OUTPUT_PROPERTY, CORRECTIONS_PROPERTY)
        if QgsProject.instance().mapLayer(layer.id()) is None:
            QgsProject.instance().addMapLayer(layer, False)
            cwsam_group(QgsProject.instance()).insertLayer(0, layer)
        self._corrections_id = layer.id()
        self._class_changed()
        layer.startEditing()
        if self.iface is not None and hasattr(self.iface, "setActiveLayer"):
            self.iface.setActiveLayer(layer)
        self.status_label.setText("Draw polygons where the map is wrong, each with the class it should have "
                                  "(Class to draw), then Retrain from corrections.")
        self._update_buttons()
        return layer

    def _open_corrections(self, path: Path) -> Optional[QgsVectorLayer]:
        for layer in QgsProject.instance().mapLayers().values():
            if isinstance(layer, QgsVectorLayer) and layer.customProperty(OUTPUT_PROPERTY) == CORRECTIONS_PROPERTY \
                    and layer.source().split("|")[0] == str(path):
                return layer
        layer = QgsVectorLayer(f"{path}|layername={CORRECTIONS_LAYER}", path.stem, "ogr")
        if not layer.isValid() or layer.fields().lookupField(CLASS_FIELD) < 0:
            self._fail(f"{path.name} is not a correction layer with a field {CLASS_FIELD!r}: move it away and "
                       "start the review again")
            return None
        return layer

    def _create_corrections(self, path: Path) -> Optional[QgsVectorLayer]:
        crs = self.map_layer().crs()
        memory = QgsVectorLayer(f"Polygon?crs={crs.authid() or 'EPSG:4326'}", CORRECTIONS_LAYER, "memory")
        if not crs.authid():
            memory.setCrs(crs)
        memory.dataProvider().addAttributes([compat.new_field(CLASS_FIELD, QMetaType.Type.Int)])
        memory.updateFields()
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = CORRECTIONS_LAYER
        error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
            memory, str(path), QgsProject.instance().transformContext(), options)
        if error != QgsVectorFileWriter.WriterError.NoError:
            self._fail(f"could not create the correction layer {path}: {message}")
            return None
        return self._open_corrections(path)

    def _class_changed(self, *_) -> None:
        """New polygons get the chosen class (the default value of the class field)."""
        if self.corrections is None or self.class_combo.currentData() is None:
            return
        index = self.corrections.fields().lookupField(CLASS_FIELD)
        self.corrections.setDefaultValueDefinition(index, QgsDefaultValue(str(int(self.class_combo.currentData()))))

    def set_class_to_draw(self, value: int) -> None:
        self.class_combo.setCurrentIndex(self.class_combo.findData(int(value)))

    # --- retraining ---------------------------------------------------------------------------

    def _fail(self, message: str, details: Optional[str] = None) -> None:
        self.status_label.setText(message)
        messages.warning(self.iface, message, details)

    def retrain(self) -> Optional[RetrainTask]:
        """Save the corrections and start a RetrainTask; returns it, or None after showing why not."""
        if self.task is not None:
            self._fail("a retraining is already running: wait for it or cancel it")
            return None
        if self.reviewed is None and self.map_error:  # e.g. its model file is gone: say why
            self._fail(f"{self.map_layer().name()} cannot be retrained: {self.map_error}")
            return None
        if self.reviewed is None or self.corrections is None:
            self._fail("start the review and draw correction polygons first")
            return None
        layer = self.corrections
        if layer.source().split("|")[0] != str(self.corrections_path()):  # never another map's corrections
            self._corrections_id = ""
            self._update_buttons()
            self._fail(f"the correction layer {layer.name()} belongs to another class map: start the review of "
                       f"{self.reviewed.path.name} and draw its corrections")
            return None
        if layer.isEditable() and layer.isModified() and not layer.commitChanges(False):
            self._fail(f"the corrections could not be saved: {'; '.join(layer.commitErrors())}")
            return None
        if layer.featureCount() == 0:
            self._fail("the correction layer is empty: draw polygons where the map is wrong, each with the class it "
                       "should have, then retrain")
            return None
        try:
            map_layer = self.map_layer()
            bounds = self._view_bounds(map_layer) if self.extent_combo.currentIndex() == EXTENT_VIEW else None
            corrections = polygon_file(layer, CLASS_FIELD)
        except (LayerError, PolygonSourceError) as exc:
            self._fail(str(exc))
            return None
        from cwsam_core.common.paths import next_version_path, version_number

        number = version_number(next_version_path(self.reviewed.model))
        version_map = free_path(self.reviewed.path.parent, f"{_base(self.reviewed.path.stem)}_v{number}", ".tif")
        saved = settings.value(settings.SAM_CHECKPOINT)  # a model fine-tuned from SAM: the Classify tab's checkpoint
        sam = Path(saved) if saved and not _model_card(self.reviewed.model).self_contained else None
        job = RetrainJob(
            self.reviewed, corrections, CLASS_FIELD, version_map, time_budget=self.time_spin.value() or None,
            steps=self.steps_spin.value(), replay=DEFAULT_REPLAY if self.replay_check.isChecked() else 0.0,
            bounds=bounds, sam_checkpoint=sam, device="auto")
        if corrections.temporary:
            job.cleanup.append(corrections.remove)
        settings.set_value(KEY_TIME, self.time_spin.value())
        settings.set_value(KEY_STEPS, self.steps_spin.value())
        settings.set_value(KEY_REPLAY, self.replay_check.isChecked())
        self.task = RetrainTask(job)
        self.task.fraction_done.connect(self._on_fraction)
        self.task.outcome_ready.connect(self._on_outcome)
        self.summary.clear()
        self.progress_bar.setValue(0)
        self.status_label.setText(f"Retraining {self.reviewed.model.name} on {layer.featureCount()} correction "
                                  "polygon(s)...")
        self._update_buttons()
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def _view_bounds(self, layer: QgsRasterLayer):
        from .classify_panel import ClassifyPanel

        return ClassifyPanel.view_bounds(self, layer)

    def _on_fraction(self, fraction: float, message: str) -> None:
        self.progress_bar.setValue(int(100 * fraction))
        self.status_label.setText(f"Retraining: {message}")

    def cancel(self) -> None:
        if self.task is not None:
            self.status_label.setText("Cancelling...")
            self.task.cancel()

    def _on_outcome(self, outcome: RetrainOutcome) -> None:
        """Main thread: add the new map above the previous one, show what changed, or say why not."""
        self.task = None
        self.last_outcome = outcome
        self._update_buttons()
        if outcome.cancelled:
            self.progress_bar.setValue(0)
            self.status_label.setText(f"Cancelled: no version was written; {self.reviewed.model.name} stays current.")
            messages.info(self.iface, "retraining cancelled; the current version stays")
            return
        if outcome.classification is None:
            self.progress_bar.setValue(0)
            self._fail(messages.for_the_dock(outcome.error or "retraining failed"), outcome.details)
            return
        result, version = outcome.classification, outcome.retrained
        previous = self.map_layer()
        try:
            layer, _ = add_classification(result.output, self.classes)
        except LayerError as exc:
            self._fail(str(exc))
            return
        if previous is not None:
            self.history.append(previous.id())
            node = QgsProject.instance().layerTreeRoot().findLayer(previous.id())
            if node is not None:
                node.setItemVisibilityChecked(False)
        self.offer_map(layer.id())
        self.progress_bar.setValue(100)
        changed = outcome.change.changed if outcome.change is not None else float("nan")
        self.status_label.setText(messages.breakable(
            f"Version {version.version}: {version.model_path.name}, map {layer.name()}; {changed:.1%} of the pixels "
            "changed class"))
        self.summary.setHtml(self.summary_html(outcome))
        if outcome.error:
            messages.warning(self.iface, messages.for_the_dock(outcome.error))
        else:
            messages.success(self.iface, f"Version {version.version} ({version.model_path.name}): {changed:.1%} of "
                             "the pixels changed class")
        self._update_buttons()
        self.retrained.emit(layer.id(), str(version.model_path))

    def summary_html(self, outcome: RetrainOutcome) -> str:
        version, change = outcome.retrained, outcome.change
        head = (f"<p><b>{html.escape(version.model_path.name)}</b> (version {version.version}, from "
                f"{html.escape(version.parent.name)})</p>")
        if change is None:
            return head
        rows = "".join(
            f"<tr><td><span style='background:{colour}'>&nbsp;&nbsp;&nbsp;&nbsp;</span> {html.escape(name)}</td>"
            f"<td align='right'>{before}</td><td align='right'>{after}</td></tr>"
            for colour, name, before, after in change_rows(change, self.classes))
        return (f"{head}<p>Changed class: <b>{change.changed:.1%}</b> of {change.pixels:,} pixels</p>"
                "<table width='100%' cellspacing='2'><tr><th align='left'>class</th><th>area before</th>"
                f"<th>area after</th></tr>{rows}</table>")

    def undo(self) -> None:
        """Return to the previous version: its map (shown again) and so its model; the newer map leaves the
        project, its files stay on disk."""
        if self.task is not None or not self.history:
            return
        current = self.map_layer()
        previous_id = self.history.pop()
        previous = QgsProject.instance().mapLayer(previous_id)
        if current is not None:
            QgsProject.instance().removeMapLayer(current.id())
        if previous is not None:
            node = QgsProject.instance().layerTreeRoot().findLayer(previous_id)
            if node is not None:
                node.setItemVisibilityChecked(True)
            self.offer_map(previous_id)
        self.summary.clear()
        self.progress_bar.setValue(0)
        name = self.reviewed.model.name if self.reviewed is not None else "the previous version"
        self.status_label.setText(f"Back to {name}; the newer version's files stay on disk.")
        self._update_buttons()

    def shutdown(self) -> None:
        """Cancel a running task (the plugin is unloading): it ends without this panel."""
        project = QgsProject.instance()
        for signal in (project.layersAdded, project.layersRemoved):
            try:
                signal.disconnect(self._refresh_maps)
            except TypeError:
                pass
        task, self.task = self.task, None
        if task is not None:
            _DETACHED.add(task)
            task.outcome_ready.disconnect()
            task.outcome_ready.connect(lambda _outcome: _DETACHED.discard(task))
            task.cancel()


def _base(stem: str) -> str:
    """A map's name without a version suffix: ``sar_classes_v3`` -> ``sar_classes``."""
    return re.sub(r"_v\d+$", "", stem)

