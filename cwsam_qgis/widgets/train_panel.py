"""The dock's "Fine-tune" tab: train a CWSAM model from a raster and a polygon layer of classes.

The panel gathers settings, checks them in the main thread (messages, never exceptions), exports
polygon layers the core cannot read as they stand, and runs ``TrainTask``. The engine
(``cwsam_core.training.loop.train``) does the work; this file only wires widgets to it.

Every default works on a user's first raster and polygons: the class field is guessed (never the
feature id), class colours follow known land-cover names, training runs for a time (10 minutes),
the learning rate follows the backbone, the tile size is fitted to a small raster (and the dock
says so), and the model file goes beside the project or the raster.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from qgis.core import Qgis, QgsApplication, QgsFieldProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsCollapsibleGroupBoxBasic, QgsColorButton, QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QAbstractItemView, QComboBox, QDoubleSpinBox, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QProgressBar,
    QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QWidget,
)

from .. import compat, messages, settings
from ..layers import LayerError, cwsam_output_layers, free_path, layer_file, output_folder, raster_source, safe_stem
from ..polygon_source import (
    PolygonSourceError, check_overlap, default_class_rows, field_values, guess_class_field, polygon_file,
)
from ..tasks.classify_task import parse_bands
from ..tasks.engine_jobs import engine_job, job_error
from ..tasks.train_task import TrainOutcome, TrainTask, describe_outcome, history_lines, training_job
from ..worker_client import WorkerError
from .scrolling import scrolling_content, wrapping_form
from .training_plot import TrainingPlot

# Keys under "cwsam/" (the shared SAM checkpoint key lives in settings.py).
KEY_BACKBONE = "train/backbone"
KEY_TIME = "train/time_budget"           # minutes; 0: train by epochs
KEY_EPOCHS = "train/epochs"
KEY_STEPS = "train/steps_per_epoch"
KEY_BATCH = "train/batch_size"
KEY_LR = "train/learning_rate"           # 0: auto (the engine's rate for the backbone)
KEY_VAL = "train/val_fraction"
KEY_DEVICE = "train/device"
KEY_INPUT_SCALE = "train/input_scale"
KEY_MODEL_SCALE = "train/model_scale"
KEY_OUTPUT_FOLDER = "train/output_folder"

DEFAULT_MINUTES = 10.0
DEVICES = ("auto", "cpu", "cuda")
INPUT_SCALES = (("auto (from the values)", "auto"), ("dB", "db"), ("linear power", "linear"),
                ("amplitude", "amplitude"))
MODEL_SCALES = (("auto (dB; 8-bit images: amplitude)", "auto"), ("dB", "db"), ("linear power", "linear"),
                ("amplitude", "amplitude"))
# The field's own value is also the class value (integer fields) or the name (text fields): kept, not shown.
COLUMNS = ("Use", "Field value", "Value", "Name", "Colour")
USE, FIELD_VALUE, CLASS_VALUE, NAME, COLOUR = range(len(COLUMNS))
TABLE_ROWS = 5  # the class table shows this many rows and scrolls: its height never changes
MIN_TILE = 64


def _backbones() -> dict:
    """cwsam_core's backbone registry, or {} when the engine cannot be imported (the plugin still loads)."""
    try:
        from cwsam_core.model.backbones import BACKBONES
    except Exception:  # noqa: BLE001 - a missing or broken torch install: the panel says so instead
        return {}
    return dict(BACKBONES)


def training_unavailable() -> Optional[str]:
    """Why training cannot run in this environment (a light install has no PyTorch) and how to get the full
    install; None when it can."""
    from .. import dependencies

    missing = dependencies.missing_modules(list(dependencies.FULL_ONLY))
    if not missing:
        return None
    commands = "; ".join(dependencies.fix_commands(dependencies.configured_environment()))
    return (f"Training needs the full install with PyTorch ({dependencies.FULL_SIZE}); this environment cannot "
            f"import {', '.join(missing)}. Install it with: {commands}. Meanwhile ONNX models (.onnx) classify in "
            "the Classify tab without it.")


def _palette(count: int) -> List[str]:
    from cwsam_core.common.card import default_color

    return [default_color(i) for i in range(max(count, 1))]


def auto_learning_rate(backbone: str) -> Optional[float]:
    """The engine's learning rate for a backbone: from scratch, or adapters on SAM (None without the engine)."""
    config = _backbones().get(backbone)
    try:
        from cwsam_core.training.config import LR_ADAPTERS, LR_FROM_SCRATCH
    except Exception:  # noqa: BLE001
        return None
    if config is None:
        return None
    return LR_ADAPTERS if config.sam_checkpoint else LR_FROM_SCRATCH


def fit_tile(requested: int, default: int, width: int, height: int) -> Tuple[int, str]:
    """The tile size to train with and, when it differs from the one asked for, why.

    ``requested`` 0 means the backbone's ``default``. A tile larger than the raster is cut to the
    largest multiple of 16 that fits (at least ``MIN_TILE``): windows larger than the image would be
    mostly padding.
    """
    tile = requested or default
    side = min(width, height)
    if side <= 0 or tile <= side:
        return tile, ""
    fitted = max(MIN_TILE, side // 16 * 16)
    if fitted >= tile:
        return tile, ""
    asked = f"{tile} px" if requested else f"the backbone's {tile} px"
    return fitted, (f"Tile size {fitted} px instead of {asked}: the raster is {width} x {height} px "
                    "(a tile larger than the raster would be mostly padding).")


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
        self.notes: List[str] = []
        self._trained_layer_id = ""
        self._field_kind = "integer"
        self._budget: Optional[float] = None
        self._fraction = 0.0
        self._cancelling = False
        self._build()
        self._restore()
        self._refresh_inputs()
        self._polygon_layer_changed(self.polygon_combo.currentLayer())
        self._raster_changed()
        project = QgsProject.instance()
        project.layersAdded.connect(self._refresh_inputs)
        for changed in (project.fileNameChanged, project.homePathChanged, project.projectSaved, project.cleared):
            changed.connect(self._update_default_output)

    # ---------------------------------------------------------------------------------------------- UI

    def _build(self) -> None:
        content, layout = scrolling_content(self)
        self.install_label = QLabel("", content)
        self.install_label.setWordWrap(True)
        self.install_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.install_label.setStyleSheet("color: #b36b00")
        self.show_install_note()
        layout.addWidget(self.install_label)

        data = QGroupBox("Training data", content)
        form = wrapping_form(data)
        self.raster_combo = QgsMapLayerComboBox(data)
        self.raster_combo.setFilters(compat.LayerFilter.RasterLayer)
        self.raster_combo.setToolTip("The SAR raster to learn from (e.g. Sentinel-1 VV and VH). CWSAM's own "
                                     "class maps and confidence layers are not offered.")
        form.addRow("Raster layer", self.raster_combo)
        self.polygon_combo = QgsMapLayerComboBox(data)
        self.polygon_combo.setFilters(compat.LayerFilter.PolygonLayer)
        self.polygon_combo.setToolTip("Training polygons, in any CRS; pixels outside every polygon are not used.")
        form.addRow("Polygon layer", self.polygon_combo)
        self.field_combo = QgsFieldComboBox(data)
        field_filter = QgsFieldProxyModel.Filter
        self.field_combo.setFilters(field_filter.Int | field_filter.LongLong | field_filter.Double | field_filter.String)
        self.field_combo.setToolTip("Text field: class names. Integer field: class values. Chosen for you when a "
                                    "polygon layer is picked (never the feature id).")
        form.addRow("Class field", self.field_combo)
        self.reference_combo = QgsMapLayerComboBox(data)
        self.reference_combo.setFilters(compat.LayerFilter.RasterLayer)
        self.reference_combo.setAllowEmptyLayer(True, "alphabetical order")  # QGIS >= 3.20 names the empty entry
        self.reference_combo.setLayer(None)
        self.reference_combo.setToolTip("A class map or reference raster that names its classes: text classes "
                                        "of the same names get its numbers and colours (so maps and scores "
                                        "compare by name). Empty: numbered in alphabetical order.")
        form.addRow("Number as", self.reference_combo)
        self.class_table = QTableWidget(0, len(COLUMNS), data)
        self.class_table.setHorizontalHeaderLabels(COLUMNS)
        header = self.class_table.horizontalHeader()
        for column in (USE, FIELD_VALUE, CLASS_VALUE, COLOUR):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.Stretch)
        self.class_table.setColumnHidden(FIELD_VALUE, True)
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.class_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.class_table.setFixedHeight(header.sizeHint().height() + 2 * self.class_table.frameWidth()
                                        + TABLE_ROWS * self.class_table.verticalHeader().defaultSectionSize())
        self.class_table.setToolTip(
            "Classes found in the field. Untick a class to leave its polygons out. Integer fields keep their "
            "values (the name is yours); text fields keep the text as the name (the value is yours)."
        )
        form.addRow(self.class_table)
        layout.addWidget(data)

        model = QGroupBox("Model and training", content)
        form = wrapping_form(model)
        self.backbone_combo = QComboBox(model)
        for name, config in _backbones().items():
            label = f"{name}: {config.description}"
            self.backbone_combo.addItem(label, name)
        form.addRow("Backbone", self.backbone_combo)
        self.sam_widget = QgsFileWidget(model)
        self.sam_widget.setFilter("SAM checkpoint (*.pth *.pt)")
        self.sam_label = QLabel("SAM checkpoint", model)
        form.addRow(self.sam_label, self.sam_widget)  # shown only for the backbones built on SAM
        self.time_spin = QDoubleSpinBox(model)
        self.time_spin.setRange(0.0, 100000.0)
        self.time_spin.setDecimals(1)
        self.time_spin.setSingleStep(1.0)
        self.time_spin.setSuffix(" min")
        self.time_spin.setSpecialValueText("off: train by Epochs")
        self.time_spin.setValue(DEFAULT_MINUTES)
        self.time_spin.setToolTip("Train for this long, in minutes: epochs run until the time is spent and the "
                                  "learning rate follows the time. Off (0): train for Epochs x Steps per epoch.")
        form.addRow("Training time", self.time_spin)
        self.epochs_spin = _spin(1, 10000, 10, model)
        self.epochs_spin.setToolTip("Epochs to train when Training time is off; each ends with a validation pass.")
        form.addRow("Epochs", self.epochs_spin)
        self.output_widget = QgsFileWidget(model)
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.output_widget.setFilter("CWSAM model (*.cwsam.pt)")
        self.output_widget.setToolTip("Where to write the model (the best one by validation mIoU). Empty: a new "
                                      "file beside the project, or beside the raster.")
        form.addRow("Output model file", self.output_widget)
        self.output_note = QLabel(model)
        self.output_note.setWordWrap(True)
        self.output_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.output_note)
        layout.addWidget(model)

        advanced = QgsCollapsibleGroupBoxBasic("Advanced options", content)
        self.advanced_box = advanced
        form = wrapping_form(advanced)
        self.steps_spin = _spin(1, 100000, 50, advanced)
        self.steps_spin.setToolTip("Optimizer steps per epoch, each on a batch of random windows; a validation "
                                   "pass follows every epoch.")
        form.addRow("Steps per epoch", self.steps_spin)
        self.batch_spin = _spin(1, 256, 4, advanced)
        form.addRow("Batch size", self.batch_spin)
        self.lr_spin = QDoubleSpinBox(advanced)
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(0.0, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(0.0)
        form.addRow("Learning rate", self.lr_spin)
        self.val_spin = QDoubleSpinBox(advanced)
        self.val_spin.setRange(0.0, 0.9)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setValue(0.2)
        self.val_spin.setToolTip("Share of the raster's labelled blocks held out for validation (spatially "
                                 "separate from the training windows; smaller blocks on a small raster).")
        form.addRow("Validation fraction", self.val_spin)
        self.tile_spin = _spin(0, 4096, 0, advanced)
        self.tile_spin.setSingleStep(16)
        self.tile_spin.setSpecialValueText("backbone default")
        self.tile_spin.setToolTip("Model input size in pixels, a multiple of 16 (0: the backbone's default, "
                                  "cut to the raster's size when the raster is smaller).")
        form.addRow("Tile size", self.tile_spin)
        self.bands_edit = QLineEdit(advanced)
        self.bands_edit.setToolTip("1-based raster bands to train on, in order, e.g. 1,2 (empty: the raster's "
                                   "bands, the first three of a raster with more). Classifying then needs the "
                                   "same bands.")
        form.addRow("Bands", self.bands_edit)
        self.input_scale_combo = QComboBox(advanced)
        for label, value in INPUT_SCALES:
            self.input_scale_combo.addItem(label, value)
        self.input_scale_combo.setToolTip("How the raster's values are scaled: auto detects dB, linear power or "
                                          "amplitude from a sample of the values.")
        form.addRow("Input scale", self.input_scale_combo)
        self.model_scale_combo = QComboBox(advanced)
        for label, value in MODEL_SCALES:
            self.model_scale_combo.addItem(label, value)
        self.model_scale_combo.setToolTip("The scale the model works in: auto is dB, or amplitude for 8-bit "
                                          "images (never log-transformed).")
        form.addRow("Model scale", self.model_scale_combo)
        self.device_combo = QComboBox(advanced)
        self.device_combo.addItems(DEVICES)
        self.device_combo.setToolTip("auto: CUDA when there is a GPU, else the CPU.")
        form.addRow("Device", self.device_combo)
        layout.addWidget(advanced)
        advanced.setCollapsed(True)  # after its rows exist: rows added later would show
        for combo in (self.raster_combo, self.polygon_combo, self.field_combo, self.backbone_combo,
                      self.input_scale_combo, self.model_scale_combo):
            # The dock may be narrow: long entries (backbone descriptions, layer names) are cut, not the dock.
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)

        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train", content)
        self.cancel_button = QPushButton("Cancel", content)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.train_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.classify_button = QPushButton("Classify with this model", content)
        self.classify_button.setVisible(False)
        layout.addWidget(self.classify_button)
        self.progress_bar = QProgressBar(content)
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("", content)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status_label)
        self.notes_label = QLabel("", content)
        self.notes_label.setWordWrap(True)
        self.notes_label.setTextFormat(Qt.TextFormat.RichText)
        self.notes_label.setVisible(False)
        layout.addWidget(self.notes_label)
        self.plot = TrainingPlot(content)
        layout.addWidget(self.plot, 1)

        if not self.backbone_combo.count():
            self.train_button.setEnabled(False)
            self._status("The CWSAM engine cannot be imported: see the Setup tab.")

        self.raster_combo.layerChanged.connect(self._raster_changed)
        self.polygon_combo.layerChanged.connect(self._polygon_layer_changed)
        self.field_combo.fieldChanged.connect(self._field_changed)
        # A bound method, not a lambda: PyQt drops the connection with the panel (a lambda outlives it, and a
        # combo box of a closed dock that follows the project's layers would call into deleted widgets).
        self._reference_id = ""
        self.reference_combo.layerChanged.connect(self._reference_changed)
        self.backbone_combo.currentIndexChanged.connect(self._backbone_changed)
        self.time_spin.valueChanged.connect(self._length_changed)
        self.train_button.clicked.connect(self.start_training)
        self.cancel_button.clicked.connect(self.cancel_training)
        self.classify_button.clicked.connect(self.offer_classification)

    def _restore(self) -> None:
        index = self.backbone_combo.findData(settings.value(KEY_BACKBONE, "vit_tiny"))
        self.backbone_combo.setCurrentIndex(max(0, index))
        self.sam_widget.setFilePath(settings.value(settings.SAM_CHECKPOINT, ""))
        self.time_spin.setValue(settings.value(KEY_TIME, DEFAULT_MINUTES))
        self.epochs_spin.setValue(settings.value(KEY_EPOCHS, 10))
        self.steps_spin.setValue(settings.value(KEY_STEPS, 50))
        self.batch_spin.setValue(settings.value(KEY_BATCH, 4))
        self.lr_spin.setValue(settings.value(KEY_LR, 0.0))
        self.val_spin.setValue(settings.value(KEY_VAL, 0.2))
        self.device_combo.setCurrentText(settings.value(KEY_DEVICE, "auto"))
        for combo, key in ((self.input_scale_combo, KEY_INPUT_SCALE), (self.model_scale_combo, KEY_MODEL_SCALE)):
            combo.setCurrentIndex(max(0, combo.findData(settings.value(key, "auto"))))
        self._backbone_changed()
        self._length_changed()

    def _remember(self) -> None:
        settings.set_value(KEY_BACKBONE, self.backbone())
        if self.sam_widget.filePath():
            settings.set_value(settings.SAM_CHECKPOINT, self.sam_widget.filePath())
        settings.set_value(KEY_TIME, self.time_spin.value())
        settings.set_value(KEY_EPOCHS, self.epochs_spin.value())
        settings.set_value(KEY_STEPS, self.steps_spin.value())
        settings.set_value(KEY_BATCH, self.batch_spin.value())
        settings.set_value(KEY_LR, self.lr_spin.value())
        settings.set_value(KEY_VAL, self.val_spin.value())
        settings.set_value(KEY_DEVICE, self.device_combo.currentText())
        settings.set_value(KEY_INPUT_SCALE, self.input_scale_combo.currentData())
        settings.set_value(KEY_MODEL_SCALE, self.model_scale_combo.currentData())

    # ------------------------------------------------------------------------------------ reactions

    def backbone(self) -> str:
        return self.backbone_combo.currentData() or ""

    def time_budget(self) -> Optional[float]:
        """The training time in minutes, or None when training by epochs."""
        return self.time_spin.value() or None

    def learning_rate(self) -> Optional[float]:
        """The learning rate set, or None for auto (the engine's rate for the backbone)."""
        return self.lr_spin.value() or None

    def _backbone_changed(self, *_) -> None:
        config = _backbones().get(self.backbone())
        needs_sam = bool(config and config.sam_checkpoint)
        self.sam_widget.setVisible(needs_sam)
        self.sam_label.setVisible(needs_sam)
        self.sam_widget.setToolTip(
            f"Official SAM checkpoint {config.sam_checkpoint}" if needs_sam
            else "This backbone trains from scratch: no SAM checkpoint needed."
        )
        rate = auto_learning_rate(self.backbone())
        self.lr_spin.setSpecialValueText(f"auto ({rate:g})" if rate else "auto")  # the rate of this backbone
        self.lr_spin.setToolTip("Peak learning rate (warm-up, then a cosine decay). Auto (0): 1e-3 for backbones "
                                "trained from scratch (vit_tiny), 2e-4 for adapters on SAM (vit_b/l/h).")
        self._inputs_changed()

    def _length_changed(self, *_) -> None:
        self.epochs_spin.setEnabled(self.time_budget() is None)

    def _refresh_inputs(self, *_) -> None:
        """Leave CWSAM's own outputs (class maps, confidence) out of the raster layers offered."""
        self.raster_combo.setExceptedLayerList(cwsam_output_layers())

    def _raster_changed(self, *_) -> None:
        layer = self.raster_combo.currentLayer()
        names = []
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            provider = layer.dataProvider()
            describe = getattr(provider, "bandDescription", lambda _band: "")
            names = [describe(b) or f"band {b}" for b in range(1, layer.bandCount() + 1)]
        which = "the first three" if len(names) > 3 else "all"
        self.bands_edit.setPlaceholderText(f"[{which}: {', '.join(names[:3])}]" if names else "[the raster's bands]")
        self._update_default_output()
        self._inputs_changed()

    def _update_default_output(self, *_) -> None:
        """Say where the model goes when no output file is chosen."""
        layer = self.raster_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer):
            self.output_widget.lineEdit().setPlaceholderText("[beside the project, or beside the raster]")
            self.output_note.clear()
            return
        path, where = self.default_output_and_place(layer)
        self.output_widget.lineEdit().setPlaceholderText(f"[{path.name}, {where}]")
        self.output_note.setText(f"Empty: the model is written {where}: {messages.breakable(str(path))}")

    def _polygon_layer_changed(self, layer) -> None:
        self.field_combo.setLayer(layer)
        best = guess_class_field(layer)
        if best:
            self.field_combo.setField(best)
        self._field_changed(self.field_combo.currentField())

    def _field_changed(self, field_name: str) -> None:
        """Fill the class table with the field's distinct values."""
        self.class_table.setRowCount(0)
        self._inputs_changed()
        layer = self.polygon_combo.currentLayer()
        if layer is None or not field_name:
            return
        try:
            self._field_kind, values = field_values(layer, field_name)
            palette = _palette(len(values)) if self.backbone_combo.count() else ["#808080"]
        except PolygonSourceError as exc:
            self._show(str(exc), Qgis.MessageLevel.Warning)
            return
        rows = default_class_rows(self._field_kind, values, palette)
        if self._field_kind != "integer" and self.reference_combo.currentLayer() is not None:
            rows = self._numbered_as_reference(rows)
        for field_value, value, name, color in rows:
            self._add_row(field_value, value, name, color)

    def _reference_changed(self, layer) -> None:
        """Renumber the table for another reference only: the combo box also speaks when the project's layers
        change (while they are being removed, too), and the user's edits of the table stay then."""
        key = layer.id() if layer is not None else ""
        if key != self._reference_id:
            self._reference_id = key
            self._field_changed(self.field_combo.currentField())

    def _numbered_as_reference(self, rows: list) -> list:
        """Text classes renumbered (and recoloured) as the reference raster chosen names them; the others get
        values after the reference's. Said in the tab's notes."""
        reference = self.reference_combo.currentLayer()
        path = layer_file(reference)
        if path is None:
            self._add_note(f"{reference.name()} has no file of its own: the classes are numbered alphabetically")
            return rows
        try:
            answer = engine_job("class_list", {"path": str(path)})
        except WorkerError as exc:
            self._add_note(job_error(exc, f"reading the classes of {reference.name()}"))
            return rows
        named = {c.name.casefold(): c for c in answer["classes"]}
        if not named:
            self._add_note(f"{reference.name()} names no classes (no band tags, category names, attribute table or "
                           ".qml with names): the classes are numbered alphabetically")
            return rows
        free = max(c.value for c in named.values()) + 1
        renumbered, missing = [], []
        for field_value, value, name, color in rows:
            match = named.get(str(name).casefold())
            if match is None:
                missing.append(f"{name} ({free})")
                renumbered.append((field_value, free, name, color))
                free += 1
            else:
                renumbered.append((field_value, match.value, name, match.color))
        note = f"Numbered as {reference.name()} ({answer['where']})"
        self._add_note(note + (f"; not in it: {', '.join(missing)}" if missing else ""))
        return renumbered

    def _inputs_changed(self) -> None:
        """Forget what was said about the previous inputs (a running task keeps its status)."""
        if self.task is not None:
            return
        self.status_label.clear()
        self._set_notes([])
        self.progress_bar.setValue(0)

    def _add_row(self, field_value, value: int, name: str, color: str) -> None:
        row = self.class_table.rowCount()
        self.class_table.insertRow(row)
        use = QTableWidgetItem()
        use.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
        use.setCheckState(Qt.CheckState.Checked)
        self.class_table.setItem(row, USE, use)
        key = QTableWidgetItem(str(field_value))
        key.setFlags(Qt.ItemFlag.ItemIsEnabled)  # the polygons' own value: fixed
        self.class_table.setItem(row, FIELD_VALUE, key)
        value_item = QTableWidgetItem()
        value_item.setData(Qt.ItemDataRole.EditRole, int(value))
        name_item = QTableWidgetItem(name)
        # The core matches integer fields by value and text fields by name: that column stays as found.
        fixed = value_item if self._field_kind == "integer" else name_item
        fixed.setFlags(Qt.ItemFlag.ItemIsEnabled)
        self.class_table.setItem(row, CLASS_VALUE, value_item)
        self.class_table.setItem(row, NAME, name_item)
        button = QgsColorButton(self.class_table)
        button.setColor(QColor(color))
        button.setAllowOpacity(False)
        self.class_table.setCellWidget(row, COLOUR, button)

    def classes(self) -> list:
        """The ticked classes as ``ClassInfo``, in table order (the model's class order)."""
        from cwsam_core.common.card import ClassInfo

        chosen = []
        for row in range(self.class_table.rowCount()):
            if self.class_table.item(row, USE).checkState() != Qt.CheckState.Checked:
                continue
            value = int(self.class_table.item(row, CLASS_VALUE).data(Qt.ItemDataRole.EditRole))
            name = self.class_table.item(row, NAME).text().strip() or f"class {value}"
            color = self.class_table.cellWidget(row, COLOUR).color().name()
            chosen.append(ClassInfo(value, name, color))
        return chosen

    def default_output_and_place(self, layer: QgsRasterLayer) -> Tuple[Path, str]:
        """A free name ``<layer>_cwsam[_N].cwsam.pt`` (an earlier model is never overwritten by default) and
        where it is: beside the saved project, else beside the raster's file, else in the last output
        folder, else in a temporary folder (said so in the dock)."""
        folder, where = output_folder(QgsProject.instance(), layer_file(layer) if layer is not None else None,
                                      settings.value(KEY_OUTPUT_FOLDER, ""))
        return free_path(folder, safe_stem(layer.name(), "model") + "_cwsam", ".cwsam.pt"), where

    def default_output(self, layer: QgsRasterLayer) -> Path:
        return self.default_output_and_place(layer)[0]

    # ------------------------------------------------------------------------------------ running

    def _status(self, text: str) -> None:
        self.status_label.setText(messages.breakable(text))

    def _show(self, message: str, level=Qgis.MessageLevel.Info, details: Optional[str] = None) -> None:
        self.last_message = message
        self._status(message)
        messages.notify(self.iface, message, level, details)

    def _set_notes(self, notes: List[str]) -> None:
        self.notes = list(notes)
        self.notes_label.setText("".join(f"<p style='color:#b36b00; margin:0'>&#9888; {_escape(n)}</p>"
                                         for n in self.notes))
        self.notes_label.setVisible(bool(self.notes))

    def _add_note(self, note: str) -> None:
        if note and note not in self.notes:
            self._set_notes(self.notes + [note])

    def show_install_note(self) -> None:
        """The note that training needs the full install, from the newest check (hidden when it can train)."""
        self.install_label.setText(training_unavailable() or "")
        self.install_label.setVisible(bool(self.install_label.text()))

    def start_training(self) -> bool:
        """Check the settings, export polygons if needed and start the task; False (with a message) if not."""
        if self.task is not None:
            self._show("A fine-tuning run is already in progress: wait for it or cancel it.", Qgis.MessageLevel.Warning)
            return False
        unavailable = training_unavailable()
        if unavailable:
            self._show(unavailable, Qgis.MessageLevel.Warning)
            return False
        self._set_notes([])
        try:
            job, raster, adjusted = self._prepare()
        except (LayerError, PolygonSourceError, ValueError) as exc:
            self._show(messages.for_the_dock(str(exc)), Qgis.MessageLevel.Warning)
            return False
        self._remember()
        self.plot.clear()
        self.progress_bar.setValue(0)
        self.classify_button.setVisible(False)
        self._trained_layer_id = raster.id()
        self._budget = job.config.time_budget
        self._fraction = 0.0
        self._cancelling = False
        task = TrainTask(job, f"CWSAM fine-tuning on {raster.name()}")
        task.step_done.connect(self._on_step)
        task.epoch_done.connect(self._on_epoch)
        task.fraction_done.connect(self._on_fraction)
        task.note.connect(self._add_note)
        task.outcome_ready.connect(self._on_outcome)
        self.task = task  # a task Python does not hold is never run
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._set_notes(adjusted)
        length = (f"for {job.config.time_budget:g} min" if job.config.time_budget
                  else f"for {job.config.epochs} epochs of {job.config.steps_per_epoch} steps")
        self.last_message = (f"Fine-tuning {job.config.backbone} on {raster.name()} {length}, tiles of "
                             f"{job.config.tile_size} px; the model goes to {job.config.output}")
        self._status(self.last_message + "...")
        messages.clear(self.iface)  # an earlier message is no longer the news
        QgsApplication.taskManager().addTask(task)
        return True

    def _prepare(self):
        """The training job for the current settings, its raster layer and the settings adjusted to the data
        (each said in one line); raises with a message when something is wrong."""
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
        bands = parse_bands(self.bands_edit.text())
        adjusted = []
        config = _backbones().get(self.backbone())
        tile = self.tile_spin.value()
        if config is not None:
            tile, note = fit_tile(tile, config.default_input_size, raster.width(), raster.height())
            if note:
                adjusted.append(note)
        exported = polygon_file(polygons, field_name)
        try:
            job = training_job(
                source, exported, field_name, classes, output, self.backbone(),
                sam_checkpoint=self.sam_widget.filePath() or None, epochs=self.epochs_spin.value(),
                steps_per_epoch=self.steps_spin.value(), batch_size=self.batch_spin.value(),
                lr=self.learning_rate(), val_fraction=self.val_spin.value(), tile_size=tile,
                device=self.device_combo.currentText(), time_budget=self.time_budget(),
                input_scale=self.input_scale_combo.currentData(), model_scale=self.model_scale_combo.currentData(),
                band_indexes=bands,
            )
        except ValueError:
            exported.remove()
            source.cleanup()
            raise
        settings.set_value(KEY_OUTPUT_FOLDER, str(Path(job.config.output).parent))
        return job, raster, adjusted

    def cancel_training(self) -> None:
        """Ask the task to stop at its next step; the best model so far is kept."""
        if self.task is not None:
            self._cancelling = True
            self.cancel_button.setEnabled(False)
            self._status("Cancelling: stopping at the next step...")
            self.task.cancel()

    def shutdown(self) -> None:
        """Cancel a running task (the plugin is unloading); the engine keeps the best model so far."""
        if self.task is not None:
            self.task.cancel()

    def _on_fraction(self, fraction: float) -> None:
        self._fraction = fraction
        if not self._cancelling:
            self.progress_bar.setValue(int(100 * fraction))

    def _on_step(self, epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        self.plot.add_loss(epoch, step, steps, loss)
        if self._cancelling:
            return
        if self._budget:
            self._status(f"Epoch {epoch} of about {epochs}, step {step}/{steps}: loss {loss:.4f} "
                                      f"({self._fraction * self._budget:.1f} of {self._budget:g} min)")
        else:
            self._status(f"Epoch {epoch}/{epochs}, step {step}/{steps}: loss {loss:.4f}")

    def _on_epoch(self, epoch: int, epochs: int, val_miou: float, train_loss: float, best_miou: float) -> None:
        self.plot.add_miou(epoch, val_miou)
        # Training for a time: the epoch count is the engine's estimate, not the Epochs field (which is off).
        count = f"{epoch} of about {epochs} ({self._budget:g} min of training)" if self._budget else f"{epoch}/{epochs}"
        messages.log(f"epoch {count}: training loss {train_loss:.4f}, validation mIoU {val_miou:.3f} "
                     f"(best {best_miou:.3f})")

    def _on_outcome(self, outcome: TrainOutcome) -> None:
        self.task = None
        self.last_outcome = outcome
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        message = describe_outcome(outcome)
        if not outcome.cancelled and outcome.result is not None:
            self.progress_bar.setValue(100)
        elif outcome.result is None:
            self.progress_bar.setValue(0)  # nothing was kept (a cancel keeps the bar where it stopped)
        if outcome.error:
            self._show(message, Qgis.MessageLevel.Critical, outcome.details)
        elif outcome.result is None:
            self._show(message, Qgis.MessageLevel.Info)
        else:
            self.last_message = message
            self._status(message)
            messages.log(message + "\n" + "\n".join(history_lines(outcome.result)), Qgis.MessageLevel.Success)
            self._offer_to_classify(message)
        self.training_finished.emit(outcome)

    def _offer_to_classify(self, message: str) -> None:
        layer = QgsProject.instance().mapLayer(self._trained_layer_id)
        level = Qgis.MessageLevel.Success
        if self.notes:
            message += f" ({len(self.notes)} note{'s' if len(self.notes) > 1 else ''} in the Fine-tune tab)"
        if layer is None:
            messages.notify(self.iface, message, level)
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
        messages.push_item(self.iface, item, level)

    def offer_classification(self) -> None:
        """Classify the trained raster layer with the new model (in the Classify tab)."""
        model = self.last_outcome.model_path if self.last_outcome else None
        if model is not None:
            self.model_trained.emit(str(model), self._trained_layer_id)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _spin(low: int, high: int, value: int, parent: QWidget) -> QSpinBox:
    spin = QSpinBox(parent)
    spin.setRange(low, high)
    spin.setValue(value)
    return spin
