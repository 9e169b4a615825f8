"""Reading SAM checkpoints (official and the CWSAM authors' layout) into a CWSAM model."""

from __future__ import annotations

import os
import pickle
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..common.card import DEFAULT_POSITION_TABLES, POSITION_TABLE_MODES
from ..common.paths import describe_non_model
from ..errors import CheckpointError, CheckpointWriteError

StateDict = Dict[str, torch.Tensor]

# Tensors CWSAM adds to SAM: absent from an official SAM checkpoint by design.
CWSAM_ADDITIONS = (".attn_adapter.", ".mlp_adapter.", "image_encoder.input_module.", "mask_decoder.class_head.",
                   "refinement.", "pixel_expert.")

# The two prompt-encoder tensors a prompt-free decoder uses; the rest of the prompt encoder is not needed.
PROMPT_ENCODER_MAP = {
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": "pe_layer.positional_encoding_gaussian_matrix",
    "prompt_encoder.no_mask_embed.weight": "no_mask_embed.weight",
}

# Key names of checkpoints saved by the authors' code (xypu98/CWSAM) -> ours.
AUTHORS_KEY_MAP: List[Tuple[str, str]] = [
    (r"^(image_encoder\.blocks\.\d+)\.Space_Adapter\.D_fc1\.", r"\1.attn_adapter.down."),
    (r"^(image_encoder\.blocks\.\d+)\.Space_Adapter\.D_fc2\.", r"\1.attn_adapter.up."),
    (r"^(image_encoder\.blocks\.\d+)\.MLP_Adapter\.D_fc1\.", r"\1.mlp_adapter.down."),
    (r"^(image_encoder\.blocks\.\d+)\.MLP_Adapter\.D_fc2\.", r"\1.mlp_adapter.up."),
    (r"^image_encoder\.prompt_generator\.shared_mlp\.", "image_encoder.input_module.shared_proj."),
    (r"^image_encoder\.prompt_generator\.embedding_generator\.", "image_encoder.input_module.embedding_proj."),
    (r"^image_encoder\.prompt_generator\.lightweight_mlp_(\d+)\.0\.", r"image_encoder.input_module.block_mlps.\1."),
    (r"^image_encoder\.prompt_generator\.prompt_generator\.proj\.", "image_encoder.input_module.patch_conv."),
    (r"^mask_decoder\.cls_upscaling\.", "mask_decoder.class_head."),
]
# Created but never called by the authors' code: dropped on import.
AUTHORS_UNUSED = re.compile(r"^image_encoder\.blocks\.\d+\.Depth_Adapter\.")
# Buffers of the authors' loss modules (``criterionBCE.weight``: the class weights of their
# CrossEntropyLoss, present whenever a config sets ``loss_weight``): not model tensors, dropped on import.
AUTHORS_LOSS = re.compile(r"^criterion[A-Za-z]*\.")
AUTHORS_LOSS_WEIGHT = "criterionBCE.weight"



@dataclass
class LoadReport:
    """What a checkpoint load did: every model tensor is either loaded or a CWSAM addition."""

    loaded: List[str] = field(default_factory=list)
    new: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)


def torch_load_safely(path: Path | str, what: str) -> object:
    """``torch.load(weights_only=True)`` with errors that name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    kind = describe_non_model(path)
    if kind is not None:
        raise CheckpointError(f"{path} is not a {what}: it is {kind}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "unsupported" in line.lower()), "")
        raise CheckpointError(
            f"{path} contains pickled Python objects, which can run code when loaded; refusing to load it. "
            f"Only tensors and plain values are accepted{f' ({detail})' if detail else ''}"
        ) from None
    except Exception as exc:  # zip/format errors from torch
        raise CheckpointError(f"{path} is not a PyTorch checkpoint that can be read ({type(exc).__name__}: {exc})") from None


def atomic_torch_save(payload: dict, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, renamed over it only once complete: the
    previous file stays intact if saving fails (a full disk, a kill)."""
    # Not mkstemp: its files are 0600; created with 0666, a model file gets the user's umask like any other.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        # torch's zip writer reports a failed write as a RuntimeError ("file write failed", "iostream error").
        if isinstance(exc, (OSError, RuntimeError)):
            raise CheckpointWriteError(
                f"could not write {path} ({exc}); "
                + ("the previous file there is intact. " if path.exists() else "")
                + "Free some disk space or choose another folder, then run again"
            ) from exc
        raise


def _unwrap_state_dict(obj: object) -> StateDict:
    """Accept a bare state dict or one nested under 'model' / 'state_dict'; strip DDP's 'module.'."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {}
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def read_state_dict(path: Path | str) -> StateDict:
    """Read a SAM (or CWSAM authors') checkpoint as a flat state dict, without unpickling code."""
    obj = torch_load_safely(path, "SAM checkpoint")
    if isinstance(obj, dict) and obj.get("format") == "cwsam-model":
        raise CheckpointError(
            f"{path} is a CWSAM model file, not a SAM checkpoint: give it as the model, and the SAM "
            "checkpoint (e.g. sam_vit_b_01ec64.pth) separately"
        )
    state = _unwrap_state_dict(obj)
    if "image_encoder.patch_embed.proj.weight" not in state:
        raise CheckpointError(
            f"{path} is not a SAM checkpoint: it has no image_encoder tensors. Expected an official "
            "Segment Anything file such as sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or sam_vit_h_4b8939.pth"
        )
    return state


def encoder_shape(state: StateDict) -> Tuple[int, int]:
    """(embedding width, number of blocks) of the image encoder in ``state``."""
    width = state["image_encoder.patch_embed.proj.weight"].shape[0]
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    return width, len(blocks)


def is_authors_layout(state: StateDict) -> bool:
    return any(".Space_Adapter." in k or k.startswith("image_encoder.prompt_generator.") for k in state)


def from_authors_layout(state: StateDict) -> Tuple[StateDict, List[str]]:
    """Rename the authors' keys to ours; returns the new state and the dropped keys (their unused third
    adapter and their loss buffers)."""
    renamed: StateDict = {}
    dropped: List[str] = []
    for key, value in state.items():
        if AUTHORS_UNUSED.match(key) or AUTHORS_LOSS.match(key):
            dropped.append(key)
            continue
        for pattern, replacement in AUTHORS_KEY_MAP:
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        renamed[key] = value
    return renamed, dropped


def fit_rel_pos(table: torch.Tensor, length: int, mode: str = DEFAULT_POSITION_TABLES) -> torch.Tensor:
    """A relative-position table (2 G - 1 offsets x C) fitted to ``length`` = 2 g - 1 offsets.

    ``mode`` "crop" keeps the central offsets -(g-1)..(g-1) unchanged when the table is longer (see
    POSITION_TABLE_MODES); otherwise the table is interpolated linearly, as SAM does.
    """
    if mode not in POSITION_TABLE_MODES:
        raise ValueError(f"position tables must be one of {', '.join(POSITION_TABLE_MODES)}, got {mode!r}")
    if table.shape[0] == length:
        return table
    if mode == "crop" and length < table.shape[0] and (table.shape[0] - length) % 2 == 0:
        start = (table.shape[0] - length) // 2
        return table[start : start + length].clone()
    resized = F.interpolate(table.t().unsqueeze(0).float(), size=length, mode="linear", align_corners=False)
    return resized.squeeze(0).t().to(table.dtype)


def resize_to_model(state: StateDict, model: nn.Module) -> StateDict:
    """Fit the absolute position embedding and relative-position tables to the model's size.

    SAM is trained at 1024 px (a 64 x 64 token grid); a model built for another input size has other
    shapes for ``pos_embed`` (interpolated bicubically) and the global-attention ``rel_pos_h/w`` tables
    (cropped or interpolated by the model's ``position_tables``, see :func:`fit_rel_pos`). Windowed
    blocks keep theirs.
    """
    mode = getattr(model, "position_tables", "interpolate")
    targets = model.state_dict()
    resized = dict(state)
    for key, value in state.items():
        target = targets.get(key)
        if target is None or target.shape == value.shape:
            continue
        if key.endswith("pos_embed") and value.dim() == 4:
            grid = F.interpolate(
                value.permute(0, 3, 1, 2).float(), size=tuple(target.shape[1:3]), mode="bicubic", align_corners=False
            )
            resized[key] = grid.permute(0, 2, 3, 1).to(value.dtype)
        elif re.search(r"\.attn\.rel_pos_[hw]$", key) and value.dim() == 2:
            resized[key] = fit_rel_pos(value, target.shape[0], mode)
    return resized


def load_into_model(model: nn.Module, state: StateDict, allow_new: bool) -> LoadReport:
    """Load ``state`` (already in our key layout) into ``model``, strictly.

    Every model tensor must come from ``state`` except, when ``allow_new``, CWSAM's additions to SAM.
    Anything else missing or unexpected is an error that lists it.
    """
    report = LoadReport()
    model_keys = set(model.state_dict())
    report.unexpected = sorted(set(state) - model_keys)
    if report.unexpected:
        raise CheckpointError(
            f"checkpoint has {len(report.unexpected)} tensors this model does not have, "
            f"e.g. {', '.join(report.unexpected[:5])}"
        )
    state = resize_to_model(state, model)
    model_state = model.state_dict()
    for key in sorted(model_keys - set(state)):
        (report.new if allow_new and any(m in key for m in CWSAM_ADDITIONS) else report.missing).append(key)
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
        for k, v in state.items()
        if v.shape != model_state[k].shape
    ]
    if mismatched:
        raise CheckpointError("checkpoint tensors do not fit the model: " + "; ".join(mismatched[:5]))
    if report.missing:
        raise CheckpointError(
            f"checkpoint lacks {len(report.missing)} tensors the model needs, e.g. {', '.join(report.missing[:5])}"
        )
    model.load_state_dict(state, strict=False)
    report.loaded = sorted(state)
    return report


def sam_state_for_cwsam(state: StateDict) -> Tuple[StateDict, List[str]]:
    """Select and rename the SAM tensors CWSAM uses; returns them and the ignored keys."""
    selected: StateDict = {}
    ignored: List[str] = []
    for key, value in state.items():
        if key.startswith(("image_encoder.", "mask_decoder.")):
            selected[key] = value
        elif key in PROMPT_ENCODER_MAP:
            selected[PROMPT_ENCODER_MAP[key]] = value
        elif key in PROMPT_ENCODER_MAP.values():  # the authors' layout keeps them at the top level
            selected[key] = value
        else:
            ignored.append(key)
    return selected, ignored
