"""The dock's Review tab and cwsam:retrain in real headless QGIS: classify, draw corrections, retrain,
the new version's map and summary, undo; and the refusals (one line, no version written)."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_helpers import CLASSES, cwsam_processing, write_labels, write_model, write_sar
from qgis.core import (
    QgsCategorizedSymbolRenderer, QgsCoordinateReferenceSystem, QgsEditFormConfig, QgsGeometry, QgsProcessingException,
    QgsProject, QgsRasterLayer, QgsRectangle, QgsVectorLayer, QgsVectorLayerUtils,
)
from qgis_interface import HeadlessInterface

from cwsam_core.common.paths import file_sha256
from cwsam_core.model.model_file import read_model_card

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMEOUT_MS = 120_000
ORIGIN = (500000.0, 4600000.0)  # write_sar's top-left corner, 10 m pixels, 96 x 80 px


@pytest.fixture
def dock(qgis_app, qtbot, tmp_path):
    """A dock on a fresh project: a SAR raster, a vit_nano model, the Classify tab set to write beside them."""
    from cwsam_qgis.dock import CwsamDock

    QgsProject.instance().clear()
    raster = QgsRasterLayer(str(write_sar(tmp_path / "sar.tif")), "sar")
    QgsProject.instance().addMapLayer(raster)
    model = write_model(tmp_path / "nano.cwsam.pt")
    dock = CwsamDock(HeadlessInterface())
    classify = dock.classify_panel
    classify.layer_combo.setLayer(raster)
    classify.model_widget.setFilePath(str(model))
    classify.output_widget.setFilePath(str(tmp_path / "sar_classes.tif"))
    classify.confidence_check.setChecked(False)
    classify.polygons_check.setChecked(False)
    classify.tile_spin.setValue(0)
    classify.extent_combo.setCurrentIndex(0)
    classify.device_combo.setCurrentText("cpu")
    review = dock.review_panel
    review.time_spin.setValue(0)  # off: a fixed number of steps
    review.steps_spin.setValue(3)
    yield dock, model
    dock.shutdown()
    qtbot.waitUntil(lambda: dock.review_panel.task is None and dock.classify_panel.task is None, timeout=TIMEOUT_MS)
    QgsProject.instance().clear()


def classify(dock, qtbot) -> QgsRasterLayer:
    assert dock.classify_panel.start() is not None
    qtbot.waitUntil(lambda: dock.classify_panel.task is None, timeout=TIMEOUT_MS)
    layer = QgsProject.instance().mapLayer(dock.classify_panel.result_layer_ids[0])
    assert layer is not None
    return layer


def draw(layer: QgsVectorLayer, col0: int, row0: int, col1: int, row1: int) -> None:
    """What the digitizing tool does: a feature with the layer's default values, added in edit mode."""
    rectangle = QgsRectangle(ORIGIN[0] + 10 * col0, ORIGIN[1] - 10 * row1, ORIGIN[0] + 10 * col1, ORIGIN[1] - 10 * row0)
    feature = QgsVectorLayerUtils.createFeature(layer, QgsGeometry.fromRect(rectangle), {},
                                                layer.createExpressionContext())
    assert layer.addFeature(feature)


def test_review_retrain_and_undo(dock, qtbot, tmp_path):
    dock, model = dock
    first_map = classify(dock, qtbot)
    panel = dock.review_panel
    # The Classify tab offered its map: the review knows its model (and the SHA-256 it classified with).
    assert panel.map_layer().id() == first_map.id()
    assert panel.reviewed.model == model and panel.reviewed.model_sha256 == file_sha256(model)
    assert [panel.class_combo.itemText(i) for i in range(panel.class_combo.count())] == [c.name for c in CLASSES]

    corrections = panel.start_review()
    assert corrections is not None and corrections.isEditable()
    assert Path(corrections.source().split("|")[0]) == tmp_path / "sar_classes_corrections.gpkg"
    renderer = corrections.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert [(c.value(), c.label()) for c in renderer.categories()] == [(c.value, c.name) for c in CLASSES] + [
        ("", "no class: choose Class to draw")]
    from qgis.core import QgsFeature, QgsRenderContext

    context = QgsRenderContext()
    renderer.startRender(context, corrections.fields())
    unclassed = QgsFeature(corrections.fields())  # a polygon of no class is drawn too, never invisible
    unclassed.setGeometry(QgsGeometry.fromRect(QgsRectangle(ORIGIN[0], ORIGIN[1] - 100, ORIGIN[0] + 100, ORIGIN[1])))
    assert renderer.symbolForFeature(unclassed, context) is not None
    unclassed.setAttribute("class", 5)
    assert renderer.symbolForFeature(unclassed, context).color().name() == [c.color for c in CLASSES if c.value == 5][0]
    renderer.stopRender(context)
    assert corrections.editFormConfig().suppress() == QgsEditFormConfig.SuppressOn
    panel.set_class_to_draw(5)
    draw(corrections, 10, 10, 40, 40)
    panel.set_class_to_draw(1)
    draw(corrections, 50, 30, 90, 70)
    assert [f["class"] for f in corrections.getFeatures()] == [5, 1]

    task = panel.retrain()
    assert task is not None and not panel.retrain_button.isEnabled() and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    outcome = panel.last_outcome
    assert outcome.error is None, outcome.error
    version = tmp_path / "nano.v2.cwsam.pt"
    assert outcome.retrained.model_path == version and version.is_file()
    card = read_model_card(version)
    assert card.provenance["parent"] == {"name": "nano.cwsam.pt", "sha256": file_sha256(model)}
    # The new map: beside the first, added to the project, now under review, with the new version's record.
    new_map = panel.map_layer()
    assert new_map.id() != first_map.id() and new_map.name() == "sar_classes_v2"
    assert Path(new_map.source()) == tmp_path / "sar_classes_v2.tif"
    assert QgsProject.instance().mapLayer(first_map.id()) is not None
    assert panel.reviewed.model == version
    # The summary: changed share and the area per class before and after.
    text = panel.summary.toPlainText()
    assert "nano.v2.cwsam.pt" in text and "Changed class" in text
    assert all(c.name in text for c in CLASSES) and "area before" in text and "area after" in text
    assert "Version 2" in panel.status_label.text() and "changed class" in panel.status_label.text()
    assert 0 <= outcome.change.changed <= 1 and outcome.change.pixels == 80 * 96

    # Undo: back to the first map and its model; the new version's files stay on disk.
    assert panel.undo_button.isEnabled()
    new_id = new_map.id()
    panel.undo()
    assert QgsProject.instance().mapLayer(new_id) is None
    assert panel.map_layer().id() == first_map.id() and panel.reviewed.model == model
    assert version.is_file() and not panel.undo_button.isEnabled()
    # The retraining settings are remembered.
    from cwsam_qgis.widgets.review_panel import ReviewPanel

    again = ReviewPanel(HeadlessInterface())
    assert again.time_spin.value() == 0 and again.steps_spin.value() == 3 and again.steps_spin.isEnabled()
    again.shutdown()


def test_refusals_are_one_line_and_write_no_version(dock, qtbot, tmp_path):
    dock, model = dock
    classify(dock, qtbot)
    panel = dock.review_panel
    corrections = panel.start_review()
    # An empty correction layer.
    assert panel.retrain() is None
    assert "the correction layer is empty" in panel.status_label.text()
    # Corrections outside the raster.
    draw(corrections, 500, 500, 520, 520)
    assert panel.retrain() is not None
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    assert "overlaps the image" in panel.status_label.text() and "\n" not in panel.status_label.text()
    # A class the model does not have (edited in the attribute table).
    corrections.deleteFeatures([f.id() for f in corrections.getFeatures()])
    panel.set_class_to_draw(2)
    draw(corrections, 10, 10, 40, 40)
    feature = next(corrections.getFeatures())
    corrections.changeAttributeValue(feature.id(), corrections.fields().lookupField("class"), 7)
    panel.retrain()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    assert "uses class(es) 7 that the model does not have" in panel.status_label.text()
    # The model file changed on disk since the map was classified.
    corrections.changeAttributeValue(feature.id(), corrections.fields().lookupField("class"), 2)
    write_model(model, seed=5)
    panel.retrain()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    assert "changed on disk since it was loaded" in panel.status_label.text()
    assert sorted(p.name for p in tmp_path.glob("nano*")) == ["nano.cwsam.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_retrain_algorithm_writes_the_next_version(qgis_app, tmp_path):
    raster = write_sar(tmp_path / "sar.tif")
    model = write_model(tmp_path / "lc.cwsam.pt")
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633&field=class:integer", "fixes", "memory")
    for value, (c0, r0, c1, r1) in ((5, (10, 10, 40, 40)), (2, (50, 30, 90, 70))):
        draw_feature = QgsVectorLayerUtils.createFeature(layer, QgsGeometry.fromRect(QgsRectangle(
            ORIGIN[0] + 10 * c0, ORIGIN[1] - 10 * r1, ORIGIN[0] + 10 * c1, ORIGIN[1] - 10 * r0)), {0: value})
        assert layer.dataProvider().addFeatures([draw_feature])
    assert layer.crs() == QgsCoordinateReferenceSystem("EPSG:32633")
    QgsProject.instance().addMapLayer(layer)
    try:
        with cwsam_processing() as processing:
            parameters = {"MODEL": str(model), "INPUT": str(raster), "CORRECTIONS": layer, "CLASS_FIELD": "class",
                          "TIME_BUDGET": 0, "STEPS": 2, "DEVICE": "cpu"}
            result = processing.run("cwsam:retrain", parameters)
            assert result["OUTPUT"] == str(tmp_path / "lc.v2.cwsam.pt") and result["VERSION"] == 2
            assert result["PARENT_SHA256"] == file_sha256(model)
            class_map = write_labels(tmp_path / "map.tif", raster)  # the model's classes 1, 2, 5 on the grid
            again = processing.run("cwsam:retrain", {**parameters, "MODEL": result["OUTPUT"], "MAP": str(class_map)})
            assert again["OUTPUT"] == str(tmp_path / "lc.v3.cwsam.pt")
            data = read_model_card(again["OUTPUT"]).provenance["data"]
            # The map outside the corrections replayed (and the export of the earlier round's corrections, still on disk).
            assert data[0]["role"] == "training" and {d["role"] for d in data[1:]} == {"replay"}
            assert data[-1]["labels"].endswith("anchor.tif")
            assert [p["name"] for p in read_model_card(again["OUTPUT"]).provenance["lineage"]] == [
                "lc.cwsam.pt", "lc.v2.cwsam.pt"]
            layer.dataProvider().changeAttributeValues({next(layer.getFeatures()).id(): {0: 9}})
            with pytest.raises(QgsProcessingException, match="uses class\\(es\\) 9 that the model does not have"):
                processing.run("cwsam:retrain", parameters)
            assert sorted(p.name for p in tmp_path.glob("lc*.cwsam.pt")) == [
                "lc.cwsam.pt", "lc.v2.cwsam.pt", "lc.v3.cwsam.pt"]
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_cancel_keeps_the_current_version(dock, qtbot, tmp_path):
    dock, model = dock
    first_map = classify(dock, qtbot)
    panel = dock.review_panel
    corrections = panel.start_review()
    draw(corrections, 10, 10, 40, 40)
    panel.steps_spin.setValue(100_000)
    task = panel.retrain()
    qtbot.waitUntil(lambda: task.progress() > 0, timeout=TIMEOUT_MS)  # training has started
    panel.cancel()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    assert panel.last_outcome.cancelled and panel.last_outcome.retrained is None
    assert "no version was written" in panel.status_label.text()
    assert panel.map_layer().id() == first_map.id() and panel.reviewed.model == model
    assert sorted(p.name for p in tmp_path.glob("nano*")) == ["nano.cwsam.pt"]
    assert not list(tmp_path.glob("sar_classes_v*"))


def test_the_map_view_is_classified_again_and_compared_where_both_maps_are(dock, qtbot, tmp_path):
    dock, model = dock
    classify(dock, qtbot)  # the whole raster: 96 x 80 px
    panel = dock.review_panel
    corrections = panel.start_review()
    draw(corrections, 10, 10, 40, 40)
    # The view: columns 20..60, rows 10..50 of the raster.
    dock.review_panel.iface.mapCanvas().setExtent(QgsRectangle(ORIGIN[0] + 200, ORIGIN[1] - 500, ORIGIN[0] + 600,
                                                               ORIGIN[1] - 100))
    panel.extent_combo.setCurrentIndex(1)
    panel.retrain()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    outcome = panel.last_outcome
    assert outcome.error is None, outcome.error
    extent = panel.map_layer().extent()  # the canvas keeps its aspect ratio: the view is as wide as the raster
    assert round(extent.height()) == 400 and round(extent.yMaximum()) == ORIGIN[1] - 100
    assert outcome.change.pixels == round(extent.width() / 10) * 40  # compared where both maps are


def test_two_maps_each_retrained_with_its_own_model_and_corrections(dock, qtbot, tmp_path):
    dock, model = dock
    map_a = classify(dock, qtbot)
    panel = dock.review_panel
    corrections_a = panel.start_review()
    panel.set_class_to_draw(5)
    draw(corrections_a, 10, 10, 40, 40)
    # A second map of another model: the Classify tab offers it to the review, which switches to it.
    other = write_model(tmp_path / "other.cwsam.pt", seed=1)
    dock.classify_panel.model_widget.setFilePath(str(other))
    dock.classify_panel.output_widget.setFilePath(str(tmp_path / "other_classes.tif"))
    map_b = classify(dock, qtbot)
    assert panel.map_layer().id() == map_b.id() and panel.reviewed.model == other
    assert panel.corrections is None and not panel.retrain_button.isEnabled()  # A's corrections are not B's
    assert panel.retrain() is None and "start the review" in panel.status_label.text()
    corrections_b = panel.start_review()
    assert corrections_b.id() != corrections_a.id()
    assert Path(corrections_b.source().split("|")[0]) == tmp_path / "other_classes_corrections.gpkg"
    panel.set_class_to_draw(1)
    draw(corrections_b, 50, 30, 90, 70)
    assert panel.retrain() is not None
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    outcome = panel.last_outcome
    assert outcome.error is None, outcome.error
    assert outcome.retrained.model_path == tmp_path / "other.v2.cwsam.pt"  # B's model, not A's
    assert read_model_card(outcome.retrained.model_path).provenance["parent"]["sha256"] == file_sha256(other)
    assert not (tmp_path / "nano.v2.cwsam.pt").exists()
    # Back to A: its own corrections again.
    panel.map_combo.setCurrentIndex(panel.map_combo.findData(map_a.id()))
    assert panel.reviewed.model == model and panel.corrections.id() == corrections_a.id()
    # A map whose model file is gone: said where the map is shown, and nothing to start or retrain.
    moved = model.rename(tmp_path / "moved_away.cwsam.pt")
    panel.map_combo.setCurrentIndex(panel.map_combo.findData(map_b.id()))
    panel.map_combo.setCurrentIndex(panel.map_combo.findData(map_a.id()))
    assert panel.reviewed is None and model.name in panel.map_label.text(), panel.map_label.text()
    assert not panel.start_button.isEnabled() and not panel.retrain_button.isEnabled()
    assert panel.retrain() is None and "cannot be retrained" in panel.status_label.text()
    assert model.name in panel.status_label.text()
    moved.rename(model)


def test_each_engine_line_of_a_retrain_is_logged_once(dock, qtbot, tmp_path):
    from qgis.core import QgsApplication

    logged = []
    QgsApplication.messageLog().messageReceived.connect(lambda text, tag, _level: logged.append((tag, text)))
    dock, _ = dock
    classify(dock, qtbot)
    panel = dock.review_panel
    draw(panel.start_review(), 10, 10, 40, 40)
    assert panel.retrain() is not None
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    assert panel.last_outcome.error is None, panel.last_outcome.error
    lines = [text for tag, text in logged if tag == "CWSAM"]
    replay = [text for text in lines if text.startswith("replay:")]
    assert replay and len(replay) == len(set(replay)), replay  # the dock's log had each of them twice
    assert len(lines) == len(set(lines)), lines
