"""QGIS's process never imports the engine: after a fine-tune, a dock classification and a Processing
classification in a real QGIS started from Debian's Python, torch, triton, onnxruntime and rasterio are not in its
``sys.modules``; only cwsam_core's light parts are (model cards, class lists, paths, plain data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_plugin_dependencies import START_PLUGIN, SYSTEM_PYTHON, run_qgis_script

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"
ENGINE_MODULES = ("torch", "triton", "onnxruntime", "rasterio", "torchvision", "segment_anything", "onnx")

SCRIPT = r'''
import sys, time
plugin_parent, tests_dir, environment, folder = sys.argv[1:5]
''' + START_PLUGIN + r'''
from qgis.core import QgsVectorLayer
dock = plugin.dock
out = {}
scene = QgsRasterLayer(os.path.join(folder, "scene.tif"), "scene", "gdal")
labels = QgsVectorLayer(os.path.join(folder, "labels.gpkg") + "|layername=labels", "labels", "ogr")
QgsProject.instance().addMapLayers([scene, labels])

def wait(done, seconds):
    deadline = time.time() + seconds
    while not done() and time.time() < deadline:
        app.processEvents()
        time.sleep(0.05)

train = dock.train_panel
train.time_spin.setValue(0.1)
finished = []
train.training_finished.connect(finished.append)
out["train_started"] = train.start_training()
wait(lambda: finished, 300)
outcome = finished[0] if finished else None
out["train_error"] = outcome.error if outcome else "no outcome"
model = str(outcome.model_path) if outcome and outcome.model_path else ""
out["model"] = model
classify = dock.classify_panel
task = dock.classify_with(model, scene.id())
out["classify_started"] = task is not None
wait(lambda: classify.task is None, 300)
out["classify_error"] = classify.last_outcome.error if classify.last_outcome else "no outcome"
sys.path.append("/usr/share/qgis/python/plugins")
from processing.core.Processing import Processing
Processing.initialize()
import processing
try:
    processing.run("cwsam:classify", {"INPUT": scene, "MODEL": model, "DEVICE": 1,
                                      "OUTPUT": os.path.join(folder, "processing.tif")})
    out["processing"] = "ok"
except Exception as exc:
    out["processing"] = f"{type(exc).__name__}: {exc}"
out["modules"] = sorted({m.split(".")[0] for m in sys.modules})
out["cwsam_core"] = sorted(m for m in sys.modules if m.startswith("cwsam_core."))
plugin.unload()
print("RESULT " + json.dumps(out), flush=True)
os._exit(0)  # never exitQgis(): it crashes at interpreter exit (ENVIRONMENT.md, pitfall 5)
'''


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).is_file(), reason="needs Debian's Python with PyQGIS")
@pytest.mark.skipif(not (DEMO / "labels.gpkg").is_file(), reason="needs the bundled demo (resources/demo)")
def test_no_engine_module_enters_qgis_after_fine_tune_dock_classify_and_processing(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    for name in ("scene.tif", "scene.tif.aux.xml", "labels.gpkg"):
        shutil.copy(DEMO / name, folder / name)
    out = run_qgis_script(tmp_path, SCRIPT, [REPO, REPO / "tests", REPO / ".venv", folder], timeout=900)
    assert out["train_started"] and out["train_error"] is None, out
    assert out["classify_started"] and out["classify_error"] is None, out
    assert out["processing"] == "ok" and (folder / "processing.tif").is_file() and (folder / "scene_classes.tif").is_file()
    assert not set(ENGINE_MODULES) & set(out["modules"]), set(ENGINE_MODULES) & set(out["modules"])
    heavy = [m for m in out["cwsam_core"] if m.split(".")[1] in ("engine", "training", "vector", "raster", "cli")
             and m not in ("cwsam_core.training", "cwsam_core.training.config")]
    assert heavy == [], heavy
    print("QGIS process: cwsam_core modules", out["cwsam_core"])
