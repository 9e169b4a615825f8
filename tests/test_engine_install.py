"""The Setup tab's one-click engine install, driven with pytest-qt: a real light install from the package
registry into a new folder, a cancel that keeps nothing, and a refused folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_helpers import demo_onnx_model

from cwsam_qgis import settings
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
