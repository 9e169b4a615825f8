"""The Setup and Classify tabs say which device will run and why, as the engine's own process sees it
(the engine runs in a worker process: QGIS's never imports torch), in headless QGIS."""

from __future__ import annotations

import pytest
from qgis_interface import HeadlessInterface

from cwsam_core.engine.devices import describe_device
from cwsam_qgis import dependencies, settings
from cwsam_qgis.widgets.classify_panel import ClassifyPanel
from cwsam_qgis.widgets.setup_panel import SetupPanel, device_line


@pytest.fixture(autouse=True)
def keep_settings():
    before = settings.value(settings.DEVICE), settings.value(settings.PYTHON_ENV)
    yield
    settings.set_value(settings.DEVICE, before[0])
    settings.set_value(settings.PYTHON_ENV, before[1])


def expected(setting: str) -> str:
    """What this machine's torch says for ``setting`` (the worker runs the same environment's torch)."""
    device, reason = describe_device(setting)
    return f"Runs on {reason}" if device is not None else f"Cannot run: {reason}"


def test_setup_tab_shows_the_engines_device_after_a_check(qgis_app):
    settings.set_value(settings.DEVICE, "auto")  # the Classify tab's Device setting
    panel = SetupPanel(None)
    report = panel.recheck()
    assert report.ok and panel.device_label.text() == expected("auto")
    assert report.python and "the engine runs in its own process" in panel.details.toPlainText()
    settings.set_value(settings.DEVICE, "cpu")
    panel.recheck()
    assert panel.device_label.text() == "Runs on CPU: the device setting is cpu" == expected("cpu")
    panel.show_report(dependencies.DependencyReport(environment=None, missing={"torch": "ImportError"}))
    assert panel.device_label.text() == ""


def test_classify_tab_follows_the_device_setting(qgis_app):
    panel = ClassifyPanel(HeadlessInterface())
    for setting in ("auto", "cpu", "cuda"):
        panel.device_combo.setCurrentText(setting)
        assert panel.device_label.text() == expected(setting)
    panel.shutdown()


def test_an_engine_that_cannot_run_is_reported_not_raised(qgis_app, tmp_path, light_engine):
    settings.set_value(settings.PYTHON_ENV, str(tmp_path))  # no Python there
    line = device_line("auto")
    assert line.startswith("Device: unknown, the engine does not run") and "no Python interpreter" in line
    settings.set_value(settings.PYTHON_ENV, str(light_engine))  # the light install: no torch
    line = device_line("auto")
    assert line.startswith("Device: unknown, the engine cannot import torch (ModuleNotFoundError")
