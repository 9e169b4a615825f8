"""The card of a CWSAM model exported to ONNX (``cwsam export``), read from the file's metadata.

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
from typing import Any, BinaryIO, Dict, Tuple

from ..common.card import ModelCard
from ..errors import ModelFileError

FORMAT = "cwsam-onnx"
FORMAT_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "images", "logits"
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
