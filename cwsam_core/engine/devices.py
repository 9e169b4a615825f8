"""Which device runs the model and why, in words a user can act on; the batch of tiles that fits free GPU
memory; an optional ``torch.compile`` of the image encoder that falls back to eager mode when it fails.

Torch only (no rasterio, no QGIS): the plugin's Setup and Classify tabs, the CLI and the engine share it.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from .runners import cpu_batch_size

LOG = logging.getLogger("cwsam")
GIB = 2**30
MAX_AUTO_BATCH = 32  # more rarely helps: batches are formed within one row of tiles
GPU_MEMORY_SHARE = 0.7  # of the free GPU memory that the automatic batch may use


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def why_no_cuda() -> str:
    """Why PyTorch cannot use a CUDA GPU here, in one sentence (call only when ``torch.cuda.is_available()`` is false)."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return (f"this PyTorch ({torch.__version__}) is a CPU-only build: an NVIDIA GPU needs the CUDA build of "
                "PyTorch (see pytorch.org, 'Get started')")
    try:
        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001 - torch names the cause (no driver, driver too old, no device)
        first = str(exc).strip().split(". ")[0].rstrip(".")
        return f"PyTorch is built for CUDA {torch.version.cuda} but cannot use it: {first}"
    return f"PyTorch is built for CUDA {torch.version.cuda} but finds no CUDA GPU"


def gpu_summary(device: torch.device) -> str:
    """"NVIDIA H200, 138.2 GiB free of 139.8 GiB" for a CUDA device."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    name = torch.cuda.get_device_name(index)
    try:
        free, total = torch.cuda.mem_get_info(index)
    except RuntimeError:
        return name
    return f"{name}, {free / GIB:.1f} GiB free of {total / GIB:.1f} GiB"


def describe_device(setting: str = "auto") -> Tuple[Optional[torch.device], str]:
    """The device a run with this device setting uses and why, e.g. ``(cuda, "GPU cuda: NVIDIA H200, ...")``
    or ``(cpu, "CPU: this PyTorch ... is a CPU-only build ...")``. The device is None when the setting
    asks for one that is not available (the run would stop with an error); the text then says why."""
    setting = (setting or "auto").strip().lower()
    if setting == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
            return device, f"GPU ({device}): {gpu_summary(device)}"
        if _mps_available():
            return torch.device("mps"), "GPU (mps): Apple Metal"
        return torch.device("cpu"), f"CPU: {why_no_cuda()}"
    if setting == "cpu":
        if torch.cuda.is_available():
            return torch.device("cpu"), (f"CPU: the device setting is cpu (the GPU {gpu_summary(torch.device('cuda'))} "
                                         "is not used; choose auto or cuda to use it)")
        return torch.device("cpu"), "CPU: the device setting is cpu"
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            return None, f"the device setting is {setting}, but {why_no_cuda()}: choose auto or cpu"
        try:
            device = torch.device(setting)
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise ValueError
        except (RuntimeError, ValueError):
            return None, (f"the device setting is {setting}, but this machine has {torch.cuda.device_count()} "
                          "CUDA GPU(s) (cuda:0 ...): choose auto or cuda")
        return device, f"GPU ({device}): {gpu_summary(device)}"
    if setting == "mps":
        if _mps_available():
            return torch.device("mps"), "GPU (mps): Apple Metal"
        return None, "the device setting is mps, but Apple Metal (MPS) is not available here: choose auto or cpu"
    return None, f"unknown device setting {setting!r}: use auto, cpu, cuda, cuda:N or mps"


def auto_batch_size(model: nn.Module, device: torch.device, tile: int, autocast: Callable[[], object],
                    probe: int = 2) -> Tuple[int, str]:
    """Tiles per batch when the user gives none, and how it was chosen.

    On CUDA: the memory of a forward pass of ``probe`` tiles (under ``autocast()``, as classification runs)
    is measured and the batch fills ``GPU_MEMORY_SHARE`` of the free memory, 1 to ``MAX_AUTO_BATCH``.
    Elsewhere ``CPU_BATCH_SIZE``.
    """
    if device.type != "cuda":
        return cpu_batch_size()
    model = model.to(device).eval()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        with torch.inference_mode(), autocast():
            model(torch.zeros(probe, 3, tile, tile, device=device))
        torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return 1, f"1 ({probe} tiles of {tile} px do not fit in {free / GIB:.1f} GiB of free GPU memory)"
    per_tile = max(1, (torch.cuda.max_memory_allocated(device) - before) / probe)
    torch.cuda.empty_cache()
    batch = int(max(1, min(MAX_AUTO_BATCH, free * GPU_MEMORY_SHARE // per_tile)))
    return batch, (f"{batch} (from {free / GIB:.1f} GiB of free GPU memory, about {per_tile / GIB:.2f} GiB "
                   f"per {tile} px tile)")


def compile_encoder(model: nn.Module, warn: Callable[[str], None] = LOG.warning, **options) -> bool:
    """``torch.compile`` the model's image encoder in place; parameter names and state dicts do not change.

    Compilation happens at the first call; if it (or any later compiled call) fails, ``warn`` is told
    once and the encoder runs eagerly from then on. ``options`` go to ``torch.compile`` (e.g. ``backend``).
    Returns whether compilation was set up.
    """
    encoder = getattr(model, "image_encoder", model)
    if not hasattr(torch, "compile"):
        warn(f"--compile: this PyTorch ({torch.__version__}) has no torch.compile; running without it")
        return False
    eager = encoder.forward
    try:
        compiled = torch.compile(eager, **options)
    except Exception as exc:  # noqa: BLE001 - any failure means: run eagerly
        warn(f"--compile: torch.compile is unavailable here ({_first_line(exc)}); running without it")
        return False
    state = {"failed": False}

    def forward(*args, **kwargs):
        if not state["failed"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                state["failed"] = True
                warn(f"--compile: compiling the image encoder failed ({_first_line(exc)}); running without it")
        return eager(*args, **kwargs)

    encoder.forward = forward  # an instance attribute: nn.Module.__call__ finds it before the class's
    encoder.compile_state = state  # {"failed": bool}
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__
