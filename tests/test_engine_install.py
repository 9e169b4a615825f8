"""The Setup tab's one-click engine install, driven with pytest-qt: a real light install from the package
registry into a new folder, a cancel that keeps nothing, and a refused folder."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import rasterio
from plugin_helpers import demo_onnx_model
from test_plugin_dependencies import REPO, START_PLUGIN, SYSTEM_PYTHON, packaged_zip, run_qgis_script

from cwsam_qgis import settings
from cwsam_qgis.dependencies import ENGINE_VARIABLE
from cwsam_qgis.tasks.engine_jobs import engine_job
from cwsam_qgis.widgets.setup_panel import SetupPanel

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


@pytest.fixture
def panel(qgis_app):
    before = settings.value(settings.PYTHON_ENV)
    widget = SetupPanel(None)
    yield widget
    if widget.install_task is not None:
        widget.install_task.cancel()
    settings.set_value(settings.PYTHON_ENV, before)


def test_one_click_light_install_then_classify_with_it(panel, qtbot, tmp_path):
    target = tmp_path / "engine"
    panel.install_folder.setFilePath(str(target))
    fractions = []
    with qtbot.waitSignal(panel.install_finished, timeout=900_000) as finished:
        panel.light_button.click()
        assert panel.install_task is not None and not panel.light_button.isEnabled()
        assert panel.cancel_install_button.isVisibleTo(panel) and panel.log_button.isEnabled()
        panel.install_task.fraction_done.connect(lambda fraction, _line: fractions.append(fraction))
    assert finished.args[0] is None, panel.show_install_log()[-3000:]
    assert fractions and max(fractions) >= 0.95
    assert settings.value(settings.PYTHON_ENV) == str(target) and (target / "bin" / "python3").exists()
    assert "light install" in panel.status_label.text() and "ONNX Runtime" in panel.onnx_label.text()
    assert "Setup tab" not in panel.status_label.text() + panel.install_status.text()  # the tab the user is in
    log = panel.show_install_log()
    assert "-m venv" in log and "Successfully installed" in log and "onnxruntime" in log
    # The new engine classifies the demo scene with the ONNX export of the demo model.
    result = engine_job("classify", {"input": str(DEMO / "scene.tif"), "output": str(tmp_path / "map.tif"),
                                     "model": str(demo_onnx_model(tmp_path))})
    assert result.output.is_file() and sum(result.pixel_counts.values()) > 0


def test_cancelled_install_keeps_nothing(panel, qtbot, tmp_path):
    target = tmp_path / "engine"
    panel.install_folder.setFilePath(str(target))
    with qtbot.waitSignal(panel.install_finished, timeout=120_000) as finished:
        task = panel.start_install(light=False)
        qtbot.waitUntil(lambda: target.exists(), timeout=60_000)
        task.cancel()
    assert finished.args[0] == "install cancelled: nothing was kept"
    assert not target.exists() and panel.light_button.isEnabled()


def test_a_folder_with_other_files_is_refused(panel, qtbot, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    panel.install_folder.setFilePath(str(tmp_path))
    with qtbot.waitSignal(panel.install_finished, timeout=60_000) as finished:
        panel.start_install(light=True)
    assert "a folder with files but no Python environment" in finished.args[0]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_check_again_and_enter_check_in_the_background(panel, qtbot, tmp_path):
    panel.env_widget.setFilePath(str(tmp_path))  # no Python there
    with qtbot.waitSignal(panel.check_finished, timeout=60_000) as checked:
        panel.env_widget.lineEdit().returnPressed.emit()  # Enter in the field checks again
        assert "Checking the engine in" in panel.status_label.text() and not panel.check_button.isEnabled()
    assert not checked.args[0].ok and "no Python interpreter" in panel.details.toPlainText()
    panel.env_widget.setFilePath(str(Path(__import__("sys").prefix)))
    with qtbot.waitSignal(panel.check_finished, timeout=120_000) as checked:
        panel.check_button.click()
    assert checked.args[0].ok and panel.check_button.isEnabled()
    assert "all Python dependencies found" in panel.status_label.text() or "light install" in panel.status_label.text()


# The packaged zip in a fresh QGIS profile with no engine anywhere: the Setup tab's "Light engine" install
# into the profile's default folder, then the dock classifies with an ONNX model. Debian's Python runs QGIS.
ZIP_INSTALL_SCRIPT = r'''
import sys, time
plugin_parent, tests_dir, environment, raster, onnx_model, out_dir = sys.argv[1:7]
''' + START_PLUGIN + r'''
from cwsam_qgis import dependencies
dock = plugin.dock
setup = dock.setup_panel
out = {"before_ok": plugin.report.ok, "folder": setup.install_folder.filePath(),
       "profile": os.environ["QGIS_CUSTOM_CONFIG_PATH"], "settings": QgsSettings().fileName()}
setup.light_button.click()
out["started"] = setup.install_task is not None
finished = []
setup.install_finished.connect(finished.append)
deadline = time.time() + 900
while not finished and time.time() < deadline:
    app.processEvents()
    time.sleep(0.05)
out["install_error"] = finished[0] if finished else "no end within 15 minutes"
out["install_status"] = setup.install_status.text()
out["report_light"] = bool(dependencies.last_report() and dependencies.last_report().light)
out["environment"] = str(dependencies.configured_environment())
layer = QgsRasterLayer(raster, "sar")
QgsProject.instance().addMapLayer(layer)
panel = dock.classify_panel
panel.layer_combo.setLayer(layer)
panel.model_widget.setFilePath(onnx_model)
panel.output_widget.setFilePath(os.path.join(out_dir, "dock.tif"))
panel.run_button.click()
out["classify_started"] = panel.task is not None
deadline = time.time() + 180
while panel.task is not None and time.time() < deadline:
    app.processEvents()
    time.sleep(0.05)
out["dock_error"] = panel.last_outcome.error if panel.last_outcome else "no outcome"
import cwsam_core
out["cwsam_core"] = cwsam_core.__file__
out["engine_modules"] = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "triton", "onnxruntime", "rasterio"})
plugin.unload()
print("RESULT " + json.dumps(out), flush=True)
os._exit(0)  # never exitQgis(): it crashes at interpreter exit (ENVIRONMENT.md, pitfall 5)
'''


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).is_file(), reason="needs Debian's Python with PyQGIS")
def test_packaged_zip_in_a_fresh_profile_installs_the_light_engine_and_classifies(tmp_path):
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(packaged_zip(tmp_path)) as zipped:
        zipped.extractall(plugins)
    onnx_model = demo_onnx_model(tmp_path)
    out = run_qgis_script(tmp_path, ZIP_INSTALL_SCRIPT, [plugins, REPO / "tests", "", DEMO / "scene.tif", onnx_model,
                                                         tmp_path], timeout=1200, without=(ENGINE_VARIABLE,))
    profile = Path(out["profile"])
    assert not out["before_ok"]  # a fresh profile: no engine found
    assert profile in Path(out["settings"]).parents  # the settings too: nothing in the user's ~/.config
    engine = Path(out["folder"])  # by default under the QGIS profile folder
    assert out["started"] and profile in engine.parents and engine.parts[-2:] == ("cwsam", "engine")
    assert out["install_error"] is None, out["install_status"]
    assert out["report_light"] and out["environment"] == str(engine)
    assert out["classify_started"] and out["dock_error"] is None, out["dock_error"]
    assert out["cwsam_core"].startswith(str(plugins / "cwsam_qgis" / "libs"))  # the engine the zip brought
    assert out["engine_modules"] == []
    with rasterio.open(tmp_path / "dock.tif") as classes:
        assert classes.read(1).size > 0 and len(set(classes.read(1).ravel().tolist())) > 1


@pytest.mark.parametrize("platform, nvidia, index", [
    ("linux", False, "https://download.pytorch.org/whl/cpu"),  # PyPI's Linux torch is the CUDA build: too big
    ("linux", True, None), ("win32", True, "https://download.pytorch.org/whl/cu126"), ("win32", False, None),
    ("darwin", False, None)])
def test_the_full_install_picks_the_pytorch_build_for_the_machine(tmp_path, monkeypatch, platform, nvidia, index):
    from cwsam_qgis import installer

    monkeypatch.setattr(installer.sys, "platform", platform)
    monkeypatch.setattr(installer, "has_nvidia_gpu", lambda: nvidia)
    full = installer.plan_for(tmp_path / "engine", light=False).pip_command(Path("python"))
    light = installer.plan_for(tmp_path / "engine", light=True).pip_command(Path("python"))
    assert full[-1] == index if index else "--extra-index-url" not in full
    assert "--extra-index-url" not in light and light[-1].endswith("requirements-classify.txt")
