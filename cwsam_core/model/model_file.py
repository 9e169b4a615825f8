"""The CWSAM model file: trained tensors plus everything needed to use them (the model card).

One ``torch.save`` of plain values and tensors, read back with ``weights_only=True`` so loading
never runs code. Models fine-tuned from SAM store only the tensors that trained (a few MB) and name
the SAM checkpoint they need by file name and SHA-256; models trained from scratch store every
tensor and are self-contained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from .. import __version__
from ..common.card import FORMAT_VERSION, ModelCard
from ..common.paths import file_sha256
from ..errors import CheckpointError, ModelFileError
from .build import backbone_config, build_model, load_sam_weights
from .checkpoint import atomic_torch_save, load_into_model, torch_load_safely
from .modeling import CWSAM
from .pt_card import FORMAT
from .trainable import configure_trainable, trainable_names

# Largest finite float16 value: a tensor beyond it cannot be stored in half precision.
FLOAT16_MAX = float(torch.finfo(torch.float16).max)
# Buffers a model fine-tuned from SAM stores beside its trained parameters: the decoder's positional
# encoding, SAM's for models trained here but the authors' own random matrix in models imported from
# their code (1 KB).
STORED_BUFFERS = ("pe_layer.positional_encoding_gaussian_matrix",)


def save_model_file(path: Path | str, model: CWSAM, card: ModelCard, float16: bool = False) -> Path:
    """Write ``model`` and ``card`` to ``path`` atomically (a temporary file renamed at the end).

    The card's backbone, input size and SAM identity are taken from the model. A model with a
    pretrained encoder stores only its trained tensors; one trained from scratch stores all.
    ``float16`` stores the floating tensors in half precision: half the size, read back as float32
    with a relative rounding error of at most 2^-11 per value (the model's outputs move by about
    that much). A tensor with values beyond float16's range (+-65504) is refused.
    """
    path = Path(path)
    if len(card.classes) != model.num_classes:
        raise ModelFileError(f"the card lists {len(card.classes)} classes but the model has {model.num_classes}")
    if model.pretrained_encoder and not model.sam_checkpoint_identity:
        raise ModelFileError(
            "this model's frozen SAM weights come from no named SAM checkpoint (e.g. a checkpoint of the authors' "
            "code loaded whole): import it with `cwsam import-authors CHECKPOINT --sam-checkpoint SAM.pth`"
        )
    card.backbone, card.input_size = model.backbone, model.input_size
    card.refine_channels = model.refine_channels
    card.pixel_expert = model.pixel_expert is not None
    if model.pixel_expert is not None:
        card.pixel_expert_weight = model.pixel_expert.weight
    card.input_clip, card.position_tables = model.input_clip, model.position_tables
    card.embedding_layout = model.embedding_layout
    card.sam_checkpoint = model.sam_checkpoint_identity if model.pretrained_encoder else None
    card.provenance.setdefault("cwsam_version", __version__)
    card.provenance.setdefault("torch_version", str(torch.__version__))
    state = model.state_dict()
    if model.pretrained_encoder:
        state = {k: state[k] for k in sorted(trainable_names(model) | set(STORED_BUFFERS))}
    state = {k: v.detach().cpu().clone() for k, v in state.items()}
    if float16:
        state = _to_float16(state)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tensor_dtype": "float16" if float16 else "float32",
        "card": card.to_dict(),
        "state_dict": state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(payload, path)
    return path


def _to_float16(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Floating tensors as float16; integer and boolean tensors unchanged."""
    out = {}
    for key, value in state.items():
        if value.is_floating_point():
            largest = float(value.abs().max()) if value.numel() else 0.0
            if not largest <= FLOAT16_MAX:  # also catches NaN
                raise ModelFileError(
                    f"tensor {key} holds values up to {largest:g}, beyond float16's range (+-{FLOAT16_MAX:g}): "
                    "save this model in float32"
                )
            value = value.to(torch.float16)
        out[key] = value
    return out


def read_model_file(path: Path | str) -> Tuple[ModelCard, Dict[str, torch.Tensor]]:
    """The card and stored tensors of a model file, loaded without unpickling code; floating tensors
    stored as float16 are returned as float32."""
    try:
        payload = torch_load_safely(path, "model file")
    except CheckpointError as exc:
        raise ModelFileError(str(exc)) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(
            f"{path} is not a CWSAM model file (a SAM checkpoint goes in the SAM checkpoint setting, "
            "a CWSAM model file is made by `cwsam train` or the plugin's Fine-tune)"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model file format {version}; this CWSAM ({__version__}) reads up to {FORMAT_VERSION}: upgrade CWSAM"
        )
    # Files saved with float16=True come back in float32, the precision the model computes in.
    state = {k: v.float() if v.dtype == torch.float16 else v for k, v in payload["state_dict"].items()}
    return ModelCard.from_dict(payload["card"]), state


def read_model_card(path: Path | str) -> ModelCard:
    return read_model_file(path)[0]


def load_model_file(
    path: Path | str,
    sam_checkpoint: Optional[Path | str] = None,
    device: str | torch.device = "cpu",
    input_size: Optional[int] = None,
) -> Tuple[CWSAM, ModelCard]:
    """Build the model a file describes and load its tensors; returns it in eval mode on ``device``.

    A file fine-tuned from SAM needs the same SAM checkpoint it was trained with, checked by SHA-256.
    ``input_size`` other than the trained one interpolates the position tables (a visible choice:
    the model was trained at ``card.input_size``); the returned card keeps the trained size.
    """
    card, state = read_model_file(path)
    backbone_config(card.backbone)  # an unknown backbone name fails with the list of known ones
    try:
        model = build_model(card.backbone, len(card.classes), input_size or card.input_size, card.refine_channels,
                            embedding_layout=card.embedding_layout, input_clip=card.input_clip,
                            position_tables=card.position_tables, pixel_expert=card.pixel_expert,
                            pixel_expert_weight=card.pixel_expert_weight)
    except ValueError as exc:
        raise ModelFileError(str(exc)) from None
    if not card.self_contained:
        wanted = card.sam_checkpoint
        if sam_checkpoint is None:
            raise ModelFileError(
                f"{Path(path).name} was fine-tuned from SAM and needs the SAM checkpoint {wanted['name']}: give its path"
            )
        digest = file_sha256(sam_checkpoint)
        if digest != wanted["sha256"]:
            raise ModelFileError(
                f"the SAM checkpoint {Path(sam_checkpoint).name} (sha256 {digest[:12]}...) is not the one this model "
                f"was trained with: {wanted['name']} (sha256 {wanted['sha256'][:12]}...)"
            )
        try:
            load_sam_weights(model, sam_checkpoint)
        except CheckpointError as exc:
            raise ModelFileError(str(exc)) from None
        state = {**model.state_dict(), **state}
    try:
        load_into_model(model, state, allow_new=False)
    except CheckpointError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    configure_trainable(model, pretrained_encoder=not card.self_contained)
    if not card.self_contained:
        model.sam_checkpoint_identity = dict(card.sam_checkpoint)
    return model.to(device).eval(), card
