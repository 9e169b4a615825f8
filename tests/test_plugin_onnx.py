"""ONNX models in the plugin, in real headless QGIS: the dock and cwsam:classify classify with an .onnx export,
and with the light install (no torch) the Setup tab offers it first and the Fine-tune tab says what training needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from plugin_helpers import CLASSES, write_model, write_sar
from qgis.core import QgsPalettedRasterRenderer, QgsProject
from test_plugin_classify import add_raster, dock, run_to_end  # noqa: F401 (dock is a fixture)
from test_plugin_dependencies import START_PLUGIN, SYSTEM_PYTHON, run_qgis_script

from cwsam_core.engine.inference import classify_file
from cwsam_core.engine.onnx_export import export_onnx
from cwsam_qgis.layers import GROUP_NAME

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("models")
    model = write_model(folder / "nano.cwsam.pt")
    return {"pt": model, "onnx": export_onnx(model, folder / "nano.onnx").path}


def test_dock_classifies_with_an_onnx_model(dock, qtbot, tmp_path, models):
    _, plugin, panel = dock
    sar = write_sar(tmp_path / "sar.tif")
    panel.layer_combo.setLayer(add_raster(sar))
    panel.sam_widget.setFilePath(str(tmp_path / "sam_vit_b_01ec64.pth"))  # remembered from another model: unused
    panel.model_widget.setFilePath(str(models["onnx"]))
    assert "runs with ONNX Runtime" in panel.fit_label.text() and "tiles 64 px" in panel.fit_label.text()
    assert "*.onnx" in panel.model_widget.filter()
    panel.output_widget.setFilePath(str(tmp_path / "classes.tif"))
    run_to_end(qtbot, panel)
    outcome = panel.last_outcome
    assert outcome.result is not None, outcome.error
    record = json.loads(outcome.result.record.read_text())
    assert record["engine"]["name"] == "onnxruntime" and record["device"] == "cpu"
    group = QgsProject.instance().layerTreeRoot().findGroup(GROUP_NAME)
    result_layer = group.findLayers()[0].layer()
    assert isinstance(result_layer.renderer(), QgsPalettedRasterRenderer)
    assert [(c.value, c.label) for c in result_layer.renderer().classes()] == [(c.value, c.name) for c in CLASSES]
    reference = classify_file(sar, tmp_path / "torch.tif", models["pt"], device="cpu")
    with rasterio.open(outcome.result.output) as a, rasterio.open(reference.output) as b:
        assert (a.read(1) == b.read(1)).mean() >= 0.999
    assert plugin.dock.train_panel.install_label.isHidden()  # the full install trains


# The plugin in a fresh QGIS process with a real light engine (ONNX Runtime, no torch): what the Setup
# and Fine-tune tabs say, the dock classifying with an .onnx model, cwsam:classify with .onnx and .cwsam.pt.
LIGHT_SCRIPT = r'''
import sys, time
plugin_parent, tests_dir, environment, raster, onnx_model, pt_model, out_dir = sys.argv[1:8]
''' + START_PLUGIN + r'''
dock = plugin.dock
out = {"light": plugin.report.light, "summary": plugin.report.summary(), "setup": dock.setup_panel.details.toPlainText(),
       "tab": dock.tabs.tabText(dock.tabs.currentIndex()), "bar": [i.text() for i in iface.messageBar().items()],
       "train_note": dock.train_panel.install_label.text(), "onnx_line": dock.setup_panel.onnx_label.text(),
       "train_note_shown": not dock.train_panel.install_label.isHidden()}
out["train_started"] = dock.train_panel.start_training()
layer = QgsRasterLayer(raster, "sar")
QgsProject.instance().addMapLayer(layer)
panel = dock.classify_panel
panel.layer_combo.setLayer(layer)
panel.device_combo.setCurrentText("cpu")
panel.model_widget.setFilePath(pt_model)
panel.run_button.click()
out["pt_status"] = panel.status_label.text()
panel.model_widget.setFilePath(onnx_model)
panel.output_widget.setFilePath(os.path.join(out_dir, "dock.tif"))
panel.run_button.click()
deadline = time.time() + 120
while panel.task is not None and time.time() < deadline:
    app.processEvents()
    time.sleep(0.05)
out["dock_error"] = panel.last_outcome.error if panel.last_outcome else "no outcome"
sys.path.append("/usr/share/qgis/python/plugins")
from processing.core.Processing import Processing
Processing.initialize()
import processing
for name, model in (("onnx", onnx_model), ("pt", pt_model)):
    try:
        processing.run("cwsam:classify", {"INPUT": raster, "MODEL": model, "DEVICE": 1,
                                          "OUTPUT": os.path.join(out_dir, f"qp_{name}.tif")})
        out[f"processing_{name}"] = "ok"
    except Exception as exc:
        out[f"processing_{name}"] = f"{type(exc).__name__}: {exc}"
out["torch_imported"] = any(m.split(".")[0] == "torch" for m in sys.modules)
plugin.unload()
print("RESULT " + json.dumps(out), flush=True)
os._exit(0)  # never exitQgis(): it crashes at interpreter exit (ENVIRONMENT.md, pitfall 5)
'''


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).is_file(), reason="needs Debian's Python with PyQGIS")
def test_light_install_offers_onnx_and_says_what_training_needs(tmp_path, models, light_engine):
    raster = write_sar(tmp_path / "sar.tif")
    out = run_qgis_script(tmp_path, LIGHT_SCRIPT, [REPO, REPO / "tests", light_engine, raster, models["onnx"],
                                                   models["pt"], tmp_path])
    assert out["light"] and "light install" in out["summary"] and out["tab"] == "Classify"
    assert not [text for text in out["bar"] if "cannot import" in text]  # nothing to fix: no warning at load
    assert "Light install: classification with ONNX models (.onnx) works" in out["setup"]
    assert "make setup" in out["setup"] and "torch" in out["setup"]
    assert "ONNX models run with ONNX Runtime" in out["onnx_line"] and "CPU" in out["onnx_line"]
    assert out["train_note_shown"] and "Training needs the full install" in out["train_note"]
    assert "make setup" in out["train_note"] and not out["train_started"]
    assert "full install" in out["pt_status"] and "cannot import torch" in out["pt_status"]
    assert out["dock_error"] is None, out["dock_error"]
    assert (tmp_path / "dock.tif").is_file() and (tmp_path / "qp_onnx.tif").is_file()
    assert out["processing_onnx"] == "ok"
    assert out["processing_pt"] != "ok" and not (tmp_path / "qp_pt.tif").exists()
    assert not out["torch_imported"]
    with rasterio.open(tmp_path / "dock.tif") as dock_map, rasterio.open(tmp_path / "qp_onnx.tif") as processed:
        assert np.array_equal(dock_map.read(1), processed.read(1))
