"""The model card of a model file or an ONNX export, read without building the network.

Torch-free for ONNX exports: a ``.cwsam.pt`` file needs torch to be read, so that reader is imported only
when such a file is given.
"""

from __future__ import annotations

from pathlib import Path

from ..common.card import ONNX_SUFFIX, ModelCard
from .onnx_card import read_onnx_card


def is_onnx(path: Path | str) -> bool:
    """Whether ``path`` names an ONNX export (by its suffix, as the file dialogs filter)."""
    return str(path).lower().endswith(ONNX_SUFFIX)


def read_card(path: Path | str) -> ModelCard:
    """The model card of a ``.cwsam.pt`` model file or of an ``.onnx`` export; only the former needs torch."""
    if is_onnx(path):
        return read_onnx_card(path)
    from .model_file import read_model_card  # torch: kept off the ONNX-only (light install) path

    return read_model_card(path)
