"""The dock's Fine-tune tab and the "Fine-tune CWSAM from polygons" algorithm, in real headless QGIS.

The raster (EPSG:4326) holds a bright square (urban backscatter) in dark surroundings (water); the
training polygons are a memory layer in EPSG:3857, so the export and the reprojection are exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature, QgsGeometry, QgsPointXY,
    QgsProcessingException, QgsProcessingFeedback, QgsProject, QgsRasterLayer, QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QPushButton
from qgis_interface import HeadlessInterface
from rasterio.transform import from_origin

from cwsam_core.common.card import default_color
from cwsam_core.engine.inference import classify_file
from cwsam_core.model.model_file import read_model_card
from cwsam_core.simulate import SIMULATED_CLASSES, URBAN, WATER, render_backscatter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 192  # px: 2 x 2 training blocks of 128 px at tile 64
PIXEL = 1e-4  # degrees
ORIGIN = (12.0, 45.0)  # lon, lat of the top-left corner
# Training rectangles in pixels (row0, row1, col0, col1): water on both sides, urban in the middle.
RECTANGLES = [(WATER, "water", (0, SIZE, 0, 40)), (WATER, "water", (0, SIZE, 152, SIZE)),
              (URBAN, "urban", (56, 136, 56, 136))]


@pytest.fixture(scope="module")
def raster_path(tmp_path_factory) -> Path:
    labels = np.full((SIZE, SIZE), WATER, dtype=np.uint8)
    labels[48:144, 48:144] = URBAN
    vv, vh = render_backscatter(labels, SIMULATED_CLASSES, looks=4.0, rng=3)
    path = tmp_path_factory.mktemp("train-plugin") / "sar.tif"
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=2, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(*ORIGIN, PIXEL, PIXEL)) as dst:
        dst.write(np.stack([vv, vh]))
        dst.set_band_description(1, "VV")
        dst.set_band_description(2, "VH")
    return path


def _pixel_to_3857(points):
    to_3857 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"),
                                     QgsCoordinateReferenceSystem("EPSG:3857"), QgsProject.instance())
    return [to_3857.transform(QgsPointXY(ORIGIN[0] + col * PIXEL, ORIGIN[1] - row * PIXEL)) for row, col in points]


def polygon_layer(offset_deg: float = 0.0, geometry: str = "Polygon") -> QgsVectorLayer:
    """A memory layer in EPSG:3857 of the training rectangles (moved east by ``offset_deg``)."""
    layer = QgsVectorLayer(f"{geometry}?crs=EPSG:3857&field=cls:integer&field=name:string", "training", "memory")
    features = []
    for value, name, (r0, r1, c0, c1) in RECTANGLES:
        corners = _pixel_to_3857([(r0, c0), (r0, c1), (r1, c1), (r1, c0)])
        shift = offset_deg / PIXEL
        if shift:
            corners = _pixel_to_3857([(r0, c0 + shift), (r0, c1 + shift), (r1, c1 + shift), (r1, c0 + shift)])
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPolygonXY([corners]) if geometry == "Polygon"
                            else QgsGeometry.fromPointXY(corners[0]))
        feature.setAttributes([value, name])
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    return layer


@pytest.fixture
def project_layers(qgis_app, raster_path):
    raster = QgsRasterLayer(str(raster_path), "sar", "gdal")
    polygons = polygon_layer()
    assert raster.isValid() and polygons.isValid()
    QgsProject.instance().addMapLayers([raster, polygons])
    yield raster, polygons
    QgsProject.instance().removeAllMapLayers()


@pytest.fixture
def panel(qgis_app, project_layers, tmp_path):
    """The Fine-tune tab of a real dock, set for a short vit_nano run on the test raster and polygons."""
    from cwsam_qgis.dock import CwsamDock

    raster, polygons = project_layers
    iface = HeadlessInterface()
    dock = CwsamDock(iface)
    widget = dock.train_panel
    widget.raster_combo.setLayer(raster)
    widget.polygon_combo.setLayer(polygons)
    widget.field_combo.setField("cls")
    widget.backbone_combo.setCurrentIndex(widget.backbone_combo.findData("vit_nano"))
    widget.time_spin.setValue(0)  # off: train by epochs (a fixed number of steps)
    assert widget.time_budget() is None and widget.epochs_spin.isEnabled()
    widget.epochs_spin.setValue(3)
    widget.steps_spin.setValue(8)
    widget.batch_spin.setValue(4)
    widget.lr_spin.setValue(3e-2)  # a tiny model from scratch: a high rate learns in a few steps
    widget.val_spin.setValue(0.25)
    widget.tile_spin.setValue(64)
    widget.device_combo.setCurrentText("cpu")
    widget.output_widget.setFilePath(str(tmp_path / "model.cwsam.pt"))
    yield widget
    if widget.task is not None:  # never leave a run behind for the next test
        widget.task.cancel()


def _pixels_inside_rectangles(raster_path: Path, classes_path: Path) -> tuple:
    with rasterio.open(classes_path) as src:
        predicted = src.read(1)
    right = total = 0
    for value, _, (r0, r1, c0, c1) in RECTANGLES:
        right += int((predicted[r0:r1, c0:c1] == value).sum())
        total += (r1 - r0) * (c1 - c0)
    return right, total


def test_train_on_memory_polygons_in_another_crs_then_classify(qtbot, panel, project_layers, raster_path, tmp_path):
    raster, _ = project_layers
    table = panel.class_table
    assert table.rowCount() == 2
    assert [table.item(r, 1).text() for r in range(2)] == [str(WATER), str(URBAN)]
    # The user names and colours the classes; an integer field keeps its values.
    table.item(0, 3).setText("open water")
    table.cellWidget(1, 4).setColor(QColor("#ff0000"))
    assert not table.item(0, 2).flags() & Qt.ItemIsEditable and table.item(0, 3).flags() & Qt.ItemIsEditable

    losses, mious = [], []
    with qtbot.waitSignal(panel.training_finished, timeout=90_000) as finished:
        assert panel.start_training(), panel.last_message
        panel.task.step_done.connect(lambda *a: losses.append(a[-1]))
        panel.task.epoch_done.connect(lambda *a: mious.append(a[2]))
    outcome = finished.args[0]
    assert outcome.error is None and not outcome.cancelled, outcome.error
    model = tmp_path / "model.cwsam.pt"
    assert outcome.model_path == model and model.is_file()
    assert len(losses) == 3 * 8 and len(mious) == 3
    assert len(panel.plot.loss_points) == 3 * 8 and len(panel.plot.miou_points) == 3
    assert panel.progress_bar.value() == 100 and "best validation mIoU" in panel.last_message
    assert panel.status_label.text().replace("\u200b", "") == panel.last_message
    assert "lr" in read_model_card(model).provenance and read_model_card(model).provenance["lr"] == 3e-2

    card = read_model_card(model)
    assert [(c.value, c.name, c.color) for c in card.classes] == [
        (WATER, "open water", default_color(0)), (URBAN, f"class {URBAN}", "#ff0000")]
    assert card.input_size == 64
    # The memory layer went through a temporary GeoPackage, removed once the task ended.
    assert not list(Path(outcome.result.model_path).parent.glob("*.gpkg"))

    result = classify_file(raster_path, tmp_path / "classes.tif", model, device="cpu")
    assert set(result.pixel_counts) <= {WATER, URBAN}
    right, total = _pixels_inside_rectangles(raster_path, tmp_path / "classes.tif")
    assert right / total > 0.8, f"{right} of {total} labelled pixels right"

    # The offer to classify (message bar and tab) classifies the raster with the new model in the Classify tab.
    assert panel.classify_button.text() == "Classify sar with this model"
    (item,) = [i for i in panel.iface.messageBar().items() if i.title() == "CWSAM"]
    assert "best validation mIoU" in item.text()
    (offer,) = [b for b in item.findChildren(QPushButton) if b.text() == "Classify sar with this model"]
    from cwsam_qgis.dock import CwsamDock

    dock = panel.iface.mainWindow().findChild(CwsamDock)
    classify = dock.classify_panel
    classify.device_combo.setCurrentText("cpu")
    classify.output_widget.setFilePath(str(tmp_path / "offered.tif"))
    with qtbot.waitSignal(panel.model_trained, timeout=1000) as offered:
        offer.click()
    assert offered.args == [str(model), raster.id()]
    assert dock.tabs.currentWidget() is classify
    assert classify.model_widget.filePath() == str(model)
    assert classify.layer_combo.currentLayer() is raster
    assert classify.task is not None, classify.status_label.text()
    qtbot.waitUntil(lambda: classify.task is None, timeout=30_000)
    assert classify.last_outcome.result is not None, classify.last_outcome.error
    assert [lyr.name() for lyr in QgsProject.instance().mapLayers().values() if lyr.name() == "offered"]
    assert len([i for i in panel.iface.messageBar().items() if i.title() == "CWSAM"]) == 1


def test_cancel_keeps_the_best_model_so_far(qtbot, panel, tmp_path):
    panel.epochs_spin.setValue(20)
    with qtbot.waitSignal(panel.training_finished, timeout=60_000) as finished:
        assert panel.start_training(), panel.last_message
        panel.task.epoch_done.connect(lambda *a: panel.cancel_training())
    outcome = finished.args[0]
    assert outcome.cancelled and outcome.error is None
    history = outcome.result.history
    assert 1 <= len(history) < 20
    card = read_model_card(tmp_path / "model.cwsam.pt")  # a whole, readable model file
    assert card.provenance["epoch"] == outcome.result.best_epoch
    assert "cancelled" in panel.last_message and panel.train_button.isEnabled()
    assert 0 < panel.progress_bar.value() < 100  # where the run stopped, never 100 % after Cancel
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.cwsam.pt", "model.cwsam.pt.log.csv", "model.cwsam.pt.state.pt"]


def test_cancel_before_the_first_epoch_leaves_no_file(qtbot, panel, tmp_path):
    with qtbot.waitSignal(panel.training_finished, timeout=60_000) as finished:
        assert panel.start_training(), panel.last_message
        panel.cancel_training()
    outcome = finished.args[0]
    assert outcome.cancelled and outcome.result is None and outcome.error is None
    assert "no model was written" in panel.last_message
    assert list(tmp_path.iterdir()) == []


def test_polygons_without_overlap_give_a_message(qtbot, panel, tmp_path):
    far = polygon_layer(offset_deg=1.0)
    QgsProject.instance().addMapLayer(far)
    panel.polygon_combo.setLayer(far)
    panel.field_combo.setField("cls")
    assert not panel.start_training()
    assert panel.task is None and "overlaps the raster sar" in panel.last_message
    bar_items = panel.iface.messageBar().items()
    assert bar_items and "overlaps" in bar_items[-1].text()
    assert list(tmp_path.iterdir()) == []


def test_only_polygon_layers_are_offered_and_classes_follow_the_field(panel, project_layers, tmp_path):
    from cwsam_qgis import settings
    from cwsam_qgis.widgets.train_panel import KEY_OUTPUT_FOLDER

    raster, polygons = project_layers
    points = polygon_layer(geometry="Point")
    QgsProject.instance().addMapLayer(points)
    offered = [panel.polygon_combo.layer(i) for i in range(panel.polygon_combo.count())]
    assert polygons in offered and points not in offered
    # A text field: names are the texts (how the core matches them), values are free.
    panel.field_combo.setField("name")
    table = panel.class_table
    assert [table.item(r, 3).text() for r in range(table.rowCount())] == ["urban", "water"]
    assert [table.item(r, 2).data(Qt.EditRole) for r in range(table.rowCount())] == [0, 1]
    assert table.item(0, 2).flags() & Qt.ItemIsEditable and not table.item(0, 3).flags() & Qt.ItemIsEditable
    table.item(1, 0).setCheckState(Qt.Unchecked)
    assert [c.name for c in panel.classes()] == ["urban"]
    assert not panel.start_training() and "at least two classes" in panel.last_message
    # Without an output file the model goes to a free name beside the raster (not the last output folder).
    settings.set_value(KEY_OUTPUT_FOLDER, str(tmp_path))
    folder = Path(raster.source()).parent
    first = panel.default_output(raster)
    assert first == folder / "sar_cwsam.cwsam.pt"
    first.write_bytes(b"an earlier model")
    try:
        assert panel.default_output(raster) == folder / "sar_cwsam_2.cwsam.pt"
    finally:
        first.unlink()


def test_processing_algorithm_trains_from_a_memory_layer(qgis_app, project_layers, tmp_path):
    from plugin_helpers import cwsam_processing

    raster, polygons = project_layers
    # One more polygon, of a class left out of the class list: ignored, with a warning in the feedback.
    marsh = QgsFeature(polygons.fields())
    marsh.setGeometry(QgsGeometry.fromPolygonXY([_pixel_to_3857([(150, 60), (150, 80), (170, 80), (170, 60)])]))
    marsh.setAttributes([9, "marsh"])
    assert polygons.dataProvider().addFeatures([marsh])

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.warnings = []

        def pushWarning(self, warning):  # noqa: N802
            self.warnings.append(warning)

    feedback = Feedback()
    output = tmp_path / "processing.cwsam.pt"
    with cwsam_processing() as processing:
        result = processing.run("cwsam:train", {
            "INPUT": raster, "POLYGONS": polygons, "CLASS_FIELD": "name", "CLASSES": "0:urban,1:water:#0000ff",
            "BACKBONE": "vit_nano", "EPOCHS": 2, "STEPS_PER_EPOCH": 6, "BATCH_SIZE": 4, "LEARNING_RATE": 3e-2,
            "VAL_FRACTION": 0.25, "TILE_SIZE": 64, "DEVICE": "cpu", "OUTPUT": str(output),
        }, feedback=feedback)
        # No overlap: a Processing error with the message, and no file.
        with pytest.raises(QgsProcessingException, match="overlaps the raster"):
            processing.run("cwsam:train", {"INPUT": raster, "POLYGONS": polygon_layer(offset_deg=1.0),
                                           "CLASS_FIELD": "cls", "OUTPUT": str(tmp_path / "none.cwsam.pt")})
    assert not (tmp_path / "none.cwsam.pt").exists()
    assert Path(result["OUTPUT"]) == output and output.is_file()
    assert 0 <= result["BEST_MIOU"] <= 1 and result["BEST_EPOCH"] in (1, 2)
    card = read_model_card(output)
    assert [(c.value, c.name, c.color) for c in card.classes] == [(0, "urban", default_color(0)),
                                                                  (1, "water", "#0000ff")]
    assert any("marsh" in w and "ignored" in w for w in feedback.warnings), feedback.warnings


def test_polygon_files_the_core_reads(qgis_app, tmp_path):
    from qgis.core import QgsVectorFileWriter

    from cwsam_qgis.polygon_source import PolygonSourceError, field_values, plain_file, polygon_file

    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", "labels"
    path = tmp_path / "labels.gpkg"
    context = QgsProject.instance().transformContext()
    error = QgsVectorFileWriter.writeAsVectorFormatV3(polygon_layer(), str(path), context, options)[0]
    assert error == QgsVectorFileWriter.NoError
    on_disk = QgsVectorLayer(f"{path}|layername=labels", "labels", "ogr")
    own = polygon_file(on_disk, "cls")
    assert (own.path, own.layer, own.temporary) == (path, "labels", False)
    own.remove()
    assert path.is_file()  # a user's file is never deleted
    # A filtered layer is not the file as it stands: its visible features are exported.
    on_disk.setSubsetString("cls = 4")
    assert plain_file(on_disk) is None
    exported = polygon_file(on_disk, "cls")
    assert exported.temporary and exported.path != path
    again = QgsVectorLayer(f"{exported.path}|layername={exported.layer}", "again", "ogr")
    assert again.crs().authid() == "EPSG:3857" and again.featureCount() == 1
    assert [f.name() for f in again.fields()][-1] == "cls"
    exported.remove()
    assert not exported.path.exists() and not exported.path.parent.exists()
    # Real numbers are class values only when whole.
    reals = QgsVectorLayer("Polygon?crs=EPSG:4326&field=code:double", "reals", "memory")
    feature = QgsFeature(reals.fields())
    feature.setAttributes([2.5])
    reals.dataProvider().addFeatures([feature])
    with pytest.raises(PolygonSourceError, match="not a whole number"):
        field_values(reals, "code")
    with pytest.raises(PolygonSourceError, match="has no field 'nope'"):
        polygon_file(reals, "nope")


def test_training_time_learning_rate_scales_and_bands_reach_the_engine(qtbot, panel, tmp_path):
    """A run by time: the progress follows the engine's "fraction", the epochs are an estimate, and the
    dock's fields (auto learning rate, scales, bands) are what the engine got."""
    panel.time_spin.setValue(0.1)  # 6 s
    assert not panel.epochs_spin.isEnabled()
    panel.lr_spin.setValue(0)  # auto
    assert panel.learning_rate() is None and panel.lr_spin.text() == "auto (0.001)"
    panel.input_scale_combo.setCurrentIndex(panel.input_scale_combo.findData("db"))
    panel.model_scale_combo.setCurrentIndex(panel.model_scale_combo.findData("linear"))
    panel.bands_edit.setText("2,1")
    fractions, logged = [], []
    QgsApplication.messageLog().messageReceived.connect(lambda text, tag, _level: logged.append((tag, text)))
    with qtbot.waitSignal(panel.training_finished, timeout=90_000) as finished:
        assert panel.start_training(), panel.last_message
        assert "for 0.1 min" in panel.last_message
        job = panel.task.job
        assert job.config.time_budget == 0.1 and job.config.lr is None and job.config.band_indexes == [2, 1]
        assert (job.config.input_scale, job.config.model_scale) == ("db", "linear")
        panel.task.fraction_done.connect(fractions.append)
    outcome = finished.args[0]
    assert outcome.error is None, outcome.error
    assert fractions and fractions == sorted(fractions) and 0 < fractions[-1] <= 1
    assert panel.progress_bar.value() == 100
    card = read_model_card(outcome.model_path)
    assert card.bands == ["VH", "VV"] and card.input_scale == "linear"
    assert card.provenance["lr"] == pytest.approx(1e-3) and card.provenance["time_budget"] == 0.1
    epochs = [text for tag, text in logged if tag == "CWSAM" and text.startswith("epoch ")]
    assert epochs and all(" of about " in text and "(0.1 min of training)" in text for text in epochs), epochs


def test_tile_size_is_fitted_to_a_small_raster_and_said(panel, project_layers):
    from cwsam_qgis.widgets.train_panel import fit_tile

    assert fit_tile(0, 256, 512, 512) == (256, "")
    tile, note = fit_tile(0, 1024, 512, 700)
    assert tile == 512 and "instead of the backbone's 1024 px" in note and "512 x 700 px" in note
    assert fit_tile(256, 256, 200, 150)[0] == 144 and fit_tile(0, 256, 40, 40)[0] == 64
    panel.tile_spin.setValue(256)  # larger than the 192 px raster
    job, raster, adjusted = panel._prepare()
    try:
        assert job.config.tile_size == 192 and raster is project_layers[0]
        assert adjusted == ["Tile size 192 px instead of 256 px: the raster is 192 x 192 px (a tile larger than "
                            "the raster would be mostly padding)."]
    finally:
        job.remove_temporary_files()
    panel.tile_spin.setValue(0)  # the backbone's own (vit_nano: 128 px) fits: nothing adjusted
    job, _, adjusted = panel._prepare()
    job.remove_temporary_files()
    assert job.config.tile_size == 128 and adjusted == []


def test_messages_name_the_dock_fields_and_stay_one(qgis_app, panel, project_layers):
    from cwsam_qgis import messages
    from cwsam_qgis.tasks.train_task import TrainOutcome, describe_outcome

    assert messages.for_the_dock("set the input scale explicitly, e.g. --input-scale db") == \
        "set the input scale explicitly, e.g. Input scale: dB"
    assert messages.for_the_dock("no CUDA GPU is available: use --device auto or cpu") == \
        "no CUDA GPU is available: choose Device: auto or cpu"
    assert messages.for_the_dock("choose them with --bands (e.g. --bands 2,1)") == "choose them in Bands (e.g. Bands 2,1)"
    assert messages.for_the_dock("choose others with the bands option") == "choose others in Bands"
    assert messages.for_the_dock("the training time (--time-budget 0.1) is short") == \
        "the training time (Training time: 0.1) is short"
    assert "--" not in describe_outcome(TrainOutcome(error="bad scale: use --model-scale amplitude"))
    # One CWSAM item in the message bar at a time; the status line forgets the previous inputs.
    bar = panel.iface.messageBar()
    panel.tile_spin.setValue(40)
    assert not panel.start_training() and "multiple of 16" in panel.last_message
    panel.tile_spin.setValue(64)
    panel.polygon_combo.setLayer(None)
    assert not panel.start_training() and "Choose a polygon layer" in panel.last_message
    assert [i.text() for i in bar.items() if i.title() == "CWSAM"] == [panel.last_message]
    assert panel.status_label.text()
    panel.polygon_combo.setLayer(project_layers[1])
    assert panel.status_label.text() == "" and panel.field_combo.currentField() == "name"


def test_processing_trains_for_a_time(qgis_app, project_layers, tmp_path):
    from plugin_helpers import cwsam_processing

    raster, polygons = project_layers
    progress, infos = [], []

    class Feedback(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802
            infos.append(info)

    feedback = Feedback()
    feedback.progressChanged.connect(progress.append)
    output = tmp_path / "timed.cwsam.pt"
    with cwsam_processing() as processing:
        result = processing.run("cwsam:train", {
            "INPUT": raster, "POLYGONS": polygons, "CLASS_FIELD": "cls", "BACKBONE": "vit_nano",
            "TIME_BUDGET": 0.05, "STEPS_PER_EPOCH": 4, "BATCH_SIZE": 4, "VAL_FRACTION": 0.25, "TILE_SIZE": 64,
            "INPUT_SCALE": "db", "DEVICE": "cpu", "OUTPUT": str(output),
        }, feedback=feedback)
        with pytest.raises(QgsProcessingException, match="Bands takes"):
            processing.run("cwsam:train", {"INPUT": raster, "POLYGONS": polygons, "CLASS_FIELD": "cls",
                                           "BANDS": "VV", "OUTPUT": str(tmp_path / "none.cwsam.pt")})
    assert Path(result["OUTPUT"]) == output and output.is_file()
    card = read_model_card(output)
    assert card.provenance["time_budget"] == 0.05 and card.provenance["lr"] == pytest.approx(1e-3)
    assert progress and max(progress) == pytest.approx(100.0) and progress == sorted(progress)
    assert any("of about" in line for line in infos), infos


def test_engine_notes_reach_the_dock_in_its_words(qgis_app, panel):
    """The engine's information and warnings go to the log panel; its warnings (what it adjusted, what it left
    out), worded for the dock, to the tab's notes too."""
    import logging

    from cwsam_qgis.tasks.engine_jobs import engine_job
    from cwsam_qgis.tasks.train_task import TrainingJob, TrainTask

    received = []  # the worker forwards the engine's information and warnings, not its debug lines
    engine_job("check", {"modules": ["numpy"]}, log=lambda level, message: received.append((level, message)))
    assert all(level >= logging.INFO for level, _ in received)
    task = TrainTask(TrainingJob([], None))
    task.note.connect(panel._add_note)
    task._log(logging.WARNING, "sar.tif has 4 bands: choose others with the bands option")
    task._log(logging.INFO, "per-pixel classifier learnt from labelled pixels: water 10")  # the log's only
    assert panel.notes == ["sar.tif has 4 bands: choose others in Bands"]
    assert panel.notes_label.isVisibleTo(panel) and "in Bands" in panel.notes_label.text()
    panel.field_combo.setField("name")  # new inputs: the notes about the previous ones go
    assert panel.notes == [] and not panel.notes_label.isVisibleTo(panel)


def test_the_sam_checkpoint_field_shows_only_for_backbones_built_on_sam(panel):
    for name, shown in (("vit_tiny", False), ("vit_b", True), ("vit_tiny", False)):
        panel.backbone_combo.setCurrentIndex(panel.backbone_combo.findData(name))
        assert panel.sam_widget.isVisibleTo(panel) is shown and panel.sam_label.isVisibleTo(panel) is shown, name


def test_a_class_map_chosen_as_the_image_is_refused_in_words(qtbot, panel, raster_path, tmp_path):
    labels = tmp_path / "labels.tif"  # one band of class values on the image's grid, a colour table and names
    with rasterio.open(raster_path) as source:
        profile = {**source.profile, "count": 1, "dtype": "uint8"}
    with rasterio.open(labels, "w", **profile) as dst:
        dst.write(np.full((1, SIZE, SIZE), WATER, dtype=np.uint8))
        dst.write_colormap(1, {WATER: (0, 0, 255, 255), URBAN: (255, 0, 0, 255)})
        dst.update_tags(1, **{f"class_{WATER}": "water", f"class_{URBAN}": "urban"})
    layer = QgsRasterLayer(str(labels), "labels", "gdal")
    QgsProject.instance().addMapLayer(layer)
    panel.raster_combo.setLayer(layer)
    panel.output_widget.setFilePath(str(tmp_path / "model.cwsam.pt"))
    with qtbot.waitSignal(panel.training_finished, timeout=120_000) as finished:
        assert panel.start_training(), panel.last_message
    outcome = finished.args[0]
    assert outcome.result is None and "labels.tif is a class map" in (outcome.error or ""), outcome.error
    assert "not a SAR image" in panel.last_message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]  # no model, log or state file
    labels = [panel.backbone_combo.itemText(i) for i in range(panel.backbone_combo.count())]
    assert all(": " in label for label in labels), labels  # each backbone says what it is for, vit_nano too
    assert any(label.startswith("vit_nano: ") and "not for real maps" in label for label in labels)


def test_text_classes_are_numbered_as_a_reference_map_names_them(qgis_app, panel, project_layers, raster_path,
                                                                 tmp_path):
    raster, _ = project_layers
    panel.field_combo.setField("name")
    alphabetical = {c.name: c.value for c in panel.classes()}
    assert alphabetical == {"urban": 0, "water": 1}
    reference = tmp_path / "reference.tif"  # numbers and colours of its own, named in its band tags
    with rasterio.open(raster_path) as source:
        profile = {**source.profile, "count": 1, "dtype": "uint8"}
    with rasterio.open(reference, "w", **profile) as dst:
        dst.write(np.full((1, SIZE, SIZE), 4, dtype=np.uint8))
        dst.write_colormap(1, {4: (0, 0, 255, 255), 9: (255, 0, 0, 255)})
        dst.update_tags(1, class_4="Water", class_9="urban", class_2="forest")
    layer = QgsRasterLayer(str(reference), "reference", "gdal")
    QgsProject.instance().addMapLayer(layer)
    panel.reference_combo.setLayer(layer)
    assert [(c.name, c.value, c.color) for c in panel.classes()] == [("urban", 9, "#ff0000"), ("water", 4, "#0000ff")]
    assert any(note.startswith("Numbered as reference (its band tags)") for note in panel.notes), panel.notes
    panel.reference_combo.setLayer(raster)  # a SAR raster names no classes: said, and numbered alphabetically
    assert {c.name: c.value for c in panel.classes()} == alphabetical
    assert any("names no classes" in note for note in panel.notes), panel.notes
    panel.reference_combo.setLayer(None)
    assert {c.name: c.value for c in panel.classes()} == alphabetical and panel.notes == []
