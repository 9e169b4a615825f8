"""Polygons out in headless QGIS: the Classify tab's "Polygons" output and cwsam:classify's POLYGONS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from plugin_helpers import CLASSES, cwsam_processing, plugin_model, wait_for_check, write_sar
from qgis.core import QgsCategorizedSymbolRenderer, QgsProcessingException, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis_interface import HeadlessInterface

from cwsam_qgis import settings
from cwsam_qgis.layers import GROUP_NAME, OUTPUT_PROPERTY

TIMEOUT_MS = 60_000
PIXEL_AREA = 100.0  # plugin_helpers.write_sar: 10 m pixels in EPSG:32633


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return plugin_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def dock(qgis_app, qtbot):
    import cwsam_qgis

    QgsProject.instance().clear()
    settings.set_value(settings.POLYGONS, False)
    iface = HeadlessInterface()
    plugin = cwsam_qgis.classFactory(iface)
    plugin.initGui()
    wait_for_check(plugin)
    plugin.dock_action.trigger()
    panel = plugin.dock.classify_panel
    panel.confidence_check.setChecked(False)
    panel.tile_spin.setValue(0)
    panel.extent_combo.setCurrentIndex(0)
    panel.device_combo.setCurrentText("cpu")
    yield iface, plugin, panel
    panel.shutdown()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    plugin.unload()
    QgsProject.instance().clear()
    settings.set_value(settings.POLYGONS, False)  # the settings outlive the test profile: leave the default


def categories(layer) -> list:
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "class"
    return [(int(c.value()), c.label(), c.symbol().color().name()) for c in renderer.categories()]


def class_areas(path: Path) -> dict:
    with rasterio.open(path) as src:
        values = src.read(1)
    return {int(v): float((values == v).sum() * PIXEL_AREA) for v in np.unique(values) if v != 255}


def test_dock_adds_styled_polygons_after_the_classes(dock, qtbot, tmp_path, model_file):
    iface, _, panel = dock
    assert not panel.polygons_check.isChecked()  # off by default
    layer = QgsRasterLayer(str(write_sar(tmp_path / "sar.tif", height=96, width=80, seed=3)), "sar")
    QgsProject.instance().addMapLayer(layer)
    panel.layer_combo.setLayer(layer)
    panel.model_widget.setFilePath(str(model_file))
    panel.output_widget.setFilePath(str(tmp_path / "classes.tif"))
    panel.confidence_check.setChecked(True)
    panel.polygons_check.setChecked(True)
    panel.run_button.click()
    assert panel.task is not None, panel.status_label.text()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)

    outcome = panel.last_outcome
    assert outcome.result is not None and outcome.polygons is not None, (outcome.error, outcome.polygons_error)
    assert outcome.polygons.output == tmp_path / "classes_polygons.gpkg" and outcome.polygons.output.is_file()
    group = QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME)
    names = [child.layer().name() for child in group.findLayers()]
    assert names == ["classes_polygons", "classes", "classes_confidence"]  # polygons on top, in the CWSAM group
    polygons = group.findLayers()[0].layer()
    assert isinstance(polygons, QgsVectorLayer) and polygons.customProperty(OUTPUT_PROPERTY) == "polygons"
    assert categories(polygons) == [(c.value, c.name, c.color) for c in CLASSES]
    assert polygons.crs() == layer.crs() and polygons.featureCount() == outcome.polygons.polygons
    features = list(polygons.getFeatures())
    assert all(f.geometry().isGeosValid() for f in features)
    assert all(0 <= f["confidence"] <= 100 for f in features)  # the confidence raster was written: means
    areas: dict = {}
    for f in features:
        areas[f["class"]] = areas.get(f["class"], 0.0) + f["area_m2"]
    assert areas == pytest.approx(class_areas(outcome.result.output), rel=1e-9)
    assert "polygons in classes_polygons.gpkg" in panel.status_label.text()
    assert [item.text() for item in iface.messageBar().items()] == ["Classified sar into classes.tif"]
    assert panel.result_layer_ids == [group.findLayers()[1].layer().id(), polygons.id()]
    # The file carries its style: QGIS applies it when the GeoPackage is opened on its own.
    again = QgsVectorLayer(str(outcome.polygons.output), "again", "ogr")
    assert again.isValid() and categories(again) == categories(polygons)


def test_dock_polygons_that_cannot_be_written_leave_the_classes(dock, qtbot, tmp_path, model_file):
    iface, _, panel = dock
    layer = QgsRasterLayer(str(write_sar(tmp_path / "sar.tif", height=48, width=48, seed=4)), "sar")
    QgsProject.instance().addMapLayer(layer)
    panel.layer_combo.setLayer(layer)
    panel.model_widget.setFilePath(str(model_file))
    panel.output_widget.setFilePath(str(tmp_path / "classes.tif"))
    panel.polygons_check.setChecked(True)
    (tmp_path / "classes_polygons.gpkg").mkdir()  # a folder where the polygons should go
    panel.run_button.click()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    outcome = panel.last_outcome
    assert outcome.result is not None and outcome.polygons is None
    assert "polygons not written" in outcome.polygons_error and "folder" in outcome.polygons_error
    group = QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME)
    assert [child.layer().name() for child in group.findLayers()] == ["classes"]
    texts = [item.text() for item in iface.messageBar().items()]
    assert len(texts) == 1 and "polygons not written" in texts[0] and "\n" not in texts[0]


def test_classify_algorithm_writes_polygons(qgis_app, tmp_path, model_file):
    image = write_sar(tmp_path / "sar.tif", height=90, width=110, seed=2)
    with cwsam_processing() as processing:
        result = processing.run("cwsam:classify", {
            "INPUT": str(image), "MODEL": str(model_file), "DEVICE": 1, "OUTPUT": str(tmp_path / "alg.tif"),
            "POLYGONS": str(tmp_path / "alg_polygons.gpkg"), "MIN_AREA": 500.0, "SIMPLIFY": 10.0})
        assert result["POLYGONS"] == str(tmp_path / "alg_polygons.gpkg")
        polygons = QgsVectorLayer(result["POLYGONS"], "polygons", "ogr")
        assert polygons.isValid() and polygons.featureCount() > 0
        assert categories(polygons) == [(c.value, c.name, c.color) for c in CLASSES]
        features = list(polygons.getFeatures())
        assert all(f.geometry().isGeosValid() for f in features)
        assert min(f["area_m2"] for f in features) >= 500.0  # the minimum area merged smaller regions
        total = sum(f["area_m2"] for f in features)
        assert total == pytest.approx(90 * 110 * PIXEL_AREA, rel=0.01)  # simplified boundaries, the same map
        # Not asked for: no polygons, none written.
        result = processing.run("cwsam:classify", {
            "INPUT": str(image), "MODEL": str(model_file), "DEVICE": 1, "OUTPUT": str(tmp_path / "plain.tif")})
        assert result["POLYGONS"] is None and not list(tmp_path.glob("plain*.gpkg"))
        # Not a GeoPackage: refused before classifying, in one line.
        with pytest.raises(QgsProcessingException) as info:
            processing.run("cwsam:classify", {
                "INPUT": str(image), "MODEL": str(model_file), "DEVICE": 1, "OUTPUT": str(tmp_path / "shp.tif"),
                "POLYGONS": str(tmp_path / "shp_polygons.shp")})
        assert "GeoPackage" in str(info.value) and "\n" not in str(info.value)
        assert not (tmp_path / "shp.tif").exists()
