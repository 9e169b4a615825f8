"""CWSAM models exported to ONNX (``cwsam export``), run with ONNX Runtime: classification without torch.

An export is one ``.onnx`` file holding the whole network for one tile size (frozen SAM weights included)
and, in its metadata (``metadata_props``), the model card and where it came from:

- ``cwsam.format`` = ``cwsam-onnx``, ``cwsam.format_version``;
- ``cwsam.card``: the model card as JSON (classes, colours, bands, scales, normalisation, tile size, overlap,
  provenance), the same fields as in a ``.cwsam.pt`` file;
- ``cwsam.export``: JSON of the export (source file and its SHA-256, precision, tile size, opset, versions,
  the largest logit difference to PyTorch measured at export);
- ``cwsam.tile_size``, ``cwsam.precision``, ``cwsam.source_sha256``: the same, for tools that read flat keys.

The input is ``images`` (B x 3 x S x S float32, normalised as the card says), the output ``logits``
(B x N x S x S). The metadata is read by walking the file's protobuf fields and skipping the graph, so
reading a card (``cwsam info``, the plugin's model readout) neither needs the ``onnx`` package nor loads
the weights.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

import numpy as np

from .card import ModelCard, ModelFileError
from .runners import TileRunner, flip_mean, softmax

FORMAT = "cwsam-onnx"
FORMAT_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "images", "logits"
CUDA_BATCH_SIZE = 8  # tiles per batch on a GPU where the user gives none (no memory probe as with PyTorch)
INSTALL_HINT = "pip install -r requirements-classify.txt (or make setup-light; the Setup tab in QGIS)"
# ModelProto field numbers (onnx.proto): ir_version, graph, metadata_props.
_IR_VERSION, _GRAPH, _METADATA = 1, 7, 14


def read_metadata(path: Path | str) -> Dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read without loading the graph.

    Raises ModelFileError for a file that is not a complete ONNX model.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    size = path.stat().st_size
    metadata: Dict[str, str] = {}
    seen = set()
    with open(path, "rb") as handle:
        try:
            while handle.tell() < size:
                field, wire = _split_tag(_varint(handle))
                seen.add(field)
                if wire == 0:
                    _varint(handle)
                elif wire in (1, 5):
                    _skip(handle, 8 if wire == 1 else 4, size)
                elif wire == 2:
                    length = _varint(handle)
                    if field == _METADATA:
                        key, value = _entry(_read(handle, length, size))
                        metadata[key] = value
                    else:
                        _skip(handle, length, size)
                else:
                    raise ValueError(f"unexpected wire type {wire}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{path.name} is not a readable ONNX file (corrupt or truncated: {exc}); "
                                 "export the model again with `cwsam export`") from None
    if not {_IR_VERSION, _GRAPH} <= seen:
        raise ModelFileError(f"{path.name} is not a readable ONNX file (corrupt or truncated: no graph); "
                             "export the model again with `cwsam export`")
    return metadata


def _varint(handle: BinaryIO) -> int:
    result, shift = 0, 0
    while True:
        byte = handle.read(1)
        if not byte:
            raise ValueError("the file ends inside a field")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("malformed number")


def _split_tag(tag: int) -> Tuple[int, int]:
    if tag >> 3 == 0:
        raise ValueError("field number 0")
    return tag >> 3, tag & 7


def _skip(handle: BinaryIO, length: int, size: int) -> None:
    if handle.tell() + length > size:
        raise ValueError("the file ends inside a field")
    handle.seek(length, os.SEEK_CUR)


def _read(handle: BinaryIO, length: int, size: int) -> bytes:
    if handle.tell() + length > size:
        raise ValueError("the file ends inside a field")
    return handle.read(length)


def _entry(data: bytes) -> Tuple[str, str]:
    """A StringStringEntryProto: key (field 1) and value (field 2)."""
    values = {1: "", 2: ""}
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        field, wire = _split_tag(_varint(stream))
        if wire != 2:
            raise ValueError("malformed metadata entry")
        values[field] = _read(stream, _varint(stream), len(data)).decode("utf-8")
    return values[1], values[2]


def read_onnx_export(path: Path | str) -> Tuple[ModelCard, Dict[str, Any]]:
    """The model card and export record of a CWSAM ONNX export."""
    path = Path(path)
    metadata = read_metadata(path)
    if metadata.get("cwsam.format") != FORMAT or "cwsam.card" not in metadata:
        raise ModelFileError(
            f"{path.name} is an ONNX model but not a CWSAM export (its metadata has no CWSAM model card): "
            "make one from a CWSAM model file with `cwsam export MODEL.cwsam.pt --output MODEL.onnx`"
        )
    try:
        version = int(metadata.get("cwsam.format_version", "0"))
    except ValueError:
        version = 0
    if not 1 <= version <= FORMAT_VERSION:
        raise ModelFileError(f"{path.name} has CWSAM ONNX format {metadata.get('cwsam.format_version')!r}; this "
                             f"CWSAM reads up to {FORMAT_VERSION}: upgrade CWSAM")
    try:
        card = ModelCard.from_dict(json.loads(metadata["cwsam.card"]))
        export = json.loads(metadata.get("cwsam.export", "{}"))
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path.name}: its CWSAM model card cannot be read ({exc}); export the model "
                             "again with `cwsam export`") from None
    return card, export


def read_onnx_card(path: Path | str) -> ModelCard:
    return read_onnx_export(path)[0]


def weights_line(export: Dict[str, Any]) -> str:
    """The "Weights:" line of ``cwsam info`` for an export: every weight is in the file."""
    precision = "int8 linear layers" if export.get("precision") == "int8" else "float32"
    return f"all in this ONNX file ({precision}, {export.get('tile_size', '?')} px tiles): no SAM checkpoint needed"


def describe_onnx(path: Path | str) -> str:
    """The card and export record of an ONNX export as text, for ``cwsam info`` and the plugin."""
    card, export = read_onnx_export(path)
    lines = [card.describe(weights_line(export)), "ONNX export:"]
    lines += [f"  {key}: {value}" for key, value in export.items()]
    return "\n".join(lines)


def import_onnxruntime():
    """The onnxruntime module, or a ModelFileError saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelFileError(f"ONNX models need the onnxruntime package ({exc}): {INSTALL_HINT}") from None
    return onnxruntime


def execution_providers(device: str, available: List[str]) -> List[Any]:
    """ONNX Runtime providers for a device setting: CUDA where asked for or (auto) where available, then CPU."""
    from .inference import ClassificationError

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
        from .inference import ClassificationError

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
