"""The model card of a ``.cwsam.pt`` model file, read without PyTorch.

A model file is a ``torch.save`` zip archive: ``<name>/data.pkl`` holds the structure (plain values, and a
reference to each tensor), ``<name>/data/<key>`` the tensors' bytes. The card is plain values, so it can be
read from ``data.pkl`` alone with an unpickler that builds nothing but containers and numbers: each tensor
becomes ``None``, and any other global is refused, as ``torch.load(weights_only=True)`` refuses it. This is
what lets QGIS's own process show a model's classes and bands without importing torch.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

from .. import __version__
from ..common.card import FORMAT_VERSION, ModelCard
from ..errors import ModelFileError

FORMAT = "cwsam-model"  # as model_file writes it


def _tensor_placeholder(*_args: Any, **_kwargs: Any) -> None:
    return None


class _CardUnpickler(pickle.Unpickler):
    """Containers and numbers only; torch's tensor and storage references as ``None``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _tensor_placeholder  # _rebuild_tensor_v2, FloatStorage, dtypes...: the card holds none
        raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")

    def persistent_load(self, pid: Any) -> None:  # a tensor's storage in data/<key>: not needed for the card
        return None


def read_pt_card(path: Path | str) -> ModelCard:
    """The card of a ``.cwsam.pt`` model file; ``ModelFileError`` naming the problem for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                raise ModelFileError(f"{path} is not a CWSAM model file: it is a zip archive without a PyTorch payload")
            payload = _CardUnpickler(archive.open(name)).load()
    except zipfile.BadZipFile:
        raise ModelFileError(f"{path} is not a CWSAM model file (.cwsam.pt, written by `cwsam train` or the "
                             "plugin's Fine-tune)") from None
    except pickle.UnpicklingError as exc:
        raise ModelFileError(f"{path} contains pickled Python objects ({exc}); refusing to read it") from None
    except (EOFError, ValueError, TypeError, OSError) as exc:
        raise ModelFileError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(payload.get("card"), dict):
        raise ModelFileError(
            f"{path} is not a CWSAM model file (a SAM checkpoint goes in the SAM checkpoint setting, "
            "a CWSAM model file is made by `cwsam train` or the plugin's Fine-tune)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{path} has model file format {version}; this CWSAM ({__version__}) reads up to "
                             f"{FORMAT_VERSION}: upgrade CWSAM")
    return ModelCard.from_dict(payload["card"])
