"""A model imported from the authors' code in the dock: the Classify tab reads its card and classifies with it."""

from __future__ import annotations

from authors_reference import VIT_NANO, write_authors_files, write_grey8
from plugin_helpers import load_plugin
from qgis.core import QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer

from cwsam_core.model.authors import FUSAR_MAP_CLASSES, write_authors_model_file

TIMEOUT_MS = 30_000


def test_dock_reads_and_classifies_with_an_imported_model(qgis_app, qtbot, tmp_path):
    checkpoint, sam = write_authors_files(tmp_path, VIT_NANO, seed=0)
    model, _ = write_authors_model_file(checkpoint, sam, tmp_path / "fusar.cwsam.pt")
    layer = QgsRasterLayer(str(write_grey8(tmp_path / "gf3.tif", 160)), "gf3")
    assert layer.isValid()
    iface, plugin = load_plugin()
    panel = plugin.dock.classify_panel
    try:
        QgsProject.instance().addMapLayer(layer)
        panel.device_combo.setCurrentText("cpu")
        panel.tile_spin.setValue(0)
        panel.extent_combo.setCurrentIndex(0)
        panel.confidence_check.setChecked(False)
        panel.layer_combo.setLayer(layer)
        panel.sam_widget.setFilePath(str(sam))
        panel.model_widget.setFilePath(str(model))
        assert panel.sam_widget.isVisibleTo(panel) and panel.sam_label.isVisibleTo(panel)  # fine-tuned from SAM
        fit = panel.fit_label.text()
        assert "bands band 1 in amplitude" in fit and "5 classes" in fit, fit
        assert "needs SAM checkpoint sam_vit_nano.pth" in fit
        assert "values look like <b>amplitude</b>" in fit and "band 1=band 1" in fit
        assert "converted" not in fit  # an 8-bit grey raster is read as it is, as their code does
        panel.output_widget.setFilePath(str(tmp_path / "classes.tif"))
        panel.run_button.click()
        assert panel.task is not None, panel.status_label.text()
        qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
        outcome = panel.last_outcome
        assert outcome.result is not None, outcome.error
        added = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.name() == "classes"]
        renderer = added[0].renderer()
        assert isinstance(renderer, QgsPalettedRasterRenderer)
        assert [(c.value, c.label, c.color.name()) for c in renderer.classes()] == [
            (c.value, c.name, c.color) for c in FUSAR_MAP_CLASSES]
        summary = panel.summary.toPlainText()
        assert any(c.name in summary for c in FUSAR_MAP_CLASSES)
    finally:
        panel.shutdown()
        qtbot.waitUntil(lambda: panel.task is None, timeout=TIMEOUT_MS)
        plugin.unload()
        QgsProject.instance().clear()
