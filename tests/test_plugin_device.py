"""The Setup and Classify tabs say which device will run and why, in headless QGIS."""

from __future__ import annotations

import pytest
import torch
from qgis_interface import HeadlessInterface
from test_devices import fake_gpu, no_gpu

from cwsam_qgis import dependencies, settings
from cwsam_qgis.widgets.classify_panel import ClassifyPanel
from cwsam_qgis.widgets.setup_panel import SetupPanel, device_line


@pytest.fixture(autouse=True)
def keep_device_setting():
    before = settings.value(settings.DEVICE)
    yield
    settings.set_value(settings.DEVICE, before)


def test_setup_tab_names_the_gpu_and_its_free_memory(qgis_app, monkeypatch):
    fake_gpu(monkeypatch, "NVIDIA RTX 4090", free_gib=20.5, total_gib=24.0)
    settings.set_value(settings.DEVICE, "auto")  # the Classify tab's Device setting
    panel = SetupPanel(dependencies.DependencyReport(environment=None))
    assert panel.device_label.text() == "Runs on GPU (cuda:0): NVIDIA RTX 4090, 20.5 GiB free of 24.0 GiB"
    settings.set_value(settings.DEVICE, "cpu")
    panel.show_report(dependencies.DependencyReport(environment=None))
    assert panel.device_label.text() == ("Runs on CPU: the device setting is cpu (the GPU NVIDIA RTX 4090, 20.5 GiB "
                                         "free of 24.0 GiB is not used; choose auto or cuda to use it)")
    panel.show_report(dependencies.DependencyReport(environment=None, missing={"torch": "ImportError"}))
    assert panel.device_label.text() == ""


def test_setup_tab_says_why_the_cpu(qgis_app, monkeypatch):
    no_gpu(monkeypatch, cuda_build=False)
    settings.set_value(settings.DEVICE, "auto")
    panel = SetupPanel(dependencies.DependencyReport(environment=None))
    assert panel.device_label.text().startswith("Runs on CPU: this PyTorch (")
    assert "CPU-only build" in panel.device_label.text()


def test_classify_tab_follows_the_device_setting(qgis_app, monkeypatch):
    no_gpu(monkeypatch, cuda_build=True)
    panel = ClassifyPanel(HeadlessInterface())
    panel.device_combo.setCurrentText("auto")
    assert panel.device_label.text() == ("Runs on CPU: PyTorch is built for CUDA 12.4 but cannot use it: Found no "
                                         "NVIDIA driver on your system")
    panel.device_combo.setCurrentText("cpu")
    assert panel.device_label.text() == "Runs on CPU: the device setting is cpu"
    panel.device_combo.setCurrentText("cuda")
    assert panel.device_label.text().startswith("Cannot run: the device setting is cuda, but PyTorch is built")
    fake_gpu(monkeypatch, "NVIDIA A100", free_gib=70.0, total_gib=80.0)
    panel.device_combo.setCurrentText("auto")
    assert panel.device_label.text() == "Runs on GPU (cuda:0): NVIDIA A100, 70.0 GiB free of 80.0 GiB"
    panel.shutdown()


def test_a_broken_engine_is_reported_not_raised(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def failing(name, *args, **kwargs):
        if name == "cwsam_core.engine.devices":
            raise ImportError("no torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing)
    assert device_line("auto") == "Device: unknown, the engine does not import (ImportError); see the Setup tab"
    assert torch  # torch itself stays importable for the other tests
