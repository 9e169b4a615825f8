"""The dock's Change tab in real headless QGIS: two class maps compared in a background task (the engine in its
worker), the styled transition layer added, the gains and losses per class charted; bad input in words."""

from __future__ import annotations

import numpy as np
from qgis.core import QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer
from test_change import FOREST, URBAN, WATER, write_map
from test_plugin_classify import dock  # noqa: F401 (a fixture)

from cwsam_qgis.layers import OUTPUT_PROPERTY

TIMEOUT_MS = 60_000


def add(path, name):
    layer = QgsRasterLayer(str(path), name, "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_two_class_maps_give_a_styled_transition_layer_and_a_chart(dock, qtbot, tmp_path):
    _, plugin, _ = dock
    panel = plugin.dock.change_panel
    before = np.full((60, 80), FOREST, dtype=np.uint8)
    before[40:, :] = WATER
    after = before.copy()
    after[10:20, 30:50] = URBAN  # 200 pixels of 100 m²: 2 ha of forest -> urban
    after[40:45, 10:30] = FOREST  # 100 pixels (inside the cropped part): 1 ha of water -> forest
    panel.before_combo.setLayer(add(write_map(tmp_path / "dry.tif", before), "dry"))
    panel.after_combo.setLayer(add(write_map(tmp_path / "wet.tif", after[5:, 10:], col=10, row=5), "wet"))
    assert panel.start() is not None and not panel.run_button.isEnabled() and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    task = panel.last_task
    assert task.result is not None, task.error
    layer = panel.layer
    assert layer.source() == str(tmp_path / "dry_change.tif") and layer.customProperty(OUTPUT_PROPERTY) == "change"
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    assert {c.label for c in layer.renderer().classes()} == {"no change", "forest \u2192 urban", "water \u2192 forest"}
    assert panel.chart.rows == [("forest", 1.0, 2.0), ("urban", 2.0, 0.0), ("water", 0.0, 1.0)]
    assert "3.00 ha changed class in 2 transition(s)" in panel.status_label.text()
    assert plugin.dock.review_panel.map_combo.findData(layer.id()) < 0  # a transition map is not a map to review


def test_the_same_layer_twice_or_maps_apart_are_refused_in_words(dock, qtbot, tmp_path):
    _, plugin, _ = dock
    panel = plugin.dock.change_panel
    near = add(write_map(tmp_path / "near.tif", np.full((20, 20), FOREST, dtype=np.uint8)), "near")
    panel.before_combo.setLayer(near)
    panel.after_combo.setLayer(near)
    assert panel.start() is None and "choose two layers" in panel.status_label.text()
    far = add(write_map(tmp_path / "far.tif", np.full((20, 20), FOREST, dtype=np.uint8), origin=(7e5, 4e6)), "far")
    panel.after_combo.setLayer(far)
    assert panel.start() is not None
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    assert panel.last_task.result is None and "do not overlap" in panel.status_label.text()
    assert not list(tmp_path.glob("near_change*"))


def test_cancel_leaves_nothing(dock, qtbot, tmp_path):
    from pathlib import Path

    _, plugin, _ = dock
    panel = plugin.dock.change_panel
    demo = Path(__file__).resolve().parents[1] / "resources" / "demo"
    panel.before_combo.setLayer(add(demo / "scene.tif", "before"))
    panel.after_combo.setLayer(add(demo / "scene.tif", "after"))
    panel.model_widget.setFilePath(str(demo / "model.cwsam.pt"))  # two classifications first: time to cancel
    panel.output_widget.setFilePath(str(tmp_path / "change.tif"))
    task = panel.start()
    assert task is not None
    task.fraction_done.connect(lambda _fraction, _message: panel.cancel_button.click())
    qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
    assert panel.last_task.cancelled and panel.last_task.result is None and panel.last_task.error is None
    assert "Cancelled: nothing was written" in panel.status_label.text() and panel.run_button.isEnabled()
    assert list(tmp_path.iterdir()) == []
    assert not [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.customProperty(OUTPUT_PROPERTY)]
