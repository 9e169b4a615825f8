"""The model card of a model file or an ONNX export, read without building the network.

Torch-free: an ONNX export's card is read from its metadata, a ``.cwsam.pt`` file's from the archive's
structure alone (``pt_card``), so QGIS's own process can show them.
"""

from __future__ import annotations

from pathlib import Path

from ..common.card import ONNX_SUFFIX, ModelCard
from .onnx_card import read_onnx_card
from .pt_card import read_pt_card


def is_onnx(path: Path | str) -> bool:
    """Whether ``path`` names an ONNX export (by its suffix, as the file dialogs filter)."""
    return str(path).lower().endswith(ONNX_SUFFIX)


def read_card(path: Path | str) -> ModelCard:
    """The model card of a ``.cwsam.pt`` model file or of an ``.onnx`` export, without torch."""
    return read_onnx_card(path) if is_onnx(path) else read_pt_card(path)
