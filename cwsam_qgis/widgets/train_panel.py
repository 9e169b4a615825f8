"""The dock's "Fine-tune" tab: train a CWSAM model from a raster and a polygon layer of classes.

The panel gathers settings, checks them in the main thread (messages, never exceptions), exports
polygon layers the core cannot read as they stand, and runs ``TrainTask``. The engine
(``cwsam_core.training.train``) does the work; this file only wires widgets to it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

from qgis.core import Qgis, QgsApplication, QgsFieldProxyModel, QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsColorButton, QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import messages, settings
from ..layers import LayerError, raster_source
from ..polygon_source import PolygonSourceError, check_overlap, default_class_rows, field_values, polygon_file
from ..tasks.train_task import TrainOutcome, TrainTask, describe_outcome, history_lines, training_job
from .training_plot import TrainingPlot

# Keys under "cwsam/" (the shared SAM checkpoint key lives in settings.py).
KEY_BACKBONE = "train/backbone"
KEY_EPOCHS = "train/epochs"
KEY_STEPS = "train/steps_per_epoch"
KEY_BATCH = "train/batch_size"
KEY_LR = "train/lr"
KEY_VAL = "train/val_fraction"
KEY_DEVICE = "train/device"
KEY_OUTPUT_FOLDER = "train/output_folder"

DEVICES = ("auto", "cpu", "cuda")
COLUMNS = ("Use", "Field value", "Class value", "Name", "Colour")
USE, FIELD_VALUE, CLASS_VALUE, NAME, COLOUR = range(len(COLUMNS))
TESTS_ONLY = ("vit_nano",)


def _backbones() -> dict:
    """cwsam_core's backbone registry, or {} when the engine cannot be imported (the plugin still loads)."""
    try:
        from cwsam_core.backbones import BACKBONES
    except Exception:  # noqa: BLE001 - a missing or broken torch install: the panel says so instead
        return {}
    return dict(BACKBONES)


def _palette(count: int) -> List[str]:
    from cwsam_core.model_file import default_color

    return [default_color(i) for i in range(count)]


class TrainPanel(QWidget):
    """Fine-tune CWSAM from a raster layer and a polygon layer whose field holds the classes.

    Signals:
      model_trained(model_path, raster_layer_id): the user asked to classify the layer with the new model.
      training_finished(TrainOutcome): a run ended (success, cancel or error), in the main thread.
    """

    model_trained = pyqtSignal(str, str)
    training_finished = pyqtSignal(object)

    def __init__(self, iface, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.task: Optional[TrainTask] = None
        self.last_outcome: Optional[TrainOutcome] = None
        self.last_message = ""
        self._trained_layer_id = ""
        self._field_kind = "integer"
        self._build()
        self._restore()
        self._polygon_layer_changed(self.polygon_combo.currentLayer())

    # ---------------------------------------------------------------------------------------------- UI

    def _build(self) -> None:
        layout = QVBoxLayout(self)

        data = QGroupBox("Training data", self)
        form = QFormLayout(data)
        self.raster_combo = QgsMapLayerComboBox(data)
        self.raster_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.raster_combo.setToolTip("The SAR raster to learn from (bands as the model expects, e.g. VV and VH).")
        form.addRow("Raster layer", self.raster_combo)
        self.polygon_combo = QgsMapLayerComboBox(data)
        self.polygon_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.polygon_combo.setAllowEmptyLayer(True)
        self.polygon_combo.setToolTip("Training polygons, in any CRS; unlabelled pixels are ignored.")
        form.addRow("Polygon layer", self.polygon_combo)
        self.field_combo = QgsFieldComboBox(data)
        self.field_combo.setFilters(QgsFieldProxyModel.Int | QgsFieldProxyModel.LongLong | QgsFieldProxyModel.Double
                                  | QgsFieldProxyModel.String)
        self.field_combo.setToolTip("Integer field: class values. Text field: class names.")
        form.addRow("Class field", self.field_combo)
        self.class_table = QTableWidget(0, len(COLUMNS), data)
        self.class_table.setHorizontalHeaderLabels(COLUMNS)
        self.class_table.horizontalHeader().setSectionResizeMode(NAME, QHeaderView.Stretch)
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.setSelectionMode(QAbstractItemView.NoSelection)
        self.class_table.setMinimumHeight(110)
        self.class_table.setToolTip(
            "Classes found in the field. Untick a class to leave its polygons out. Integer fields keep their "
            "values (the name is yours); text fields keep the text as the name (the value is yours)."
        )
        form.addRow(self.class_table)
        layout.addWidget(data)

        model = QGroupBox("Model and training", self)
        form = QFormLayout(model)
        self.backbone_combo = QComboBox(model)
        for name, config in _backbones().items():
            label = f"{name} (tests only)" if name in TESTS_ONLY else f"{name}: {config.description}"
            self.backbone_combo.addItem(label, name)
        form.addRow("Backbone", self.backbone_combo)
        self.sam_widget = QgsFileWidget(model)
        self.sam_widget.setFilter("SAM checkpoint (*.pth *.pt)")
        self.sam_widget.setToolTip("Official SAM checkpoint of the chosen backbone (vit_b/l/h); vit_tiny needs none.")
        form.addRow("SAM checkpoint", self.sam_widget)
        self.epochs_spin = _spin(1, 10000, 10, model)
        form.addRow("Epochs", self.epochs_spin)
        self.steps_spin = _spin(1, 100000, 50, model)
        self.steps_spin.setToolTip("Optimizer steps per epoch, each on a batch of random windows.")
        form.addRow("Steps per epoch", self.steps_spin)
        self.batch_spin = _spin(1, 256, 4, model)
        form.addRow("Batch size", self.batch_spin)
        self.lr_spin = QDoubleSpinBox(model)
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(2e-4)
        form.addRow("Learning rate", self.lr_spin)
        self.val_spin = QDoubleSpinBox(model)
        self.val_spin.setRange(0.0, 0.9)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setValue(0.2)
        self.val_spin.setToolTip("Share of the raster's blocks held out for validation (spatially separate).")
        form.addRow("Validation fraction", self.val_spin)
        self.tile_spin = _spin(0, 4096, 0, model)
        self.tile_spin.setSingleStep(16)
        self.tile_spin.setSpecialValueText("backbone default")
        self.tile_spin.setToolTip("Model input size in pixels, a multiple of 16 (0: the backbone's default).")
        form.addRow("Tile size", self.tile_spin)
        self.device_combo = QComboBox(model)
        self.device_combo.addItems(DEVICES)
        form.addRow("Device", self.device_combo)
        self.output_widget = QgsFileWidget(model)
        self.output_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.output_widget.setFilter("CWSAM model (*.cwsam.pt)")
        self.output_widget.setToolTip("Where to write the model (the best one by validation mIoU).")
        form.addRow("Output model file", self.output_widget)
        layout.addWidget(model)

        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.classify_button = QPushButton("Classify with this model", self)
        self.classify_button.setVisible(False)
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.classify_button)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.plot = TrainingPlot(self)
        layout.addWidget(self.plot, 1)

        if not self.backbone_combo.count():
            self.train_button.setEnabled(False)
            self.status_label.setText("The CWSAM engine cannot be imported: see the plugin's dependency message.")

        self.polygon_combo.layerChanged.connect(self._polygon_layer_changed)
        self.field_combo.fieldChanged.connect(self._field_changed)
        self.backbone_combo.currentIndexChanged.connect(self._backbone_changed)
        self.train_button.clicked.connect(self.start_training)
        self.cancel_button.clicked.connect(self.cancel_training)
        self.classify_button.clicked.connect(self.offer_classification)

    def _restore(self) -> None:
        index = self.backbone_combo.findData(settings.value(KEY_BACKBONE, "vit_tiny"))
        self.backbone_combo.setCurrentIndex(max(0, index))
        self.sam_widget.setFilePath(settings.value(settings.SAM_CHECKPOINT, ""))
        self.epochs_spin.setValue(settings.value(KEY_EPOCHS, 10))
        self.steps_spin.setValue(settings.value(KEY_STEPS, 50))
        self.batch_spin.setValue(settings.value(KEY_BATCH, 4))
        self.lr_spin.setValue(settings.value(KEY_LR, 2e-4))
        self.val_spin.setValue(settings.value(KEY_VAL, 0.2))
        self.device_combo.setCurrentText(settings.value(KEY_DEVICE, "auto"))
        self._backbone_changed()

    def _remember(self) -> None:
        settings.set_value(KEY_BACKBONE, self.backbone())
        if self.sam_widget.filePath():
            settings.set_value(settings.SAM_CHECKPOINT, self.sam_widget.filePath())
        settings.set_value(KEY_EPOCHS, self.epochs_spin.value())
        settings.set_value(KEY_STEPS, self.steps_spin.value())
        settings.set_value(KEY_BATCH, self.batch_spin.value())
        settings.set_value(KEY_LR, self.lr_spin.value())
        settings.set_value(KEY_VAL, self.val_spin.value())
        settings.set_value(KEY_DEVICE, self.device_combo.currentText())

    # ------------------------------------------------------------------------------------ reactions

    def backbone(self) -> str:
        return self.backbone_combo.currentData() or ""

    def _backbone_changed(self, *_) -> None:
        config = _backbones().get(self.backbone())
        needs_sam = bool(config and config.sam_checkpoint)
        self.sam_widget.setEnabled(needs_sam)
        self.sam_widget.setToolTip(
            f"Official SAM checkpoint {config.sam_checkpoint}" if needs_sam
            else "This backbone trains from scratch: no SAM checkpoint needed."
        )

    def _polygon_layer_changed(self, layer) -> None:
        self.field_combo.setLayer(layer)
        self._field_changed(self.field_combo.currentField())

    def _field_changed(self, field_name: str) -> None:
        """Fill the class table with the field's distinct values."""
        self.class_table.setRowCount(0)
        layer = self.polygon_combo.currentLayer()
        if layer is None or not field_name:
            return
        try:
            self._field_kind, values = field_values(layer, field_name)
            palette = _palette(len(values)) if self.backbone_combo.count() else ["#808080"]
        except PolygonSourceError as exc:
            self._show(str(exc), Qgis.Warning)
            return
        for field_value, value, name, color in default_class_rows(self._field_kind, values, palette):
            self._add_row(field_value, value, name, color)

    def _add_row(self, field_value, value: int, name: str, color: str) -> None:
        row = self.class_table.rowCount()
        self.class_table.insertRow(row)
        use = QTableWidgetItem()
        use.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled)
        use.setCheckState(Qt.Checked)
        self.class_table.setItem(row, USE, use)
        key = QTableWidgetItem(str(field_value))
        key.setFlags(Qt.ItemIsEnabled)  # the polygons' own value: fixed
        self.class_table.setItem(row, FIELD_VALUE, key)
        value_item = QTableWidgetItem()
        value_item.setData(Qt.EditRole, int(value))
        name_item = QTableWidgetItem(name)
        # The core matches integer fields by value and text fields by name: that column stays as found.
        fixed = value_item if self._field_kind == "integer" else name_item
        fixed.setFlags(Qt.ItemIsEnabled)
        self.class_table.setItem(row, CLASS_VALUE, value_item)
        self.class_table.setItem(row, NAME, name_item)
        button = QgsColorButton(self.class_table)
        button.setColor(QColor(color))
        button.setAllowOpacity(False)
        self.class_table.setCellWidget(row, COLOUR, button)

    def classes(self) -> list:
        """The ticked classes as ``ClassInfo``, in table order (the model's class order)."""
        from cwsam_core.model_file import ClassInfo

        chosen = []
        for row in range(self.class_table.rowCount()):
            if self.class_table.item(row, USE).checkState() != Qt.Checked:
                continue
            value = int(self.class_table.item(row, CLASS_VALUE).data(Qt.EditRole))
            name = self.class_table.item(row, NAME).text().strip() or f"class {value}"
            color = self.class_table.cellWidget(row, COLOUR).color().name()
            chosen.append(ClassInfo(value, name, color))
        return chosen

    def default_output(self, layer: QgsRasterLayer) -> Path:
        """A free name ``<layer>_cwsam[_N].cwsam.pt`` beside the saved project, else in the last output
        folder, else in the temporary folder (an earlier model is never overwritten by default)."""
        folder = settings.value(KEY_OUTPUT_FOLDER, "")
        if QgsProject.instance().fileName():
            folder = str(Path(QgsProject.instance().fileName()).parent)
        if not folder or not Path(folder).is_dir():
            folder = tempfile.gettempdir()
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in layer.name()) or "model"
        candidate, index = Path(folder) / f"{stem}_cwsam.cwsam.pt", 1
        while candidate.exists():
            index += 1
            candidate = Path(folder) / f"{stem}_cwsam_{index}.cwsam.pt"
        return candidate

    # ------------------------------------------------------------------------------------ running

    def _show(self, message: str, level=Qgis.Info, details: Optional[str] = None) -> None:
        self.last_message = message
        self.status_label.setText(message)
        messages.notify(self.iface, message, level, details)

    def start_training(self) -> bool:
        """Check the settings, export polygons if needed and start the task; False (with a message) if not."""
        if self.task is not None:
            self._show("A fine-tuning run is already in progress: wait for it or cancel it.", Qgis.Warning)
            return False
        try:
            job, raster = self._prepare()
        except (LayerError, PolygonSourceError, ValueError) as exc:
            self._show(str(exc), Qgis.Warning)
            return False
        self._remember()
        self.plot.clear()
        self.progress_bar.setValue(0)
        self.classify_button.setVisible(False)
        self._trained_layer_id = raster.id()
        task = TrainTask(job, f"CWSAM fine-tuning on {raster.name()}")
        task.step_done.connect(self._on_step)
        task.epoch_done.connect(self._on_epoch)
        task.progressChanged.connect(lambda value: self.progress_bar.setValue(int(value)))
        task.outcome_ready.connect(self._on_outcome)
        self.task = task  # a task Python does not hold is never run
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._show(f"Fine-tuning {job.config.backbone} on {raster.name()} for {job.config.epochs} epochs...")
        QgsApplication.taskManager().addTask(task)
        return True

    def _prepare(self):
        """The training job for the current settings; raises with a message when something is wrong."""
        raster = self.raster_combo.currentLayer()
        source = raster_source(raster)  # refuses non-raster, invalid and web layers with a message
        polygons = self.polygon_combo.currentLayer()
        if polygons is None:
            raise ValueError("Choose a polygon layer with the training classes.")
        field_name = self.field_combo.currentField()
        if not field_name:
            raise ValueError(f"Choose the class field of {polygons.name()}.")
        classes = self.classes()
        if len(classes) < 2:
            raise ValueError("Tick at least two classes in the class table.")
        if len({c.value for c in classes}) != len(classes):
            raise ValueError("Class values must be unique: edit the class table.")
        check_overlap(polygons, field_name, raster.extent(), raster.crs(), raster.name())
        output = self.output_widget.filePath() or str(self.default_output(raster))
        if any(not 0 <= c.value <= 254 for c in classes):
            raise ValueError("Class values must lie in 0..254 (255 is the class raster's nodata): edit the class "
                             "table, or use a text field of class names.")
        exported = polygon_file(polygons, field_name)
        try:
            job = training_job(
                source, exported, field_name, classes, output, self.backbone(),
                sam_checkpoint=self.sam_widget.filePath() or None, epochs=self.epochs_spin.value(),
                steps_per_epoch=self.steps_spin.value(), batch_size=self.batch_spin.value(),
                lr=self.lr_spin.value(), val_fraction=self.val_spin.value(), tile_size=self.tile_spin.value(),
                device=self.device_combo.currentText(),
            )
        except ValueError:
            exported.remove()
            source.cleanup()
            raise
        settings.set_value(KEY_OUTPUT_FOLDER, str(Path(job.config.output).parent))
        return job, raster

    def cancel_training(self) -> None:
        """Ask the task to stop at its next step; the best model so far is kept."""
        if self.task is not None:
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling: stopping at the next step...")
            self.task.cancel()

    def shutdown(self) -> None:
        """Cancel a running task (the plugin is unloading); the engine keeps the best model so far."""
        if self.task is not None:
            self.task.cancel()

    def _on_step(self, epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        self.plot.add_loss(epoch, step, steps, loss)
        self.status_label.setText(f"Epoch {epoch}/{epochs}, step {step}/{steps}: loss {loss:.4f}")

    def _on_epoch(self, epoch: int, epochs: int, val_miou: float, train_loss: float, best_miou: float) -> None:
        self.plot.add_miou(epoch, val_miou)
        messages.log(f"epoch {epoch}/{epochs}: training loss {train_loss:.4f}, validation mIoU {val_miou:.3f} "
                     f"(best {best_miou:.3f})")

    def _on_outcome(self, outcome: TrainOutcome) -> None:
        self.task = None
        self.last_outcome = outcome
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        message = describe_outcome(outcome)
        if outcome.error:
            self._show(message, Qgis.Critical, outcome.details)
        elif outcome.result is None:
            self._show(message, Qgis.Info)
        else:
            self.progress_bar.setValue(100)
            self.last_message = message
            self.status_label.setText(message)
            messages.log(message + "\n" + "\n".join(history_lines(outcome.result)), Qgis.Success)
            self._offer_to_classify(message)
        self.training_finished.emit(outcome)

    def _offer_to_classify(self, message: str) -> None:
        layer = QgsProject.instance().mapLayer(self._trained_layer_id)
        if layer is None:
            self.iface.messageBar().pushMessage(messages.TITLE, message, level=Qgis.Success, duration=10)
            return
        label = f"Classify {layer.name()} with this model"
        self.classify_button.setText(label)
        self.classify_button.setVisible(True)
        bar = self.iface.messageBar()
        item = bar.createMessage(messages.TITLE, message)
        button = QPushButton(label, item)
        button.clicked.connect(self.offer_classification)
        button.clicked.connect(lambda: bar.popWidget(item))
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Success)

    def offer_classification(self) -> None:
        """Hand the new model and its raster layer to the Classify tab."""
        model = self.last_outcome.model_path if self.last_outcome else None
        if model is not None:
            self.model_trained.emit(str(model), self._trained_layer_id)


def _spin(low: int, high: int, value: int, parent: QWidget) -> QSpinBox:
    spin = QSpinBox(parent)
    spin.setRange(low, high)
    spin.setValue(value)
    return spin
