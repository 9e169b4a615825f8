"""The Processing algorithms run through ``processing.run`` and give what the dock gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from plugin_helpers import CLASSES, cwsam_processing, load_plugin, plugin_model, write_labels, write_sar
from qgis.core import QgsApplication, QgsPalettedRasterRenderer, QgsProcessingException, QgsProject, QgsRasterLayer

TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def processing(qgis_app):
    """Processing initialised in this process, with the CWSAM provider registered."""
    with cwsam_processing() as module:
        yield module


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return plugin_model(tmp_path_factory.mktemp("model"))


def read(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_the_five_algorithms_are_registered(processing):
    registry = QgsApplication.processingRegistry()
    names = {a.id(): a.displayName() for a in registry.providerById("cwsam").algorithms()}
    assert names == {"cwsam:classify": "Classify SAR raster", "cwsam:train": "Fine-tune CWSAM from polygons",
                     "cwsam:evaluate": "Evaluate CWSAM model", "cwsam:retrain": "Retrain CWSAM from corrections",
                     "cwsam:change": "Change between two dates"}


def test_classify_algorithm_gives_the_dock_output(processing, qtbot, tmp_path, model_file):
    image = write_sar(tmp_path / "sar.tif", height=90, width=110, seed=2)
    result = processing.run("cwsam:classify", {
        "INPUT": str(image), "MODEL": str(model_file), "DEVICE": 1, "OUTPUT": str(tmp_path / "alg.tif"),
        "CONFIDENCE": str(tmp_path / "alg_conf.tif")})
    assert result["OUTPUT"] == str(tmp_path / "alg.tif") and Path(result["RECORD"]).is_file()
    summary = json.loads(result["SUMMARY"])
    assert sum(v["pixels"] for v in summary.values()) == 90 * 110
    assert set(summary) <= {c.name for c in CLASSES}

    # The same raster through the dock.
    iface, plugin = load_plugin()
    panel = plugin.dock.classify_panel
    try:
        layer = QgsRasterLayer(str(image), "sar")
        QgsProject.instance().addMapLayer(layer)
        panel.layer_combo.setLayer(layer)
        panel.model_widget.setFilePath(str(model_file))
        panel.tile_spin.setValue(0)
        panel.overlap_spin.setValue(0.25)
        panel.batch_spin.setValue(4)
        panel.extent_combo.setCurrentIndex(0)
        panel.device_combo.setCurrentText("cpu")
        panel.confidence_check.setChecked(True)
        panel.output_widget.setFilePath(str(tmp_path / "dock.tif"))
        panel.run_button.click()
        qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
        assert panel.last_outcome.result is not None, panel.last_outcome.error
    finally:
        plugin.unload()
        QgsProject.instance().clear()
    np.testing.assert_array_equal(read(tmp_path / "alg.tif"), read(tmp_path / "dock.tif"))
    np.testing.assert_array_equal(read(tmp_path / "alg_conf.tif"), read(tmp_path / "dock_confidence.tif"))
    with rasterio.open(tmp_path / "alg.tif") as a, rasterio.open(tmp_path / "dock.tif") as b:
        assert a.transform == b.transform and a.crs == b.crs


def test_classify_algorithm_extent_and_loaded_style(processing, tmp_path, model_file):
    image = write_sar(tmp_path / "sar.tif", height=90, width=110)
    # x 500100..500400, y 4599300..4599700 in the raster's CRS: 30 x 40 pixels.
    QgsProject.instance().clear()
    result = processing.runAndLoadResults("cwsam:classify", {
        "INPUT": str(image), "MODEL": str(model_file), "DEVICE": 1, "OUTPUT": str(tmp_path / "part.tif"),
        "EXTENT": "500100,500400,4599300,4599700 [EPSG:32633]"})
    with rasterio.open(result["OUTPUT"]) as out:
        assert (out.width, out.height) == (30, 40)
        assert (out.transform.c, out.transform.f) == (500100.0, 4599700.0)
    loaded = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.source() == result["OUTPUT"]]
    assert len(loaded) == 1
    renderer = loaded[0].renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [(c.value, c.label) for c in renderer.classes()] == [(c.value, c.name) for c in CLASSES]
    QgsProject.instance().clear()


def test_evaluate_algorithm_scores_against_labels(processing, tmp_path, model_file):
    image = write_sar(tmp_path / "sar.tif", height=80, width=96)
    labels = write_labels(tmp_path / "labels.tif", image)
    result = processing.run("cwsam:evaluate", {
        "INPUT": str(image), "LABELS": str(labels), "MODEL": str(model_file), "DEVICE": 1,
        "OUTPUT": str(tmp_path / "report.json")})
    report = json.loads(Path(result["OUTPUT"]).read_text())
    assert report["pixels"] == 80 * 96  # every pixel is labelled with a class of the model
    assert 0.0 <= result["MIOU"] <= 1.0 and result["MIOU"] == pytest.approx(report["miou"])
    assert [row["name"] for row in report["per_class"]] == [c.name for c in CLASSES]
    # Classes counted in the report agree with the label raster.
    truth = read(labels)
    assert {row["name"]: row["pixels"] for row in report["per_class"]} == {
        c.name: int((truth == c.value).sum()) for c in CLASSES}


def test_evaluate_algorithm_matches_classes_by_name(processing, tmp_path, model_file):
    from qgis.core import QgsProcessingFeedback

    class Warnings(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.lines = []

        def pushWarning(self, text: str) -> None:  # noqa: N802
            self.lines.append(text)

    image = write_sar(tmp_path / "sar.tif", height=80, width=96)
    truth = read(write_labels(tmp_path / "labels.tif", image))
    swapped = {1: 5, 2: 2, 5: 1}  # water and urban trade numbers, and the band tags say so
    with rasterio.open(tmp_path / "labels.tif") as source:
        profile = source.profile
    with rasterio.open(tmp_path / "renumbered.tif", "w", **profile) as out:
        out.write(np.vectorize(swapped.get)(truth).astype(np.uint8), 1)
        out.update_tags(1, **{f"class_{swapped[c.value]}": c.name for c in CLASSES})
    feedback = Warnings()
    result = processing.run("cwsam:evaluate", {
        "INPUT": str(image), "LABELS": str(tmp_path / "renumbered.tif"), "MODEL": str(model_file), "DEVICE": 1,
        "OUTPUT": str(tmp_path / "report.json")}, feedback=feedback)
    report = json.loads(Path(result["OUTPUT"]).read_text())
    assert {row["name"]: row["pixels"] for row in report["per_class"]} == {
        c.name: int((truth == c.value).sum()) for c in CLASSES}  # counted by name, not by number
    assert [line for line in feedback.lines if "matched by name" in line and "water 5->1" in line], feedback.lines
    with rasterio.open(tmp_path / "renumbered.tif", "r+") as out:
        out.update_tags(1, class_2="wetland")
    with pytest.raises(QgsProcessingException, match=r"does not have \(wetland\).*reference 1 urban, 2 wetland"):
        processing.run("cwsam:evaluate", {
            "INPUT": str(image), "LABELS": str(tmp_path / "renumbered.tif"), "MODEL": str(model_file), "DEVICE": 1,
            "OUTPUT": str(tmp_path / "refused.json")})
    assert not (tmp_path / "refused.json").exists()


def test_algorithms_refuse_bad_input_with_a_message(processing, tmp_path, model_file):
    image = write_sar(tmp_path / "sar.tif")
    with pytest.raises(QgsProcessingException, match="model file not found"):
        processing.run("cwsam:classify", {"INPUT": str(image), "MODEL": str(tmp_path / "missing.pt"),
                                          "OUTPUT": str(tmp_path / "a.tif")})
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("not a model")
    with pytest.raises(QgsProcessingException, match="notes.pt"):
        processing.run("cwsam:classify", {"INPUT": str(image), "MODEL": str(not_a_model), "DEVICE": 1,
                                          "OUTPUT": str(tmp_path / "b.tif")})
    with pytest.raises(QgsProcessingException, match="does not overlap"):
        processing.run("cwsam:classify", {"INPUT": str(image), "MODEL": str(model_file), "DEVICE": 1,
                                          "OUTPUT": str(tmp_path / "c.tif"),
                                          "EXTENT": "600000,600100,4500000,4500100 [EPSG:32633]"})
    with pytest.raises(QgsProcessingException, match="Bands takes"):
        processing.run("cwsam:classify", {"INPUT": str(image), "MODEL": str(model_file), "BANDS": "VV,VH",
                                          "OUTPUT": str(tmp_path / "e.tif")})
    vector = tmp_path / "polygons.geojson"
    vector.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(QgsProcessingException):
        processing.run("cwsam:classify", {"INPUT": str(vector), "MODEL": str(model_file),
                                          "OUTPUT": str(tmp_path / "d.tif")})
    assert not any((tmp_path / n).exists() for n in ("a.tif", "b.tif", "c.tif", "d.tif", "e.tif"))


def test_change_algorithm_gives_the_transitions_of_two_maps(processing, tmp_path):
    from test_change import FOREST, URBAN, write_map

    before = np.full((60, 80), FOREST, dtype=np.uint8)
    after = before.copy()
    after[10:20, 30:50] = URBAN  # 200 pixels of 100 m²: 2 ha
    result = processing.run("cwsam:change", {
        "BEFORE": str(write_map(tmp_path / "before.tif", before)),
        "AFTER": str(write_map(tmp_path / "after.tif", after[5:, 10:], col=10, row=5)),
        "DEVICE": 1, "OUTPUT": str(tmp_path / "change.tif")})
    assert result["CHANGED_HECTARES"] == pytest.approx(2.0)
    assert Path(result["TABLE"]) == tmp_path / "change_transitions.csv" and Path(result["TABLE"]).is_file()
    layer = QgsRasterLayer(result["OUTPUT"], "change")
    assert layer.isValid() and isinstance(layer.renderer(), QgsPalettedRasterRenderer)  # the .qml beside it
    assert [c.label for c in layer.renderer().classes()] == ["no change", "forest \u2192 urban"]
    with pytest.raises(QgsProcessingException, match="do not overlap"):
        processing.run("cwsam:change", {
            "BEFORE": str(tmp_path / "before.tif"),
            "AFTER": str(write_map(tmp_path / "far.tif", before, origin=(700_000.0, 4_500_000.0))),
            "OUTPUT": str(tmp_path / "refused.tif")})
    assert not (tmp_path / "refused.tif").exists()
