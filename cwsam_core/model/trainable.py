"""Which CWSAM parameters train, and how many there are."""

from __future__ import annotations

from typing import Tuple

from torch import nn

# Parameters CWSAM adds to SAM's image encoder: always trained.
ENCODER_ADDITIONS = (".attn_adapter.", ".mlp_adapter.", "image_encoder.input_module.")


def unused_decoder_prefixes(model: nn.Module) -> Tuple[str, ...]:
    """Decoder parameters that never receive a gradient (extra hypernetworks, IoU head)."""
    decoder = model.mask_decoder
    return tuple("mask_decoder." + p for p in decoder.unused_parameter_prefixes(decoder.num_mask_tokens))


def is_trainable(name: str, pretrained_encoder: bool, unused_prefixes: Tuple[str, ...]) -> bool:
    """Whether parameter ``name`` trains.

    With a pretrained SAM encoder, only CWSAM's additions to it train; the decoder and the no-mask
    embedding always train. A randomly initialised encoder trains whole: freezing random weights
    would be pointless. Decoder parts that receive no gradient are frozen either way.
    """
    if name.startswith(unused_prefixes):
        return False
    if name.startswith("image_encoder."):
        return not pretrained_encoder or any(marker in name for marker in ENCODER_ADDITIONS)
    return True


def configure_trainable(model: nn.Module, pretrained_encoder: bool) -> None:
    """Set ``requires_grad`` on every parameter of a CWSAM model by :func:`is_trainable`."""
    unused = unused_decoder_prefixes(model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_trainable(name, pretrained_encoder, unused))
    model.pretrained_encoder = pretrained_encoder


def trainable_names(model: nn.Module) -> set[str]:
    """Names of the parameters that train under the model's current configuration."""
    pretrained = getattr(model, "pretrained_encoder", False)
    unused = unused_decoder_prefixes(model)
    return {n for n, _ in model.named_parameters() if is_trainable(n, pretrained, unused)}


def parameter_counts(model: nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts, by ``requires_grad``."""
    total = trainable = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total
