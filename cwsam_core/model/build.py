"""The registry of named backbones and the one builder of CWSAM models."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional, Tuple

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..common.card import DEFAULT_POSITION_TABLES
from ..common.paths import file_sha256
from ..errors import CheckpointError
from .backbones import BACKBONES, BackboneConfig
from .checkpoint import (
    LoadReport, encoder_shape, from_authors_layout, is_authors_layout, load_into_model, read_state_dict,
    sam_state_for_cwsam,
)
from .modeling import CWSAM, AdaptedImageEncoderViT, ClasswiseMaskDecoder
from .modeling.pixel_expert import DEFAULT_WEIGHT
from .trainable import configure_trainable

PATCH_SIZE = 16

# Models fine-tuned here from SAM clip their normalised input to [-3, 3] before the frozen encoder.
# SAM was trained on ImageNet-normalised 8-bit RGB, which spans about -2.1 to 2.6; standard scores of
# SAR reach far beyond that at strong scatterers (urban corners, ships: +10 and more) and shadows, values
# the frozen encoder never saw. +-3 leaves 99.7 % of normally distributed values unchanged and bounds
# the rest near SAM's own range. Recorded in the model card (``input_clip``); files without it are not clipped.
SAM_INPUT_CLIP = 3.0


def backbone_config(name: str) -> BackboneConfig:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None


def backbone_by_shape(width: int, depth: int) -> Optional[str]:
    """The registered backbone whose encoder has this width and depth, if any."""
    for name, config in BACKBONES.items():
        if (config.embed_dim, config.depth) == (width, depth):
            return name
    return None


def build_model(backbone: str, num_classes: int, input_size: Optional[int] = None,
                refine_channels: Optional[int] = None, embedding_layout: str = "ours",
                input_clip: Optional[float] = None, position_tables: str = DEFAULT_POSITION_TABLES,
                pixel_expert: Optional[bool] = None, pixel_expert_weight: float = DEFAULT_WEIGHT) -> CWSAM:
    """A randomly initialised CWSAM model; every parameter trainable. ``refine_channels`` defaults to
    the backbone's (a full-resolution logit refinement for backbones trained from scratch);
    ``embedding_layout`` is the input module's (see modeling.low_frequency.EMBEDDING_LAYOUTS: "authors"
    for models imported from the authors' code), ``input_clip`` the clipping of normalised inputs
    before the encoder, ``position_tables`` how position tables are fitted to another input size,
    ``pixel_expert`` whether a per-pixel Gaussian classifier joins the logits (default: the backbone's),
    ``pixel_expert_weight`` the weight of its log posterior."""
    config = backbone_config(backbone)
    size = input_size or config.default_input_size
    if size <= 0 or size % PATCH_SIZE:
        raise ValueError(f"input size must be a positive multiple of {PATCH_SIZE} pixels, got {size}")
    encoder = AdaptedImageEncoderViT(
        img_size=size,
        patch_size=PATCH_SIZE,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        out_chans=config.prompt_dim,
        window_size=config.window_size,
        global_attn_indexes=config.global_attn_indexes,
        embedding_layout=embedding_layout,
    )
    decoder = ClasswiseMaskDecoder(
        num_classes=num_classes,
        transformer_dim=config.prompt_dim,
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=config.prompt_dim, mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_heads
        ),
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    refine = config.refine_channels if refine_channels is None else refine_channels
    model = CWSAM(encoder, decoder, backbone=backbone, refine_channels=refine, input_clip=input_clip,
                  position_tables=position_tables,
                  pixel_expert=config.pixel_expert if pixel_expert is None else pixel_expert,
                  pixel_expert_weight=pixel_expert_weight)
    configure_trainable(model, pretrained_encoder=False)
    return model


def build_bare_sam(backbone: str, input_size: Optional[int] = None) -> Sam:
    """``segment_anything``'s own Sam with a registered backbone's sizes, randomly initialised.

    For ``vit_b/l/h`` at 1024 px this is exactly ``sam_model_registry[backbone]()``. Used to write
    checkpoints in the official layout (tests, benchmarks) and as the bare-SAM baseline.
    """
    config = backbone_config(backbone)
    size = input_size or config.default_input_size
    grid = size // PATCH_SIZE
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=PATCH_SIZE, embed_dim=config.embed_dim, depth=config.depth,
            num_heads=config.num_heads, mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=config.global_attn_indexes,
            window_size=config.window_size, out_chans=config.prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_dim, image_embedding_size=(grid, grid), input_image_size=(size, size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=config.prompt_dim, mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_heads
            ),
            transformer_dim=config.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
    )


def load_sam_weights(model: CWSAM, sam_checkpoint: Path | str) -> LoadReport:
    """Load an official SAM checkpoint into ``model`` and freeze the pretrained encoder.

    Every image-encoder and mask-decoder tensor is used; SAM's no-mask embedding and positional
    encoding come from its prompt encoder; position tables are interpolated for S != 1024.
    """
    state = read_state_dict(sam_checkpoint)
    width, depth = encoder_shape(state)
    expected = backbone_config(model.backbone)
    if (width, depth) != (expected.embed_dim, expected.depth):
        looks_like = backbone_by_shape(width, depth)
        described = f"a {looks_like} checkpoint" if looks_like else f"an encoder of width {width} and depth {depth}"
        raise CheckpointError(
            f"{Path(sam_checkpoint).name} looks like {described}, but the model uses backbone {model.backbone}; "
            f"choose backbone {looks_like or 'matching the file'} or the {model.backbone} checkpoint "
            f"({expected.sam_checkpoint or 'none released'})"
        )
    if is_authors_layout(state):
        raise CheckpointError(
            f"{Path(sam_checkpoint).name} is a checkpoint saved by the CWSAM authors' code, not an official SAM "
            "checkpoint: import it with cwsam_core.model.build.load_authors_checkpoint"
        )
    selected, ignored = sam_state_for_cwsam(state)
    report = load_into_model(model, selected, allow_new=True)
    report.ignored = ignored
    model.sam_checkpoint_identity = {"name": Path(sam_checkpoint).name, "sha256": file_sha256(sam_checkpoint)}
    configure_trainable(model, pretrained_encoder=True)
    return report


def build_cwsam(
    backbone: str,
    num_classes: int,
    sam_checkpoint: Optional[Path | str] = None,
    input_size: Optional[int] = None,
) -> CWSAM:
    """Build CWSAM with a named backbone, optionally from an official SAM checkpoint.

    With a checkpoint, SAM's encoder is frozen and only CWSAM's additions and the decoder train;
    without one, the whole model trains from scratch (the intended use of the small backbones).
    ``input_size`` defaults to the backbone's (1024 for SAM's own).
    """
    # A pretrained SAM encoder keeps the published method (no refinement) and gets inputs in its range.
    pretrained = sam_checkpoint is not None
    model = build_model(backbone, num_classes, input_size, 0 if pretrained else None,
                        input_clip=SAM_INPUT_CLIP if pretrained else None, pixel_expert=False if pretrained else None)
    if sam_checkpoint is not None:
        load_sam_weights(model, sam_checkpoint)
    return model


def load_authors_checkpoint(path: Path | str, input_size: Optional[int] = None) -> Tuple[CWSAM, LoadReport]:
    """Build a CWSAM model from a checkpoint saved by the authors' code (e.g. their FUSAR-Map model).

    The backbone and the number of classes are read from tensor shapes; the unused third adapter of
    each block and the loss buffers (``criterionBCE.weight``) are dropped; the input module uses the
    authors' embedding layout. The file holds the frozen SAM weights too, so nothing else is needed to
    run the model; to save it as a model file (which names its SAM checkpoint) use
    :func:`cwsam_core.model.authors.import_authors_checkpoint` (``cwsam import-authors``) instead.
    """
    state = read_state_dict(path)
    if not is_authors_layout(state):
        raise CheckpointError(f"{path} is not a checkpoint of the CWSAM authors' code (no Space_Adapter tensors)")
    state, dropped = from_authors_layout(state)
    backbone, num_classes = authors_model_shape(state, path)
    model = build_model(backbone, num_classes, input_size, refine_channels=0, embedding_layout="authors",
                        pixel_expert=False)
    report = load_into_model(model, state, allow_new=False)
    report.ignored = dropped
    configure_trainable(model, pretrained_encoder=True)
    # The frozen weights come from this file, not from a named SAM checkpoint: saving the model as a
    # model file is refused (it would name no SAM checkpoint to load them from).
    model.sam_checkpoint_identity = None
    return model, report


def authors_model_shape(state: dict, path: Path | str) -> Tuple[str, int]:
    """(backbone, number of classes) of a state dict in our key layout renamed from the authors'."""
    width, depth = encoder_shape(state)
    backbone = backbone_by_shape(width, depth)
    if backbone is None:
        raise CheckpointError(f"{Path(path).name}: no registered backbone has an encoder of width {width} and depth "
                              f"{depth} (the authors' code uses SAM's vit_b: width 768, depth 12)")
    head = state.get("mask_decoder.class_head.3.weight")
    if head is None:
        raise CheckpointError(f"{Path(path).name} has no class head (mask_decoder.cls_upscaling): not a CWSAM "
                              "checkpoint")
    mask_dim = backbone_config(backbone).prompt_dim // 8
    if head.dim() != 4 or head.shape[0] % mask_dim:
        raise CheckpointError(f"{Path(path).name}: the class head has {head.shape[0]} output channels, not a "
                              f"multiple of {mask_dim}: not a {backbone} CWSAM checkpoint")
    return backbone, head.shape[0] // mask_dim
