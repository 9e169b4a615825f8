"""Which device runs and why (describe_device), the automatic batch size and the --compile fallback."""

from __future__ import annotations

import pytest
import torch

from cwsam_core.engine import devices
from cwsam_core.engine.devices import auto_batch_size, compile_encoder, describe_device
from cwsam_core.model.build import build_cwsam


def fake_gpu(monkeypatch, name: str = "NVIDIA Test GPU", free_gib: float = 10.0, total_gib: float = 16.0) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (int(free_gib * 2**30), int(total_gib * 2**30)))


def no_gpu(monkeypatch, cuda_build: bool, init_error: str = "Found no NVIDIA driver on your system. Please check") -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4" if cuda_build else None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)

    def init():
        raise RuntimeError(init_error)

    monkeypatch.setattr(torch.cuda, "init", init)


def test_a_gpu_is_named_with_its_free_memory(monkeypatch):
    fake_gpu(monkeypatch)
    device, reason = describe_device("auto")
    assert device == torch.device("cuda", 0)
    assert reason == "GPU (cuda:0): NVIDIA Test GPU, 10.0 GiB free of 16.0 GiB"
    assert describe_device("cuda")[1] == "GPU (cuda): NVIDIA Test GPU, 10.0 GiB free of 16.0 GiB"
    device, reason = describe_device("cpu")
    assert device == torch.device("cpu")
    assert reason.startswith("CPU: the device setting is cpu (the GPU NVIDIA Test GPU") and "choose auto" in reason
    device, reason = describe_device("cuda:3")
    assert device is None and "1 CUDA GPU(s)" in reason


def test_cpu_only_build_is_the_reason(monkeypatch):
    no_gpu(monkeypatch, cuda_build=False)
    device, reason = describe_device("auto")
    assert device == torch.device("cpu")
    assert reason.startswith("CPU: this PyTorch (") and "is a CPU-only build" in reason


def test_missing_driver_is_the_reason(monkeypatch):
    no_gpu(monkeypatch, cuda_build=True)
    device, reason = describe_device("auto")
    assert device == torch.device("cpu")
    assert reason == "CPU: PyTorch is built for CUDA 12.4 but cannot use it: Found no NVIDIA driver on your system"


def test_unusable_settings_give_no_device_and_say_why(monkeypatch):
    no_gpu(monkeypatch, cuda_build=True)
    device, reason = describe_device("cuda")
    assert device is None
    assert reason.startswith("the device setting is cuda, but PyTorch is built for CUDA 12.4") and "choose auto" in reason
    assert describe_device("mps") == (None, "the device setting is mps, but Apple Metal (MPS) is not available here: "
                                            "choose auto or cpu")
    assert describe_device("tpu")[0] is None
    assert describe_device("cpu") == (torch.device("cpu"), "CPU: the device setting is cpu")


def test_this_machine_is_described_without_errors():
    device, reason = describe_device("auto")
    assert reason.startswith("GPU (" if torch.cuda.is_available() else "CPU: ")


def test_batch_size_without_a_gpu_is_the_default():
    model = build_cwsam("vit_nano", 2, input_size=64)
    assert auto_batch_size(model, torch.device("cpu"), 64, lambda: torch.autocast("cpu", enabled=False)) == (
        4, "4 (the default without a CUDA GPU)")


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    torch.manual_seed(0)
    model = build_cwsam("vit_nano", 2, input_size=64).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)

    def broken_compile(function, **options):
        def compiled(*args, **kwargs):
            raise RuntimeError("inductor: no working C++ compiler\nmore detail")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    warnings = []
    assert compile_encoder(model, warnings.append)
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected)
        torch.testing.assert_close(model(images), expected)
    assert warnings == ["--compile: compiling the image encoder failed (RuntimeError: inductor: no working C++ "
                        "compiler); running without it"]
    assert model.image_encoder.compile_state == {"failed": True}
    assert "image_encoder.blocks.0.attn.qkv.weight" in model.state_dict()


def test_compiled_encoder_gives_the_same_outputs_and_names():
    torch.manual_seed(0)
    model = build_cwsam("vit_nano", 2, input_size=64).eval()
    names = list(model.state_dict())
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
    warnings = []
    assert compile_encoder(model, warnings.append, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=1e-5)
    assert warnings == [] and model.image_encoder.compile_state == {"failed": False}
    assert list(model.state_dict()) == names


def test_classification_chooses_the_batch_and_records_a_failed_compile(tmp_path, monkeypatch):
    import json

    from test_inference import card_for, write_sar

    from cwsam_core.engine.inference import classify_raster

    def broken_compile(function, **options):
        def compiled(*args, **kwargs):
            raise RuntimeError("no C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(0)
    model = build_cwsam("vit_nano", 3, input_size=64)
    result = classify_raster(write_sar(tmp_path / "sar.tif", 100, 90), tmp_path / "classes.tif", model, card_for(64),
                             device="cpu", compile_model=True)
    record = json.loads(result.record.read_text())
    assert record["parameters"]["batch_size"] == 4
    assert record["parameters"]["batch_size_source"] == "4 (the default without a CUDA GPU)"
    assert record["parameters"]["compile"] is True and record["device"] == "cpu"
    assert ("--compile: compiling the image encoder failed (RuntimeError: no C++ compiler); running without it"
            in record["warnings"])
    assert result.output.is_file()
