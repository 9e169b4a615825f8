"""The dock as a new user meets it, in real headless QGIS: the bundled scene and labels, every default.

A newcomer opens the CWSAM dock, adds ``resources/demo/scene.tif`` and ``resources/demo/labels.gpkg``
(a GeoPackage whose first field is its ``fid`` primary key, then the text field ``landcover``), and
clicks Train in the Fine-tune tab touching nothing but a short training time, then "Classify scene
with this model". Everything else is the dock's own choice: class field, classes and colours, backbone
(vit_tiny), tile size, learning rate, scales, validation, device, output files. Also: how the class
field is chosen, class colours from names, and where outputs go by default.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from plugin_helpers import load_plugin, write_sar
from qgis.core import (
    QgsFeature, QgsField, QgsGeometry, QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer, QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtWidgets import QPushButton

from cwsam_core.model.backbones import BACKBONES
from cwsam_core.model.model_file import read_model_card

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"
TILE = BACKBONES["vit_tiny"].default_input_size  # the 512 px scene fits it: nothing to adjust
TRAIN_TIMEOUT_MS = 240_000
CLASSIFY_TIMEOUT_MS = 60_000
# The usual map colours of the demo's class names (polygon_source.CLASS_COLOURS).
NAME_COLOURS = {"bare soil": "#c8a064", "cropland": "#f0e442", "forest": "#1b7837", "urban": "#d7191c",
                "water": "#1f78b4"}

pytestmark = [
    pytest.mark.skipif(not (DEMO / "scene.tif").is_file() or not (DEMO / "labels.gpkg").is_file(),
                       reason="the demo scene or labels are absent (make demo-model, tools/make_demo_labels.py)"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture
def fresh_settings():
    """The plugin's settings as on a first start (earlier tests may have stored some)."""
    from qgis.core import QgsSettings

    QgsSettings().remove("cwsam")
    yield
    QgsSettings().remove("cwsam")


@pytest.fixture
def demo_copy(tmp_path) -> Path:
    """The demo scene and labels in a folder of their own: default outputs go beside them, not into the
    repository."""
    for name in ("scene.tif", "labels.gpkg"):
        shutil.copy(DEMO / name, tmp_path / name)
    return tmp_path


def cwsam_bar_items(iface) -> list:
    return [item for item in iface.messageBar().items() if item.title() == "CWSAM"]


def test_every_default_on_the_demo_scene_then_classify(qgis_app, qtbot, fresh_settings, demo_copy):
    iface, plugin = load_plugin()
    dock = plugin.dock
    try:
        train = dock.train_panel
        dock.tabs.setCurrentWidget(train)
        # The user adds the scene and the labels as QGIS does (Layer > Add Layer), with the dock open.
        scene = QgsRasterLayer(str(demo_copy / "scene.tif"), "scene", "gdal")
        labels = QgsVectorLayer(f"{demo_copy / 'labels.gpkg'}|layername=labels", "labels", "ogr")
        assert scene.isValid() and labels.isValid()
        assert [f.name() for f in labels.fields()] == ["fid", "landcover"]
        QgsProject.instance().addMapLayers([scene, labels])

        # What the dock chose by itself.
        assert train.raster_combo.currentLayer() is scene
        assert train.polygon_combo.currentLayer() is labels
        assert train.field_combo.currentField() == "landcover"  # the text field, not the fid
        table = train.class_table
        rows = {table.item(r, 3).text(): table.cellWidget(r, 4).color().name() for r in range(table.rowCount())}
        assert rows == NAME_COLOURS
        assert train.backbone() == "vit_tiny" and train.time_budget() == 10.0 and train.learning_rate() is None
        assert train.lr_spin.text().startswith("auto (0.001")
        assert train.device_combo.currentText() == "auto" and train.tile_spin.value() == 0
        assert train.input_scale_combo.currentData() == "auto" and train.model_scale_combo.currentData() == "auto"
        default_model = demo_copy / "scene_cwsam.cwsam.pt"
        note = train.output_note.text().replace("\u200b", "")  # the label may break the path after a "/"
        assert "beside the input raster" in note and str(default_model) in note

        train.time_spin.setValue(0.2)  # the only setting touched: a short run for the test
        with qtbot.waitSignal(train.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
            assert train.start_training(), train.last_message
            assert "for 0.2 min" in train.last_message and f"tiles of {TILE} px" in train.last_message
            assert not train.notes  # nothing to adjust before the run: the scene is larger than a tile
        outcome = finished.args[0]
        assert outcome.error is None and not outcome.cancelled, outcome.error
        assert outcome.model_path == default_model
        assert outcome.result.best_epoch >= 1, train.notes  # the 512 px scene got a validation part
        assert train.progress_bar.value() == 100
        assert "best validation mIoU" in train.status_label.text()
        # Whatever the engine adjusted to the scene or warned about is said in the dock, not only in the log.
        assert train.notes_label.isVisibleTo(train) == bool(train.notes)
        card = read_model_card(default_model)
        assert [(c.name, c.color) for c in card.classes] == list(NAME_COLOURS.items())
        assert card.input_size == TILE and card.bands == ["VV", "VH"] and card.input_scale == "db"
        assert card.provenance["lr"] == pytest.approx(1e-3) and card.provenance["time_budget"] == 0.2

        # One CWSAM item in the message bar: the offer, with its button.
        (item,) = cwsam_bar_items(iface)
        assert "Fine-tuning done" in item.text()
        assert ("in the Fine-tune tab" in item.text()) == bool(train.notes)
        (offer,) = [b for b in item.findChildren(QPushButton) if b.text() == "Classify scene with this model"]
        classify = dock.classify_panel
        classify.summary.setHtml("<p>stale table of an earlier model</p>")
        offer.click()  # classifies at once, in the Classify tab
        assert dock.tabs.currentWidget() is classify
        assert classify.task is not None, classify.status_label.text()
        assert "stale" not in classify.summary.toPlainText()
        qtbot.waitUntil(lambda: classify.task is None, timeout=CLASSIFY_TIMEOUT_MS)
        result = classify.last_outcome.result
        assert result is not None, classify.last_outcome.error
        assert result.output == demo_copy / "scene_classes.tif"  # beside the input, named after it

        # The styled layer, named after its file, in the CWSAM group, and left out of the inputs.
        (layer,) = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.name() == "scene_classes"]
        assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
        assert [(c.label, c.color.name()) for c in layer.renderer().classes()] == list(NAME_COLOURS.items())
        offered = [classify.layer_combo.layer(i) for i in range(classify.layer_combo.count())]
        assert scene in offered and layer not in offered
        assert layer not in [train.raster_combo.layer(i) for i in range(train.raster_combo.count())]

        # The area table: every class the map holds, one unit for all.
        text = classify.summary.toPlainText()
        assert sum(name in text for name in NAME_COLOURS) >= 3
        assert "ha" in text and "km²" not in text
        # Exactly one CWSAM message at the end: the classification's.
        (item,) = cwsam_bar_items(iface)
        assert "Classified scene" in item.text()
    finally:
        plugin.unload()
        QgsProject.instance().clear()


def memory_polygons(fields: list, rows: list, name: str = "polygons") -> QgsVectorLayer:
    """A memory polygon layer with ``fields`` [(name, QVariant type)] and one square per row of values."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633", name, "memory")
    layer.dataProvider().addAttributes([QgsField(n, t) for n, t in fields])
    layer.updateFields()
    features = []
    for i, values in enumerate(rows):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(i * 10, 0, i * 10 + 5, 5)))
        feature.setAttributes(list(values))
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)
    return layer


def test_class_field_is_never_an_id_and_prefers_class_names(qgis_app, tmp_path):
    from qgis.core import QgsVectorFileWriter

    from cwsam_qgis.polygon_source import class_field_candidates, guess_class_field

    # The GeoPackage's fid (its primary key) comes first and is an integer: never chosen.
    labels = QgsVectorLayer(f"{DEMO / 'labels.gpkg'}|layername=labels", "labels", "ogr")
    assert labels.primaryKeyAttributes() == [0] and guess_class_field(labels) == "landcover"
    assert class_field_candidates(labels) == ["landcover"]
    # An integer primary key of another name, written to a GeoPackage as its fid column.
    keyed = memory_polygons([("objectid", QVariant.Int), ("code", QVariant.Int)], [(1, 3), (2, 3), (3, 4), (4, 5)])
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", "keyed"
    options.layerOptions = ["FID=objectid"]
    path = tmp_path / "keyed.gpkg"
    assert QgsVectorFileWriter.writeAsVectorFormatV3(keyed, str(path), QgsProject.instance().transformContext(),
                                                     options)[0] == QgsVectorFileWriter.NoError
    on_disk = QgsVectorLayer(f"{path}|layername=keyed", "keyed", "ogr")
    assert on_disk.fields().names()[0] == "objectid" and guess_class_field(on_disk) == "code"
    # Identifier-like names are never candidates; a text field beats a number.
    layer = memory_polygons([("id", QVariant.Int), ("osm_id", QVariant.LongLong), ("count", QVariant.Int),
                             ("description", QVariant.String)],
                            [(1, 10, 1, "water"), (2, 11, 2, "forest"), (3, 12, 3, "water")])
    assert guess_class_field(layer) == "description"
    assert "id" not in class_field_candidates(layer) and "osm_id" not in class_field_candidates(layer)
    # Several candidates: a field named like a class field wins, whatever its place.
    layer = memory_polygons([("name", QVariant.String), ("area", QVariant.Double), ("code", QVariant.Int),
                             ("landcover", QVariant.String)],
                            [("a", 1.5, 1, "water"), ("b", 2.5, 2, "forest"), ("c", 3.5, 1, "water")])
    assert guess_class_field(layer) == "landcover"
    assert "area" not in class_field_candidates(layer)  # measurements are not class values
    layer = memory_polygons([("type", QVariant.String), ("class", QVariant.Int)], [("x", 1), ("y", 2)])
    assert guess_class_field(layer) == "class"
    # A field with a single value cannot separate classes: another usable one comes first.
    layer = memory_polygons([("class", QVariant.String), ("kind", QVariant.String)], [("a", "water"), ("a", "forest")])
    assert guess_class_field(layer) == "kind"
    # Only ids: nothing is chosen (the user picks).
    assert guess_class_field(memory_polygons([("fid", QVariant.Int)], [(1,), (2,)])) == ""


def test_class_colours_follow_known_land_cover_names():
    from cwsam_qgis.polygon_source import NEUTRAL_COLOUR, class_colour, default_class_rows

    assert class_colour("Water") == "#1f78b4" and class_colour("open water") == "#1f78b4"
    assert class_colour("Forest") == "#1b7837" and class_colour("built-up") == "#d7191c"
    assert class_colour("not water") == NEUTRAL_COLOUR and class_colour("background") == NEUTRAL_COLOUR
    assert class_colour("class 3") is None and class_colour("zone A") is None
    palette = ["#111111", "#1f78b4", "#333333", "#444444"]
    rows = default_class_rows("text", ["lake", "river", "zone A", "forest"], palette)
    # river would repeat the lake's blue: it takes a palette colour not used by a known name instead.
    assert [r[3] for r in rows] == ["#1f78b4", "#111111", "#333333", "#1b7837"]
    assert [r[1] for r in rows] == [0, 1, 2, 3]
    rows = default_class_rows("integer", [3, 7], palette)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(3, 3, "class 3", "#111111"), (7, 7, "class 7", "#1f78b4")]


def test_default_outputs_go_beside_the_project_or_the_input(qgis_app, tmp_path, fresh_settings):
    from qgis_interface import HeadlessInterface

    from cwsam_qgis.dock import CwsamDock
    from cwsam_qgis.layers import BESIDE_INPUT, BESIDE_PROJECT, TEMPORARY, output_folder

    data = tmp_path / "data"
    data.mkdir()
    raster = QgsRasterLayer(str(write_sar(data / "sar.tif")), "sar", "gdal")
    QgsProject.instance().addMapLayer(raster)
    dock = CwsamDock(HeadlessInterface())
    try:
        train, classify = dock.train_panel, dock.classify_panel
        train.raster_combo.setLayer(raster)
        classify.layer_combo.setLayer(raster)
        # No saved project: beside the input raster, said in the dock.
        assert train.default_output_and_place(raster) == (data / "sar_cwsam.cwsam.pt", BESIDE_INPUT)
        assert classify.default_output_and_place(raster) == (data / "sar_classes.tif", BESIDE_INPUT)
        assert "beside the input raster" in train.output_note.text()
        assert classify.output_widget.lineEdit().placeholderText() == "[sar_classes.tif, beside the input raster]"
        # Earlier outputs are never overwritten by default.
        (data / "sar_classes.tif").write_bytes(b"an earlier map")
        assert classify.default_output_and_place(raster)[0] == data / "sar_classes_2.tif"
        # A saved project: beside it (and the dock follows the project's file name).
        project_dir = tmp_path / "project"
        project_dir.mkdir()
        assert QgsProject.instance().write(str(project_dir / "work.qgz"))
        assert train.default_output_and_place(raster) == (project_dir / "sar_cwsam.cwsam.pt", BESIDE_PROJECT)
        assert classify.default_output_and_place(raster)[0] == project_dir / "sar_classes.tif"
        assert "beside the project" in train.output_note.text()
        # A layer without a file and no project: a temporary folder, and the words say so.
        QgsProject.instance().setFileName("")
        folder, where = output_folder(QgsProject.instance(), None)
        assert where == TEMPORARY and "temporary" in where and folder.name == "cwsam"
    finally:
        dock.shutdown()
        dock.deleteLater()
        QgsProject.instance().clear()
