"""CWSAM models exported to ONNX (``cwsam export``), run with ONNX Runtime: classification without torch.

The export's format and card are read by ``model.onnx_card``. The input is ``images`` (B x 3 x S x S float32,
normalised as the card says), the output ``logits`` (B x N x S x S).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import ClassificationError, ModelFileError
from ..model.onnx_card import INPUT_NAME, OUTPUT_NAME, read_onnx_export
from .runners import TileRunner, flip_mean, softmax

CUDA_BATCH_SIZE = 8  # tiles per batch on a GPU where the user gives none (no memory probe as with PyTorch)
INSTALL_HINT = "pip install -r requirements-classify.txt (or make setup-light; the Setup tab in QGIS)"


def import_onnxruntime():
    """The onnxruntime module, or a ModelFileError saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelFileError(f"ONNX models need the onnxruntime package ({exc}): {INSTALL_HINT}") from None
    return onnxruntime


def execution_providers(device: str, available: List[str]) -> List[Any]:
    """ONNX Runtime providers for a device setting: CUDA where asked for or (auto) where available, then CPU."""
    setting = (device or "auto").strip().lower()
    if setting == "cpu":
        return ["CPUExecutionProvider"]
    if setting == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
    if setting.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ClassificationError(f"device {setting} was asked for but this ONNX Runtime has no CUDA support "
                                      "(install onnxruntime-gpu): use --device auto or cpu")
        index = setting.partition(":")[2]
        if index and not index.isdigit():
            raise ClassificationError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    raise ClassificationError(f"device {device!r} is not available for ONNX models: use auto, cpu, cuda or cuda:N")


class OnnxRunner(TileRunner):
    """An ONNX export run by ONNX Runtime on ``device`` (auto: CUDA where onnxruntime-gpu finds a GPU, else
    the CPU, with ``threads`` threads). ``tile_size`` other than the exported one is refused."""

    def __init__(self, path: Path | str, device: str = "auto", threads: Optional[int] = None,
                 tile_size: Optional[int] = None) -> None:
        self.path = Path(path)
        self.card, self.export_info = read_onnx_export(self.path)
        self.tile_size = int(self.export_info.get("tile_size") or self.card.tile_size or self.card.input_size)
        if tile_size is not None and tile_size != self.tile_size:
            raise ClassificationError(
                f"{self.path.name} was exported for {self.tile_size} px tiles and runs at that size only: leave the "
                f"tile size empty or set {self.tile_size} (for {tile_size} px tiles, export the model file again "
                f"at that size)")
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        # Fatal only: a CUDA provider that cannot start (no GPU, missing CUDA libraries) falls back to the CPU,
        # which the provider list, the summary line and the run record say; it is not an error.
        options.log_severity_level = 4
        if threads:
            options.intra_op_num_threads = threads
        requested = execution_providers(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=requested)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types for bad files
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ModelFileError(f"{self.path.name} cannot be loaded by ONNX Runtime (corrupt file?): {first}; "
                                 "export the model again with `cwsam export`") from None
        self.providers = self.session.get_providers()
        if str(device).startswith("cuda") and "CUDAExecutionProvider" not in self.providers:
            raise ClassificationError(f"device {device} was asked for but ONNX Runtime cannot use a CUDA GPU here "
                                      "(no GPU, or its CUDA libraries are missing): use --device auto or cpu")
        on_gpu = self.providers[0] == "CUDAExecutionProvider"
        device_id = self.session.get_provider_options().get("CUDAExecutionProvider", {}).get("device_id", "0")
        self.device = f"cuda:{device_id}" if on_gpu else "cpu"
        self._check_signature()

    def _check_signature(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape) if inputs else []
        if (len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(shape) != 4
                or shape[1:] != [3, self.tile_size, self.tile_size] or not outputs):
            raise ModelFileError(f"{self.path.name}: its network takes {shape} where its card says "
                                 f"[batch, 3, {self.tile_size}, {self.tile_size}]: export the model again with "
                                 "`cwsam export`")

    def batch_size(self, tile: int) -> Tuple[int, str]:
        if self.device.startswith("cuda"):
            return CUDA_BATCH_SIZE, f"{CUDA_BATCH_SIZE} (the default for ONNX Runtime on a GPU)"
        return super().batch_size(tile)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """B x N x S x S logits of B x 3 x S x S images."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})[0]

    def probabilities(self, images: np.ndarray, flips: bool = False) -> np.ndarray:
        def probabilities_of(batch: np.ndarray) -> np.ndarray:
            return softmax(self.logits(batch))

        return flip_mean(probabilities_of, images, np.flip) if flips else probabilities_of(images)

    def record(self) -> Dict[str, object]:
        ort = import_onnxruntime()
        return {"engine": {"name": "onnxruntime", "provider": self.providers[0], "providers": self.providers,
                           "precision": self.export_info.get("precision", "float32")},
                "software": {"onnxruntime": ort.__version__}}
