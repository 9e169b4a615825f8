"""The dock's "Classify" tab: choose a SAR raster layer and a model file, see whether they match,
and classify the layer (or the current map view) in a background task."""

from __future__ import annotations

import functools
import html
import os
from pathlib import Path
from typing import List, Optional, Tuple

from qgis.core import Qgis, QgsApplication, QgsCoordinateTransform, QgsProject, QgsRasterLayer
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QGroupBox, QLabel, QLineEdit, QSpinBox, QTextBrowser, QWidget,
)

from .. import compat, messages, settings
from ..layers import (
    LayerError, add_classification, add_polygons, cwsam_output_layers, free_path, layer_file, output_folder,
    raster_source, safe_stem,
)
from ..tasks.classify_task import (
    ClassifyOutcome, ClassifyRequest, ClassifyTask, area_summary, for_the_plugin, parse_bands,
)
from ..tasks.engine_jobs import engine_job
from ..worker_client import WorkerError
from .scrolling import run_rows, run_widgets, scrolling_content, wrapping_form
from .setup_panel import device_line

DEVICES = ["auto", "cpu", "cuda", "mps"]
MODEL_FILTER = "CWSAM model (*.pt *.pth *.onnx);;CWSAM model file (*.pt *.pth);;ONNX export (*.onnx);;All files (*)"
INPUT_SCALES = (("auto (from the values)", "auto"), ("dB", "db"), ("linear power", "linear"),
                ("amplitude", "amplitude"))
EXTENT_LAYER, EXTENT_VIEW = 0, 1
SAMPLE_PIXELS = 65_536  # enough to detect the input scale; small enough to read at once
_DETACHED: set = set()  # tasks still running after their panel was shut down


def scale_word(scale: str) -> str:
    """"db" -> "dB": scale names as the dock writes them."""
    return {"db": "dB", "linear": "linear power"}.get(scale, scale)


@functools.lru_cache(maxsize=8)
def _self_contained(model_path: str) -> bool:
    """Whether the model file needs no SAM checkpoint (False when its card cannot be read: the engine says why).
    An ONNX export holds every weight."""
    if model_path.lower().endswith(".onnx"):
        return True
    try:
        stat = os.stat(model_path)
        return _model_card(model_path, stat.st_mtime, stat.st_size).self_contained
    except Exception:  # noqa: BLE001 - unreadable or missing dependencies: leave the decision to the engine
        return False


def _model_card(path: str, modified: float, size: int):
    """The card of a model file or ONNX export, read once per version of the file (a model file holds all its
    tensors; an export's card is read without its weights or torch)."""
    from cwsam_core.model.card_reader import read_card

    return read_card(path)


def needs_sam_checkpoint(model_path: str) -> bool:
    """Whether the model file chosen was fine-tuned from SAM and needs its checkpoint (not a self-contained
    model, nor an ONNX export); False for no model or an unreadable one (the readout says why)."""
    if not model_path or model_path.lower().endswith(".onnx") or not os.path.isfile(model_path):
        return False
    try:
        stat = os.stat(model_path)
        return not _model_card(model_path, stat.st_mtime, stat.st_size).self_contained
    except Exception:  # noqa: BLE001 - an unreadable file: its problem is in the readout
        return False


def describe_fit(model_path: str, layer: Optional[QgsRasterLayer],
                 band_indexes: Optional[List[int]] = None, input_scale: Optional[str] = None) -> Tuple[str, List[str]]:
    """HTML lines "model expects / layer has" and the problems that would stop or mislead a run.

    Reads the model card and a small decimated sample of the layer's file (never the whole raster).
    """
    lines: List[str] = []
    problems: List[str] = []
    card = None
    if model_path and not os.path.isfile(model_path):
        problems.append(f"model file not found: {model_path}")
    elif model_path:
        try:
            stat = os.stat(model_path)
            card = _model_card(model_path, stat.st_mtime, stat.st_size)
            onnx = model_path.lower().endswith(".onnx")
            lines.append(
                f"<b>Model expects</b>: bands {', '.join(card.bands)} in {scale_word(card.input_scale)}; "
                f"{card.backbone}, tiles {card.tile_size} px" + (" (fixed: an ONNX export)" if onnx else "")
                + f"; {len(card.classes)} classes"
                + ("; runs with ONNX Runtime" if onnx else "" if card.self_contained
                   else f"; needs SAM checkpoint {html.escape(card.sam_checkpoint['name'])}")
            )
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not raised
            problems.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if layer is None or not isinstance(layer, QgsRasterLayer):
        return "<br>".join(lines), problems
    path = layer_file(layer)
    if path is None:
        lines.append(f"<b>Layer has</b>: {layer.bandCount()} band(s), no file of its own "
                     "(exported to a temporary GeoTIFF when run)")
        return "<br>".join(lines), problems
    try:  # read in the engine's worker process: QGIS's own never imports rasterio
        fit = engine_job("fit", {"raster": str(path), "model": model_path if card is not None else None,
                                 "band_indexes": band_indexes, "input_scale": input_scale or "auto",
                                 "sample_pixels": SAMPLE_PIXELS})
    except WorkerError as exc:
        problems.append(f"cannot read {path.name}: {exc}")
        return "<br>".join(lines), problems
    names = [d or f"band {i}" for i, d in enumerate(fit["descriptions"], start=1)]
    has = f"<b>Layer has</b>: {fit['count']} band(s) ({html.escape(', '.join(names))}), {fit['dtype']}"
    if card is None or fit["problem"]:
        lines.append(has)
        if fit["problem"]:
            problems.append(for_the_plugin(fit["problem"]))
        return "<br>".join(lines), problems
    seen = "look like" if (input_scale or "auto") == "auto" else "are read as"
    lines.append(has + f"; values {seen} <b>{scale_word(fit['source_scale'])}</b>; bands used: "
                 + ", ".join(f"{n}=band {i}" for n, i in zip(card.bands, fit["band_indexes"])))
    lines += [f"<span style='color:#b36b00'>{html.escape(for_the_plugin(n))}</span>" for n in fit["notes"]
              if "converting them" not in n]
    if fit["source_scale"] != card.input_scale:
        lines.append(f"<span style='color:#b36b00'>Values will be converted from "
                     f"{scale_word(fit['source_scale'])} to {scale_word(card.input_scale)}.</span>")
    return "<br>".join(lines), problems


class ClassifyPanel(QWidget):
    """Layer, model, SAM checkpoint, extent, tiling, device, output; "Classify SAR layer" and "Cancel"."""

    classified = pyqtSignal(str)  # the class raster's layer id, once added to the project

    def __init__(self, iface, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.task: Optional[ClassifyTask] = None
        self.last_outcome: Optional[ClassifyOutcome] = None
        self.result_layer_ids: List[str] = []
        self._classes: list = []
        self._inputs: tuple = ()
        self._build()
        self._load_settings()
        self._refresh_inputs()
        self._inputs_changed()
        project = QgsProject.instance()
        project.layersAdded.connect(self._refresh_inputs)
        for changed in (project.fileNameChanged, project.homePathChanged, project.projectSaved, project.cleared):
            changed.connect(self._update_default_output)

    # --- layout -------------------------------------------------------------------------------

    def _build(self) -> None:
        self.layer_combo = QgsMapLayerComboBox(self)
        self.layer_combo.setFilters(compat.LayerFilter.RasterLayer)
        self.layer_combo.setToolTip("The SAR raster to classify (e.g. Sentinel-1 VV, VH in dB). CWSAM's own "
                                    "class maps and confidence layers are not offered.")
        self.model_widget = QgsFileWidget(self)
        self.model_widget.setFilter(MODEL_FILTER)
        self.model_widget.setToolTip("A CWSAM model file (*.cwsam.pt, runs with PyTorch), e.g. one made in the "
                                     "Fine-tune tab, or its ONNX export (*.onnx, `cwsam export`: runs with ONNX "
                                     "Runtime, no PyTorch needed)")
        self.sam_widget = QgsFileWidget(self)
        self.sam_widget.setFilter("SAM checkpoint (*.pth *.pt);;All files (*)")
        self.sam_widget.setToolTip("Only for models fine-tuned from SAM: the SAM checkpoint they were trained with")
        self.fit_label = QLabel(self)
        self.fit_label.setWordWrap(True)
        self.fit_label.setTextFormat(Qt.TextFormat.RichText)

        self.extent_combo = QComboBox(self)
        self.extent_combo.addItems(["Whole layer", "Current map view"])
        self.tile_spin = QSpinBox(self)
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSingleStep(16)
        self.tile_spin.setSpecialValueText("model's")
        self.tile_spin.setSuffix(" px")
        self.overlap_spin = QDoubleSpinBox(self)
        self.overlap_spin.setRange(0.0, 0.9)
        self.overlap_spin.setSingleStep(0.05)
        self.batch_spin = QSpinBox(self)
        self.batch_spin.setRange(1, 256)
        self.device_combo = QComboBox(self)
        self.device_combo.addItems(DEVICES)
        self.device_label = QLabel(self)  # which device runs and why (GPU name and free memory, or why the CPU)
        self.device_label.setWordWrap(True)
        self.output_widget = QgsFileWidget(self)
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.output_widget.setFilter("GeoTIFF (*.tif)")
        self.output_widget.lineEdit().setPlaceholderText("[beside the project, or beside the input raster]")
        self.output_widget.setToolTip("The class raster (GeoTIFF). Empty: a new file beside the saved project, "
                                      "or beside the input raster")
        self.confidence_check = QCheckBox("Confidence (%)", self)
        self.polygons_check = QCheckBox("Polygons (.gpkg)", self)
        self.polygons_check.setToolTip("One polygon per connected region of the class map, with its class, name, area "
                                       "(m²) and mean confidence, in <output>_polygons.gpkg (as cwsam vectorize)")
        self.bands_edit = QLineEdit(self)
        self.bands_edit.setPlaceholderText("[by band description, else in order]")
        self.bands_edit.setToolTip("1-based raster bands to use, in the model's band order (e.g. 1,2)")
        self.input_scale_combo = QComboBox(self)
        for label, value in INPUT_SCALES:
            self.input_scale_combo.addItem(label, value)
        self.input_scale_combo.setToolTip("How the raster's values are scaled; auto detects it from a sample. "
                                          "They are converted to the model's scale.")

        self.run_button, self.cancel_button, self.progress_bar, self.status_label = run_widgets(self, "Classify SAR layer")
        self.summary = QTextBrowser(self)
        self.summary.setMinimumHeight(170)

        inputs = QGroupBox("Input", self)
        form = wrapping_form(inputs)
        form.addRow("SAR raster layer", self.layer_combo)
        form.addRow("Model file", self.model_widget)
        self.sam_label = QLabel("SAM checkpoint", inputs)
        form.addRow(self.sam_label, self.sam_widget)  # shown only for a model that needs one (fine-tuned from SAM)
        form.addRow(self.fit_label)
        options = QGroupBox("Options", self)
        form = wrapping_form(options)
        form.addRow("Bands", self.bands_edit)
        form.addRow("Input scale", self.input_scale_combo)
        form.addRow("Extent", self.extent_combo)
        form.addRow("Tile size", self.tile_spin)
        form.addRow("Overlap", self.overlap_spin)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Device", self.device_combo)
        form.addRow(self.device_label)
        form.addRow("Output file", self.output_widget)
        form.addRow("Also add", self.confidence_check)
        form.addRow("", self.polygons_check)
        content, layout = scrolling_content(self)
        layout.addWidget(inputs)
        layout.addWidget(options)
        layout.addLayout(run_rows(self.run_button, self.cancel_button, self.progress_bar))
        layout.addWidget(self.status_label)
        layout.addWidget(self.summary, 1)

        for combo in (self.layer_combo, self.extent_combo, self.input_scale_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        self.layer_combo.layerChanged.connect(self._inputs_changed)
        self.model_widget.fileChanged.connect(self._inputs_changed)
        self.bands_edit.editingFinished.connect(self.update_fit)
        self.input_scale_combo.currentIndexChanged.connect(self.update_fit)
        self.device_combo.currentTextChanged.connect(lambda text: self.device_label.setText(device_line(text)))
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)

    def _load_settings(self) -> None:
        self.model_widget.setFilePath(settings.value(settings.MODEL_FILE))
        self.sam_widget.setFilePath(settings.value(settings.SAM_CHECKPOINT))
        self.tile_spin.setValue(settings.value(settings.TILE_SIZE))
        self.overlap_spin.setValue(settings.value(settings.OVERLAP))
        self.batch_spin.setValue(settings.value(settings.BATCH_SIZE))
        device = settings.value(settings.DEVICE)
        self.device_combo.setCurrentIndex(DEVICES.index(device) if device in DEVICES else 0)
        self.device_label.setText(device_line(self.device_combo.currentText()))
        self.confidence_check.setChecked(settings.value(settings.CONFIDENCE))
        self.polygons_check.setChecked(settings.value(settings.POLYGONS))

    def _save_settings(self) -> None:
        settings.set_value(settings.MODEL_FILE, self.model_widget.filePath())
        settings.set_value(settings.SAM_CHECKPOINT, self.sam_widget.filePath())
        settings.set_value(settings.TILE_SIZE, self.tile_spin.value())
        settings.set_value(settings.OVERLAP, self.overlap_spin.value())
        settings.set_value(settings.BATCH_SIZE, self.batch_spin.value())
        settings.set_value(settings.DEVICE, self.device_combo.currentText())
        settings.set_value(settings.CONFIDENCE, self.confidence_check.isChecked())
        settings.set_value(settings.POLYGONS, self.polygons_check.isChecked())

    # --- inputs -------------------------------------------------------------------------------

    def _refresh_inputs(self, *_) -> None:
        """Leave CWSAM's own outputs (class maps, confidence) out of the layers offered to classify."""
        self.layer_combo.setExceptedLayerList(cwsam_output_layers())

    def _inputs_changed(self, *_) -> None:
        """A new layer or model: what the tab said about the previous ones (status, area table) goes."""
        inputs = (self.layer_combo.currentLayer().id() if self.layer_combo.currentLayer() else "",
                  self.model_widget.filePath().strip())
        if inputs != self._inputs and self.task is None:
            self._inputs = inputs
            self.status_label.clear()
            self.summary.clear()
            self.progress_bar.setValue(0)
        self._update_default_output()
        self.update_fit()

    def default_output_and_place(self, layer) -> Tuple[Path, str]:
        """The class raster's default file, ``<layer>_classes[_N].tif``, and where it is (see
        ``layers.output_folder``)."""
        folder, where = output_folder(QgsProject.instance(), layer_file(layer) if layer is not None else None)
        name = layer.name() if layer is not None else "raster"
        return free_path(folder, f"{safe_stem(name)}_classes", ".tif"), where

    def _update_default_output(self, *_) -> None:
        layer = self.layer_combo.currentLayer()
        if layer is None:
            self.output_widget.lineEdit().setPlaceholderText("[beside the project, or beside the input raster]")
            return
        path, where = self.default_output_and_place(layer)
        self.output_widget.lineEdit().setPlaceholderText(f"[{path.name}, {where}]")

    # --- readout ------------------------------------------------------------------------------

    def update_fit(self) -> List[str]:
        """Refresh the "model expects / layer has" readout; returns the problems found."""
        try:
            bands = parse_bands(self.bands_edit.text())
        except LayerError as exc:
            bands, problems = None, [str(exc)]
        else:
            problems = []
        text, found = describe_fit(self.model_widget.filePath().strip(), self.layer_combo.currentLayer(), bands,
                                   self.input_scale_combo.currentData())
        problems += found
        if problems:
            text += "".join(f"<br><span style='color:#c0392b'>&#9888; {html.escape(p)}</span>" for p in problems)
        self.fit_label.setText(text or "Choose a SAR raster layer and a CWSAM model file.")
        needs_sam = needs_sam_checkpoint(self.model_widget.filePath().strip())
        self.sam_widget.setVisible(needs_sam)
        self.sam_label.setVisible(needs_sam)
        return problems

    # --- running ------------------------------------------------------------------------------

    def _fail(self, message: str, details: Optional[str] = None) -> None:
        self.status_label.setText(message)
        messages.warning(self.iface, message, details)

    def build_request(self) -> ClassifyRequest:
        """The request the current widgets describe; raises ``LayerError`` with what to fix."""
        layer = self.layer_combo.currentLayer()
        source = raster_source(layer)
        model = self.model_widget.filePath().strip()
        if not model:
            raise LayerError("no model file chosen: choose a CWSAM model file (e.g. one made in the Fine-tune tab)")
        if not os.path.isfile(model):
            raise LayerError(f"model file not found: {model}; choose an existing CWSAM model file")
        sam = self.sam_widget.filePath().strip()
        if sam and _self_contained(model):
            sam = ""  # a remembered SAM checkpoint of another model does not concern this one
        if sam and not os.path.isfile(sam):
            raise LayerError(f"SAM checkpoint not found: {sam}; choose the file or clear the field")
        output = self.output_widget.filePath().strip()
        output_path = Path(output) if output else self.default_output_and_place(layer)[0]
        if output_path.suffix.lower() not in (".tif", ".tiff"):
            output_path = output_path.with_name(output_path.name + ".tif")
        bounds = self.view_bounds(layer) if self.extent_combo.currentIndex() == EXTENT_VIEW else None
        return ClassifyRequest(
            source=source, output=output_path, model=Path(model), sam_checkpoint=Path(sam) if sam else None,
            tile_size=self.tile_spin.value() or None, overlap=self.overlap_spin.value(),
            batch_size=self.batch_spin.value(), device=self.device_combo.currentText(),
            confidence=output_path.with_name(output_path.stem + "_confidence.tif")
            if self.confidence_check.isChecked() else None,
            bounds=bounds, band_indexes=parse_bands(self.bands_edit.text()),
            input_scale=self.input_scale_combo.currentData() or "auto",
            polygons=output_path.with_name(output_path.stem + "_polygons.gpkg")
            if self.polygons_check.isChecked() else None,
        )

    def view_bounds(self, layer: QgsRasterLayer) -> Tuple[float, float, float, float]:
        """The map canvas extent in the layer's CRS (xmin, ymin, xmax, ymax)."""
        canvas = self.iface.mapCanvas()
        extent = canvas.extent()
        source_crs = canvas.mapSettings().destinationCrs()
        if source_crs.isValid() and layer.crs().isValid() and source_crs != layer.crs():
            transform = QgsCoordinateTransform(source_crs, layer.crs(), QgsProject.instance())
            extent = transform.transformBoundingBox(extent)
        if extent.isEmpty() or not extent.intersects(layer.extent()):
            raise LayerError(f"the map view does not show layer {layer.name()!r}: zoom to the layer or choose "
                             "Extent: Whole layer")
        return extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()

    def start(self) -> Optional[ClassifyTask]:
        """Start a classification task from the widgets; returns it, or None after showing why not."""
        if self.task is not None:
            self._fail("a classification is already running: wait for it or cancel it")
            return None
        from .. import dependencies

        model = self.model_widget.filePath().strip()
        missing = dependencies.missing_modules(dependencies.modules_for_model(model))
        if missing:
            full = model and not model.lower().endswith(".onnx") and set(missing) <= set(dependencies.FULL_ONLY)
            self._fail(f"CWSAM cannot import {', '.join(missing)}: "
                       + ("a .cwsam.pt model needs the full install with PyTorch (or use its ONNX export, .onnx); "
                          if full else "") + "see the Setup tab for the commands that fix it")
            return None
        try:
            request = self.build_request()
        except LayerError as exc:
            self._fail(str(exc))
            return None
        try:
            stat = request.model.stat()
            self._classes = _model_card(str(request.model), stat.st_mtime, stat.st_size).classes
        except Exception as exc:  # noqa: BLE001 - an unreadable model file is a message, not a traceback
            request.source.cleanup()
            self._fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None
        self._save_settings()
        self.summary.clear()
        self.status_label.setText(f"Classifying {request.source.layer_name}...")
        self.progress_bar.setValue(0)
        self.task = ClassifyTask(request, self._done)
        self.task.progressChanged.connect(self._progress)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def _progress(self, value: float) -> None:
        self.progress_bar.setValue(int(value))
        if self.task is not None and self.task.last_message:
            self.status_label.setText(f"Classifying: {self.task.last_message}")

    def cancel(self) -> None:
        if self.task is not None:
            self.status_label.setText("Cancelling...")
            self.task.cancel()

    def _done(self, outcome: ClassifyOutcome) -> None:
        """Main thread: add the layers, show the summary, or say what went wrong."""
        request = self.task.request if self.task is not None else None
        self.task = None
        self.last_outcome = outcome
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if outcome.cancelled:
            self.progress_bar.setValue(0)
            self.status_label.setText("Cancelled: nothing was written.")
            messages.info(self.iface, "classification cancelled; nothing was written")
            return
        if outcome.result is None:
            self._fail(for_the_plugin(outcome.error or "classification failed"), outcome.details)
            return
        result = outcome.result
        try:
            layer, _ = add_classification(result.output, self._classes, confidence=result.confidence)
        except LayerError as exc:
            self._fail(str(exc))
            return
        self.result_layer_ids = [layer.id()]
        polygons_note = self._add_polygons(outcome)
        self.progress_bar.setValue(100)
        self.status_label.setText(messages.breakable(f"Done in {result.seconds:.1f} s on {result.device}: layer "
                                                     f"{layer.name()}, file {result.output}{polygons_note}"))
        self.summary.setHtml(self.summary_html(result))
        for note in result.warnings:
            messages.log(for_the_plugin(note), Qgis.MessageLevel.Warning)
        if outcome.polygons_error:
            messages.warning(self.iface, f"Classified {request.source.layer_name} into {result.output.name}; "
                             f"{for_the_plugin(outcome.polygons_error)}", f"run record: {result.record}")
        else:
            messages.success(self.iface, f"Classified {request.source.layer_name} into {result.output.name}",
                             details=f"run record: {result.record}")
        self.classified.emit(layer.id())

    def _add_polygons(self, outcome: ClassifyOutcome) -> str:
        """Add the polygons written after the classification (in the "CWSAM" group, styled with the model's
        classes); returns the words the status line adds about them."""
        polygons = outcome.polygons
        if polygons is None:
            return f"; {for_the_plugin(outcome.polygons_error)}" if outcome.polygons_error else ""
        try:
            layer = add_polygons(polygons.output, self._classes, polygons.layer)
        except LayerError as exc:
            outcome.polygons_error = str(exc)
            return f"; {exc}"
        self.result_layer_ids.append(layer.id())
        for note in polygons.warnings:
            messages.log(for_the_plugin(note), Qgis.MessageLevel.Warning)
        return f"; {polygons.polygons:,} polygons in {polygons.output.name}"

    def summary_html(self, result) -> str:
        rows = "".join(
            f"<tr><td><span style='background:{colour}'>&nbsp;&nbsp;&nbsp;&nbsp;</span> {html.escape(name)}</td>"
            f"<td align='right'>{share:.1%}</td><td align='right'>{area}</td><td align='right'>{pixels:,}</td></tr>"
            for colour, name, pixels, share, area in area_summary(result, self._classes)
        )
        notes = "".join(f"<p style='color:#b36b00'>{html.escape(for_the_plugin(w))}</p>" for w in result.warnings)
        return ("<table width='100%' cellspacing='2'><tr><th align='left'>class</th><th>share</th><th>area</th>"
                f"<th>pixels</th></tr>{rows}</table>{notes}")

    # --- from the Fine-tune tab -----------------------------------------------------------------

    def offer_model(self, model_path: str, layer_id: str) -> None:
        """Prefill a freshly trained model and the layer it was trained on, ready to classify; the results
        of the previous model (status, area table) are cleared."""
        self.model_widget.setFilePath(model_path)
        layer = QgsProject.instance().mapLayer(layer_id)
        if layer is not None:
            self.layer_combo.setLayer(layer)
        if self.task is None:
            self.summary.clear()
            self.progress_bar.setValue(0)
        self.status_label.setText(f"New model {Path(model_path).name} is ready: click \"Classify SAR layer\".")
        self.update_fit()

    def shutdown(self) -> None:
        """Cancel a running task (the plugin is unloading): it ends without this panel, which may be gone."""
        task, self.task = self.task, None
        if task is not None:
            _DETACHED.add(task)  # held until it finishes (a task Python drops never finishes)
            task.on_done = lambda _outcome: _DETACHED.discard(task)
            task.cancel()
