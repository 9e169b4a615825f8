"""The plugin with and without its Python dependencies, and the packaged zip, each in a fresh QGIS
process started from Debian's Python (which has no torch): what a user's QGIS sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cwsam_qgis import dependencies

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"

# Loads the plugin the way QGIS does (classFactory, initGui), opens the dock, clicks "Classify SAR layer",
# runs the Processing algorithm, and prints what the user would see as one JSON line.
# With ``plugin_parent``, ``tests_dir`` and ``environment`` set: starts QGIS, loads the plugin the way QGIS does
# (classFactory, initGui) with that Python environment, and opens the dock (``app``, ``iface``, ``plugin``).
START_PLUGIN = r'''
import json, os, sys
sys.path.insert(0, plugin_parent)
sys.path.append(tests_dir)
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import QSettings
for _format in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):  # settings in the fresh profile
    QSettings.setPath(_format, QSettings.Scope.UserScope, os.environ["QGIS_CUSTOM_CONFIG_PATH"])
app = QgsApplication([], False, os.environ["QGIS_CUSTOM_CONFIG_PATH"])
app.setPrefixPath("/usr", True)
app.initQgis()
QgsSettings().setValue("cwsam/python_env", environment)
from qgis_interface import HeadlessInterface
import cwsam_qgis
iface = HeadlessInterface()
plugin = cwsam_qgis.classFactory(iface)
plugin.initGui()
import time
while plugin.report is None:  # the load-time engine check runs in a background task
    app.processEvents()
    time.sleep(0.02)
plugin.show_dock(True)
'''
SCRIPT = r'''
import sys
plugin_parent, tests_dir, environment, raster, model = sys.argv[1:6]
''' + START_PLUGIN + r'''
out = {"missing": sorted(plugin.report.missing), "bar": [i.text() for i in iface.messageBar().items()],
       "setup": plugin.dock.setup_panel.details.toPlainText(),
       "tab": plugin.dock.tabs.tabText(plugin.dock.tabs.currentIndex()),
       "algorithms": sorted(a.id() for a in plugin.provider.algorithms()),
       "plugin_file": cwsam_qgis.__file__}
try:
    import cwsam_core
    out["cwsam_core"] = cwsam_core.__file__
except ImportError as exc:
    out["cwsam_core"] = None
layer = QgsRasterLayer(raster, "sar")
QgsProject.instance().addMapLayer(layer)
panel = plugin.dock.classify_panel
panel.layer_combo.setLayer(layer)
panel.model_widget.setFilePath(model)
panel.run_button.click()
out["classify_status"] = panel.status_label.text()
out["task_started"] = panel.task is not None
sys.path.append("/usr/share/qgis/python/plugins")
from processing.core.Processing import Processing
Processing.initialize()
import processing
try:
    processing.run("cwsam:classify", {"INPUT": raster, "MODEL": model, "DEVICE": 1,
                                      "OUTPUT": os.path.join(os.path.dirname(model), "qp.tif")})
    out["processing"] = "ok"
except Exception as exc:
    out["processing"] = f"{type(exc).__name__}: {exc}"
if panel.task is not None:
    panel.task.cancel()
plugin.unload()
print("RESULT " + json.dumps(out), flush=True)
os._exit(0)  # never exitQgis(): it crashes at interpreter exit (ENVIRONMENT.md, pitfall 5)
'''


def run_plugin(tmp_path: Path, plugin_parent: Path, environment: str) -> dict:
    from plugin_helpers import write_model, write_sar

    raster = write_sar(tmp_path / "sar.tif")
    model = write_model(tmp_path / "nano.cwsam.pt")
    return run_qgis_script(tmp_path, SCRIPT, [plugin_parent, REPO / "tests", environment, raster, model])


def run_qgis_script(tmp_path: Path, script_text: str, args: list, timeout: int = 300, without: tuple = ()) -> dict:
    """Run ``script_text`` with Debian's Python (a fresh QGIS profile, no venv variables, nor those named in
    ``without``) and return the JSON it prints on its "RESULT " line."""
    script = tmp_path / "qgis_script.py"
    script.write_text(script_text)
    profile = tmp_path / "profile"
    profile.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PROJ_LIB", "PROJ_DATA", *without)}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(profile))
    done = subprocess.run([SYSTEM_PYTHON, str(script), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=tmp_path)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).is_file(), reason="needs Debian's Python with PyQGIS")
def test_missing_dependencies_show_messages_not_exceptions(tmp_path):
    empty = tmp_path / "empty-env"
    empty.mkdir()
    out = run_plugin(tmp_path, REPO, str(empty))
    assert "torch" in out["missing"] and "rasterio" in out["missing"]
    assert any("cannot import" in text and "torch" in text for text in out["bar"])
    assert out["tab"] == "Setup"
    assert "make setup" in out["setup"] and str(empty) in out["setup"]
    assert "cannot import" in out["classify_status"] and not out["task_started"]
    assert out["algorithms"] == ["cwsam:change", "cwsam:classify", "cwsam:evaluate", "cwsam:retrain",
                                 "cwsam:train"]  # all listed, even without torch
    assert "dependencies cannot be imported" in out["processing"]


def packaged_zip(tmp_path: Path) -> Path:
    """The plugin zip that ``make package`` builds, written in ``tmp_path / "dist"``."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import package_plugin
    finally:
        sys.path.remove(str(REPO / "tools"))
    return package_plugin.build(tmp_path / "dist" / "cwsam_qgis.zip")


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).is_file(), reason="needs Debian's Python with PyQGIS")
def test_packaged_zip_loads_from_an_extracted_copy(tmp_path):
    archive = packaged_zip(tmp_path)
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert {name.split("/")[0] for name in names} == {"cwsam_qgis"}
        for needed in ("cwsam_qgis/metadata.txt", "cwsam_qgis/resources/icon.svg", "cwsam_qgis/__init__.py",
                       "cwsam_qgis/libs/cwsam_core/engine/inference.py", "cwsam_qgis/requirements.txt",
                       "cwsam_qgis/requirements-classify.txt", "cwsam_qgis/libs/cwsam_core/engine/onnx_runner.py"):
            assert needed in names
        assert not any("__pycache__" in name for name in names)
        assert "pytest" not in zipped.read("cwsam_qgis/requirements.txt").decode()
        assert not [n for n in names if "/resources/demo/" in n]  # the 13 MB demo stays in the repository
        plugins = tmp_path / "plugins"
        zipped.extractall(plugins)
    out = run_plugin(tmp_path, plugins, str(REPO / ".venv"))
    assert out["missing"] == []
    assert out["plugin_file"].startswith(str(plugins))
    assert out["cwsam_core"].startswith(str(plugins / "cwsam_qgis" / "libs"))  # the bundled engine
    assert out["algorithms"] == ["cwsam:change", "cwsam:classify", "cwsam:evaluate", "cwsam:retrain",
                                 "cwsam:train"]
    assert out["task_started"] and out["processing"] == "ok"
    assert (tmp_path / "qp.tif").is_file()


def test_fix_commands_name_this_python_and_the_environment(tmp_path, monkeypatch):
    commands = dependencies.fix_commands(tmp_path / "env")
    assert commands[0] == f"cd {REPO} && make setup"  # a checkout: the project's set-up
    assert commands[-1] == 'then click "Check again" in the Setup tab'
    report = dependencies.DependencyReport(tmp_path / "env", {"torch": "ModuleNotFoundError: No module named 'torch'"})
    assert not report.ok and "torch" in report.summary()
    assert "make setup" in report.details() and "\"Light engine\" or \"Full engine\"" in report.details()
    monkeypatch.setattr(dependencies, "CHECKOUT", None)  # the plugin zip: a venv of its own, no numpy pinned
    light = dependencies.fix_commands(tmp_path / "env", light=True)
    assert light[0] == f"{dependencies.interpreter()} -m venv {tmp_path / 'env'}"
    assert light[1].endswith("requirements-classify.txt"), light[1]


def test_setup_tab_saves_the_environment_and_checks_again(qgis_app, tmp_path):
    from cwsam_qgis import settings
    from cwsam_qgis.widgets.setup_panel import SetupPanel

    panel = SetupPanel(None)
    try:
        panel.env_widget.setFilePath(str(tmp_path))  # not an environment: said so, nothing raised
        report = panel.recheck()
        assert settings.value(settings.PYTHON_ENV) == str(tmp_path)
        assert report.environment == tmp_path and any("has no" in note for note in report.notes)
        assert str(tmp_path) in panel.details.toPlainText()
        assert "Install the engine below" in panel.status_label.text() and "Setup tab" not in panel.status_label.text()
        panel.env_widget.setFilePath(str(REPO / ".venv"))
        report = panel.recheck()
        assert report.ok, report.details()
        assert "all Python dependencies found" in panel.status_label.text()
    finally:
        settings.set_value(settings.PYTHON_ENV, "")


def test_setup_tab_names_the_real_interpreter_not_a_wrapper(monkeypatch):
    """Inside QGIS on Debian sys.executable is the shell script /usr/bin/qgis: the Setup tab and the fix
    commands name the Python interpreter itself."""
    shim = Path("/usr/bin/qgis")
    if shim.is_file():
        monkeypatch.setattr(sys, "executable", str(shim))
    python = dependencies.interpreter()
    assert python.name.startswith("python") and python.is_file() and not python.is_symlink()
    assert python.read_bytes()[:4] == b"\x7fELF"
    details = dependencies.DependencyReport(None).details()
    assert f"QGIS Python: {sys.version.split()[0]} ({python})" in details and "/usr/bin/qgis)" not in details
