"""``cwsam export``: a CWSAM model file as one stand-alone ONNX file for ONNX Runtime (format: ``model.onnx_card``).

The network is traced at one tile size with PyTorch's TorchScript-based exporter (``dynamo=False``: it
needs no onnxscript and handles SAM's encoder as it is), with two swaps that leave the function unchanged:
the attention written out as matrix products (``FusedAttention`` with its "explicit" strategy: SAM's
arithmetic, equal to the fused kernels within 1e-5, with qkv and proj on the real tokens only; SAM's own
``Attention`` would run them on the padded windows too, 72 % more tokens in vit_b's windowed blocks at
S = 512, and was 1.09 times slower in ONNX Runtime, docs/EVALUATION.md) and the input module's FFT
low-pass as matrix products (``MatrixLowPass``; ONNX has no real-FFT operators that all runtimes
support). The batch size stays free. Before anything is written the export is run with ONNX
Runtime on a random batch and compared with PyTorch's unchanged model; the largest logit difference goes
into the file's metadata. ``int8`` adds ONNX Runtime's dynamic int8 quantisation of the linear layers
(MatMul and Gemm with constant weights; the low-pass matrices stay float32).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from .. import __version__
from ..common.card import ModelCard
from ..common.paths import check_outputs, file_sha256, output_file_problem
from ..errors import ExportError, OutputConflictError
from ..model.card_reader import is_onnx
from ..model.model_file import load_model_file
from ..model.modeling import CWSAM
from ..model.modeling.adapted_block import set_attention
from ..model.modeling.fused_attention import FusedAttention
from ..model.onnx_card import FORMAT, FORMAT_VERSION, INPUT_NAME, OUTPUT_NAME
from .onnx_runner import import_onnxruntime
from .runners import tile_size_problem

OPSET = 17
# A protobuf message, and so an ONNX file without external data, cannot exceed 2 GiB.
MAX_WEIGHT_BYTES = 2**31 - 2**27
# fp32 exports whose logits differ from PyTorch's by more than this (relative to their range) are refused.
MAX_RELATIVE_DIFFERENCE = 1e-3
CHECK_BATCH = 2


@dataclass
class ExportResult:
    path: Path
    card: ModelCard
    export: Dict[str, Any]
    bytes: int


def check_export_paths(model_path: Path | str, output: Path | str, sam_checkpoint: Optional[Path | str]) -> None:
    """Refuse, before any work, an output that is not an .onnx file name, is an input, or has no folder."""
    output = Path(output)
    try:
        check_outputs([("model file", [model_path]), ("SAM checkpoint", [sam_checkpoint])], [("output", [output])])
    except OutputConflictError as exc:
        raise ExportError(str(exc)) from None
    if not is_onnx(output):
        raise ExportError(f"the export is an ONNX file: give an output name ending in .onnx, not {output.name}")
    problem = output_file_problem(output, "output", "model.onnx")
    if problem:
        raise ExportError(problem)


def prepare_for_export(model: CWSAM) -> CWSAM:
    """Swap in the export-friendly equivalents (written-out attention, the matrix low-pass), in place."""
    set_attention(model, "fused")
    for module in model.modules():
        if isinstance(module, FusedAttention):
            module.strategy = "explicit"
    model.image_encoder.input_module.use_matrix_low_pass(model.input_size)
    return model


def export_onnx(model_path: Path | str, output: Path | str, sam_checkpoint: Optional[Path | str] = None,
                int8: bool = False, tile_size: Optional[int] = None, seed: int = 0) -> ExportResult:
    """Export the model file at ``model_path`` (with its SAM checkpoint where it needs one) to ``output``.

    ``tile_size`` (default: the size the model was trained at, as ``cwsam classify`` uses it) is the only
    size the export runs at; ``seed`` draws the test batch compared with PyTorch. Written to a temporary
    file and renamed at the end: after an error nothing is left at ``output``.
    """
    model_path, output = Path(model_path), Path(output)
    check_export_paths(model_path, output, sam_checkpoint)
    if tile_size is not None and (problem := tile_size_problem(tile_size)):
        raise ExportError(problem)
    ort = import_onnxruntime()
    import onnx

    model, card = load_model_file(model_path, sam_checkpoint, device="cpu", input_size=tile_size)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if weight_bytes > MAX_WEIGHT_BYTES:
        raise ExportError(f"{card.backbone}'s weights ({weight_bytes / 2**30:.1f} GiB) exceed the 2 GiB of one ONNX "
                          "file: export works for vit_tiny, vit_b and vit_l")
    size = model.input_size
    images = torch.from_numpy(np.random.default_rng(seed).standard_normal((CHECK_BATCH, 3, size, size))
                              .astype(np.float32))
    with torch.inference_mode():
        reference = model(images).numpy()
    prepare_for_export(model)
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    quantized = output.with_name(f".{output.name}.{os.getpid()}.int8.partial")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python values fixed by the tile size
            try:
                torch.onnx.export(model, (images,), str(partial), dynamo=False, opset_version=OPSET,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
            except Exception as exc:  # noqa: BLE001 - the exporter's errors name an operator or a Python line
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
                raise ExportError(f"this {card.backbone} model cannot be exported to ONNX ({type(exc).__name__}: "
                                  f"{first}); please report it") from None
        difference = _max_difference(ort, partial, images.numpy(), reference)
        scale = max(1.0, float(np.abs(reference).max()))
        if not difference <= MAX_RELATIVE_DIFFERENCE * scale:
            raise ExportError(f"the exported network's logits differ from PyTorch's by {difference:.3g} "
                              f"(logits up to {scale:.3g}): not exported; please report this model")
        export = {
            "source": model_path.name, "source_sha256": file_sha256(model_path), "precision": "float32",
            "tile_size": size, "opset": OPSET, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cwsam_version": __version__, "torch_version": str(torch.__version__),
            "onnxruntime_version": ort.__version__, "max_abs_logit_difference": float(difference),
            **({"sam_checkpoint": card.sam_checkpoint} if card.sam_checkpoint else {}),
        }
        if int8:
            logging.disable(logging.WARNING)  # the quantiser advises pre-processing on the root logger
            try:
                _quantize(partial, quantized)
            finally:
                logging.disable(logging.NOTSET)
            os.replace(quantized, partial)
            export["precision"] = "int8"
            export["max_abs_logit_difference_int8"] = float(_max_difference(ort, partial, images.numpy(), reference))
        card.tile_size = size
        proto = onnx.load(str(partial))
        proto.producer_name, proto.producer_version = "cwsam", __version__
        for key, value in _metadata(card, export).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(partial))
        os.replace(partial, output)
    except BaseException:
        for path in (partial, quantized):
            path.unlink(missing_ok=True)
        raise
    return ExportResult(output, card, export, output.stat().st_size)


def _max_difference(ort, path: Path, images: np.ndarray, reference: np.ndarray) -> float:
    """Largest absolute difference between ONNX Runtime's logits of ``images`` (CPU) and ``reference``."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    return float(np.abs(logits - reference).max())


def _quantize(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic int8 quantisation of MatMul/Gemm weights, the low-pass matrices excepted."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    low_pass = [node.name for node in graph.node if "low_pass_operator" in node.name]
    quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8,
                     nodes_to_exclude=low_pass)


def _metadata(card: ModelCard, export: Dict[str, Any]) -> Dict[str, str]:
    """The ``metadata_props`` of an export (see ``model.onnx_card``)."""
    return {
        "cwsam.format": FORMAT, "cwsam.format_version": str(FORMAT_VERSION),
        "cwsam.card": json.dumps(card.to_dict()), "cwsam.export": json.dumps(export),
        "cwsam.tile_size": str(export["tile_size"]), "cwsam.precision": export["precision"],
        "cwsam.source_sha256": export["source_sha256"],
    }
