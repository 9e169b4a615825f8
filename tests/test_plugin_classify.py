"""The dock's Classify tab in real headless QGIS: layers in, styled class layers out, cancel, bad input."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from plugin_helpers import CLASSES, load_plugin, plugin_model, wait_for_check, write_sar
from qgis.core import (
    QgsCoordinateReferenceSystem, QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer, QgsRectangle, QgsTask,
    QgsVectorLayer,
)
from qgis.PyQt.QtWidgets import QApplication, QLabel, QScrollArea
from qgis_interface import HeadlessInterface

from cwsam_qgis.layers import GROUP_NAME, LayerError, raster_source
from cwsam_qgis.widgets.scrolling import NARROW_DOCK_PX

TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return plugin_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def dock(qgis_app, qtbot):
    """The plugin loaded through classFactory, its dock shown; the project emptied around each test."""
    import cwsam_qgis

    QgsProject.instance().clear()
    iface = HeadlessInterface()
    plugin = cwsam_qgis.classFactory(iface)
    plugin.initGui()
    wait_for_check(plugin)
    plugin.dock_action.trigger()
    assert iface.dock_widgets == [plugin.dock] and not plugin.dock.isHidden()
    panel = plugin.dock.classify_panel
    panel.output_widget.setFilePath("")
    panel.confidence_check.setChecked(False)
    panel.tile_spin.setValue(0)
    panel.extent_combo.setCurrentIndex(0)
    panel.device_combo.setCurrentText("cpu")
    yield iface, plugin, panel
    panel.shutdown()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    plugin.unload()
    QgsProject.instance().clear()


def add_raster(path: Path, name: str = "sar") -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def bar_texts(iface) -> list:
    return [item.text() for item in iface.messageBar().items()]


def run_to_end(qtbot, panel) -> None:
    panel.run_button.click()
    assert panel.task is not None, panel.status_label.text()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)


def test_dock_has_the_five_tabs(dock):
    _, plugin, _ = dock
    tabs = plugin.dock.tabs
    assert [tabs.tabText(i) for i in range(tabs.count())] == ["Classify", "Review", "Change", "Fine-tune", "Setup"]
    plugin.dock_action.trigger()
    assert plugin.dock.isHidden() and not plugin.dock_action.isChecked()


@pytest.mark.parametrize("width", [NARROW_DOCK_PX, 320, 400])
def test_every_tab_fits_a_narrow_dock(dock, width):
    """QGIS opens a dock about 260 px wide: no tab may need more (its fields cut at the right, as the scroll
    areas do not scroll sideways), with the vertical scroll bar shown (a short screen)."""
    _, plugin, _ = dock
    widget = plugin.dock
    widget.setFloating(True)
    widget.resize(width, 420)
    widget.show()
    for index in range(widget.tabs.count()):
        widget.tabs.setCurrentIndex(index)
        QApplication.processEvents()
        tab = widget.tabs.widget(index)
        scroll = tab.findChild(QScrollArea)
        content, room = (scroll.widget(), scroll.viewport().width()) if scroll else (tab, tab.width())
        assert content.minimumSizeHint().width() <= room, (widget.tabs.tabText(index), width)
        narrow = [w for w in tab.findChildren(QLabel) if w.isVisibleTo(tab) and not w.wordWrap()
                  and w.minimumSizeHint().width() > room]
        assert not narrow, [w.text() for w in narrow]


def test_classify_adds_a_styled_layer_on_the_input_grid(dock, qtbot, tmp_path, model_file):
    iface, plugin, panel = dock
    layer = add_raster(write_sar(tmp_path / "sar.tif"))
    panel.layer_combo.setLayer(layer)
    panel.model_widget.setFilePath(str(model_file))
    assert "Model expects" in panel.fit_label.text() and "values look like <b>dB</b>" in panel.fit_label.text()
    panel.output_widget.setFilePath(str(tmp_path / "out" / "classes.tif"))
    (tmp_path / "out").mkdir()
    panel.confidence_check.setChecked(True)
    run_to_end(qtbot, panel)

    outcome = panel.last_outcome
    assert outcome.result is not None, outcome.error
    group = QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME)
    assert group is not None
    names = [child.layer().name() for child in group.findLayers()]
    assert names == ["classes", "classes_confidence"]  # named after their files; confidence below the classes
    result_layer = group.findLayers()[0].layer()
    renderer = result_layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [(c.value, c.label, c.color.name()) for c in renderer.classes()] == [
        (c.value, c.name, c.color) for c in CLASSES]
    assert result_layer.crs() == layer.crs()
    assert result_layer.extent() == layer.extent()
    assert (result_layer.width(), result_layer.height()) == (layer.width(), layer.height())
    with rasterio.open(outcome.result.output) as out:
        values = set(np.unique(out.read(1)).tolist())
    assert values <= {1, 2, 5} and values
    summary = panel.summary.toPlainText()
    assert "class" in summary and any(c.name in summary for c in CLASSES)
    assert "ha" in summary and "km²" not in summary  # areas of a metric CRS, all in one unit
    assert [text for text in bar_texts(iface) if "Classified sar" in text] == bar_texts(iface)  # one message
    # CWSAM's outputs are results, not inputs: the layer chooser leaves them out.
    offered = [panel.layer_combo.layer(i) for i in range(panel.layer_combo.count())]
    assert layer in offered and not [lyr for lyr in offered if lyr.name().startswith("classes")]
    # Also when the user adds such a file by hand (its run record is beside it).
    again = add_raster(outcome.result.output, "again")
    assert again not in [panel.layer_combo.layer(i) for i in range(panel.layer_combo.count())]
    # A new input clears what was said about the previous one.
    panel.layer_combo.setLayer(add_raster(write_sar(tmp_path / "other.tif"), "other"))
    assert panel.status_label.text() == "" and panel.summary.toPlainText() == ""


def test_cancel_leaves_no_layer_and_no_file(dock, qtbot, tmp_path, model_file):
    iface, _, panel = dock
    layer = add_raster(write_sar(tmp_path / "big.tif", height=640, width=640))
    out = tmp_path / "out"
    out.mkdir()
    panel.layer_combo.setLayer(layer)
    panel.model_widget.setFilePath(str(model_file))
    panel.output_widget.setFilePath(str(out / "classes.tif"))
    panel.confidence_check.setChecked(True)
    panel.tile_spin.setValue(64)  # the model's (an ONNX export runs at it only): 169 tiles, still going at Cancel
    panel.batch_spin.setValue(1)
    panel.run_button.click()
    task = panel.task
    assert task is not None and panel.cancel_button.isEnabled()
    statuses = []
    task.statusChanged.connect(statuses.append)
    task.progressChanged.connect(lambda _value: panel.cancel_button.click())
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    assert panel.last_outcome.cancelled
    tasks = getattr(QgsTask, "TaskStatus", QgsTask)  # a clean cancel ends as complete: QGIS says no "Task failed"
    assert statuses and statuses[-1] == tasks.Complete and tasks.Terminated not in statuses, statuses
    assert list(out.iterdir()) == []
    assert [lyr.name() for lyr in QgsProject.instance().mapLayers().values()] == ["sar"]
    assert QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME) is None
    assert "Cancelled" in panel.status_label.text()
    assert panel.run_button.isEnabled()


def test_current_map_view_classifies_only_that_window(dock, qtbot, tmp_path, model_file):
    iface, _, panel = dock
    layer = add_raster(write_sar(tmp_path / "sar.tif", height=120, width=150))
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))  # the view in another CRS
    panel.layer_combo.setLayer(layer)
    panel.model_widget.setFilePath(str(model_file))
    panel.output_widget.setFilePath(str(tmp_path / "view.tif"))
    whole = layer.extent()
    part = QgsRectangle(whole.xMinimum() + 300, whole.yMinimum() + 250, whole.xMinimum() + 900, whole.yMinimum() + 700)
    from qgis.core import QgsCoordinateTransform

    to_view = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance())
    canvas.setExtent(to_view.transformBoundingBox(part))
    panel.extent_combo.setCurrentIndex(1)
    bounds = panel.view_bounds(layer)
    run_to_end(qtbot, panel)
    assert panel.last_outcome.result is not None, panel.last_outcome.error
    result_layer = QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME).findLayers()[0].layer()
    extent = result_layer.extent()
    assert result_layer.crs() == layer.crs()
    assert whole.contains(extent) and extent.width() < whole.width() and extent.height() < whole.height()
    # On the input's pixel grid and covering the whole view (in the layer's CRS).
    for offset in (extent.xMinimum() - whole.xMinimum(), whole.yMaximum() - extent.yMaximum()):
        assert abs(offset / 10 - round(offset / 10)) < 1e-6
    assert extent.xMinimum() <= max(bounds[0], whole.xMinimum()) and extent.xMaximum() >= min(bounds[2], whole.xMaximum())
    assert extent.yMinimum() <= max(bounds[1], whole.yMinimum()) and extent.yMaximum() >= min(bounds[3], whole.yMaximum())
    assert extent.width() < bounds[2] - bounds[0] + 20


def test_layer_without_a_file_is_exported_then_classified(dock, qtbot, tmp_path, model_file):
    from osgeo import gdal

    _, _, panel = dock
    source = write_sar(tmp_path / "sar.tif")
    gdal.Translate("/vsimem/cwsam_test_sar.tif", str(source))  # QGIS's own GDAL: a raster with no file on disk
    exports_before = sorted(Path(tempfile.gettempdir()).glob("cwsam-layer-*"))
    try:
        layer = add_raster(Path("/vsimem/cwsam_test_sar.tif"), "in memory")
        exported = raster_source(layer)
        assert exported.temporary
        exported.cleanup()
        panel.layer_combo.setLayer(layer)
        panel.model_widget.setFilePath(str(model_file))
        panel.output_widget.setFilePath(str(tmp_path / "memory_classes.tif"))
        run_to_end(qtbot, panel)
        outcome = panel.last_outcome
        assert outcome.result is not None, outcome.error
        with rasterio.open(outcome.result.output) as out, rasterio.open(source) as src:
            assert out.transform == src.transform and out.crs == src.crs and out.shape == src.shape
        assert sorted(Path(tempfile.gettempdir()).glob("cwsam-layer-*")) == exports_before  # export removed
    finally:
        gdal.Unlink("/vsimem/cwsam_test_sar.tif")


def test_bad_inputs_show_messages_not_exceptions(dock, qtbot, tmp_path, model_file):
    iface, _, panel = dock
    panel.model_widget.setFilePath(str(model_file))
    assert panel.start() is None  # no raster layer at all
    assert "no raster layer chosen" in panel.status_label.text()

    vector = QgsVectorLayer("Polygon?crs=EPSG:4326", "polygons", "memory")
    QgsProject.instance().addMapLayer(vector)
    with pytest.raises(LayerError, match="not a raster layer"):
        raster_source(vector)
    panel.layer_combo.setLayer(vector)  # the chooser only offers rasters
    assert panel.layer_combo.currentLayer() is None
    web = QgsRasterLayer("type=xyz&url=http://127.0.0.1:9/{z}/{x}/{y}.png&zmax=19", "tiles", "wms")
    assert web.isValid()  # XYZ layers are valid without fetching anything
    with pytest.raises(LayerError, match="web map"):
        raster_source(web)

    layer = add_raster(write_sar(tmp_path / "sar.tif"))
    panel.layer_combo.setLayer(layer)
    panel.model_widget.setFilePath(str(tmp_path / ("missing" + "".join(model_file.suffixes))))  # .onnx: light install
    assert panel.start() is None
    assert any("model file not found" in text for text in bar_texts(iface))

    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("not a model")
    panel.model_widget.setFilePath(str(not_a_model))
    assert "&#9888;" in panel.fit_label.text() or "⚠" in panel.fit_label.text()
    assert panel.start() is None
    assert panel.task is None and panel.run_button.isEnabled()

    one_band = tmp_path / "vv.tif"
    with rasterio.open(tmp_path / "sar.tif") as src:
        profile = src.profile | {"count": 1}
        with rasterio.open(one_band, "w", **profile) as dst:
            dst.write(src.read(1)[None])
            dst.set_band_description(1, "VV")
    panel.layer_combo.setLayer(add_raster(one_band, "vv only"))
    panel.model_widget.setFilePath(str(model_file))
    assert "VH" in panel.fit_label.text()  # the mismatch shows before running
    panel.output_widget.setFilePath(str(tmp_path / "vv_classes.tif"))
    run_to_end(qtbot, panel)
    assert panel.last_outcome.result is None and "VH" in panel.last_outcome.error
    assert not (tmp_path / "vv_classes.tif").exists()
    assert QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME) is None


def test_offer_model_prefills_the_tab(dock, tmp_path, model_file):
    _, plugin, panel = dock
    layer = add_raster(write_sar(tmp_path / "sar.tif"))
    plugin.dock.tabs.setCurrentIndex(1)
    plugin.dock.offer_model(str(model_file), layer.id())
    assert plugin.dock.tabs.currentWidget() is panel
    assert panel.model_widget.filePath() == str(model_file)
    assert panel.layer_combo.currentLayer() is layer
    assert "ready" in panel.status_label.text()


def test_bands_option_picks_the_model_bands(dock, qtbot, tmp_path, model_file):
    _, _, panel = dock
    sar = write_sar(tmp_path / "sar.tif")
    three = tmp_path / "three.tif"  # three bands, none described: which two are VV, VH is the user's call
    with rasterio.open(sar) as src:
        data = src.read()
        with rasterio.open(three, "w", **(src.profile | {"count": 3})) as dst:
            dst.write(np.concatenate([data, data[:1]]))
    panel.layer_combo.setLayer(add_raster(three, "three bands"))
    panel.model_widget.setFilePath(str(model_file))
    panel.output_widget.setFilePath(str(tmp_path / "three_classes.tif"))
    assert "in Bands" in panel.fit_label.text() and "--bands" not in panel.fit_label.text()
    panel.bands_edit.setText("one,two")
    assert panel.start() is None and "Bands takes" in panel.status_label.text()
    panel.bands_edit.setText("1,2")
    panel.update_fit()
    assert "VV=band 1, VH=band 2" in panel.fit_label.text()
    run_to_end(qtbot, panel)
    assert panel.last_outcome.result is not None, panel.last_outcome.error
    record = json.loads(panel.last_outcome.result.record.read_text())
    assert record["parameters"]["band_indexes"] == [1, 2]


def test_unloading_during_a_run_cancels_it_quietly(qgis_app, qtbot, tmp_path, model_file):
    from qgis.core import QgsApplication

    iface, plugin = load_plugin()
    panel = plugin.dock.classify_panel
    layer = add_raster(write_sar(tmp_path / "big.tif", height=400, width=400))
    panel.layer_combo.setLayer(layer)
    panel.model_widget.setFilePath(str(model_file))
    panel.output_widget.setFilePath(str(tmp_path / "classes.tif"))
    panel.tile_spin.setValue(32)
    panel.batch_spin.setValue(1)
    task = panel.start()
    assert task is not None
    plugin.unload()  # the dock and its panel go away while the task runs
    qtbot.waitUntil(lambda: not QgsApplication.taskManager().activeTasks(), timeout=TIMEOUT_MS)
    assert not (tmp_path / "classes.tif").exists()
    assert [lyr.name() for lyr in QgsProject.instance().mapLayers().values()] == ["sar"]
    QgsProject.instance().clear()


def test_area_table_uses_one_unit():
    from types import SimpleNamespace

    from cwsam_qgis.tasks.classify_task import area_summary

    classes = [SimpleNamespace(value=v, color="#000000") for v in (1, 2, 3)]
    small = SimpleNamespace(pixel_counts={1: 50, 2: 15_000, 3: 2_000_000}, class_names={1: "a", 2: "b", 3: "c"},
                            areas={1: 5_000.0, 2: 1_500_000.0, 3: 2e8}, area_unit="m2")
    areas = [row[4] for row in area_summary(small, classes)]
    assert areas == ["0.01 km²", "1.50 km²", "200.00 km²"]  # 201.5 km² in all: km² for every row
    small.areas = {1: 5_000.0, 2: 1_500_000.0, 3: 2e7}
    assert [row[4] for row in area_summary(small, classes)] == ["0.50 ha", "150.00 ha", "2,000.00 ha"]
    small.area_unit = "px"
    assert area_summary(small, classes)[0][4] == "5,000 px"


def test_a_remembered_sam_checkpoint_does_not_stop_a_self_contained_model(dock, qtbot, tmp_path, model_file):
    """The SAM checkpoint field is remembered across sessions; a model trained from scratch ignores it."""
    iface, plugin, panel = dock
    layer = add_raster(write_sar(tmp_path / "sar.tif", height=40, width=50))
    panel.layer_combo.setLayer(layer)
    panel.model_widget.setFilePath(str(model_file))
    panel.sam_widget.setFilePath(str(tmp_path / "gone" / "sam_vit_b_01ec64.pth"))
    assert panel.build_request().sam_checkpoint is None
    assert not panel.sam_widget.isVisibleTo(panel) and not panel.sam_label.isVisibleTo(panel)  # it needs none
    panel.output_widget.setFilePath(str(tmp_path / "classes.tif"))
    try:
        run_to_end(qtbot, panel)
        assert panel.last_outcome.result is not None, panel.last_outcome.error
    finally:
        from cwsam_qgis import settings

        settings.set_value(settings.SAM_CHECKPOINT, "")  # later tests start without it
