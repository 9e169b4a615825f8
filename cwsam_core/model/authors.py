"""Models trained with the authors' CWSAM code (xypu98/CWSAM, ``train.py``): imported exactly as model files.

Their checkpoint (``model_epoch_best.pth``) holds the whole model: SAM's frozen encoder, their adapters,
input module and decoder, an unused third adapter per block and their loss's class weights. The model
file written here keeps what SAM's checkpoint lacks (as for models fine-tuned here) and names the
official SAM checkpoint, after checking that its encoder is the one the model was trained with; the
card records their input convention and their embedding layout, so that ``cwsam classify``, the dock
and Processing use it like any other model file and give the classes their code gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .. import __version__
from ..common.card import ClassInfo, ModelCard, default_color
from ..common.classes import parse_classes
from ..common.paths import check_outputs, file_sha256
from ..errors import AuthorsImportError, CheckpointError, ClassSpecError, OutputConflictError
from .build import authors_model_shape, backbone_by_shape, backbone_config, build_model
from .checkpoint import (
    AUTHORS_LOSS_WEIGHT, LoadReport, _unwrap_state_dict, encoder_shape, from_authors_layout, is_authors_layout,
    load_into_model, read_state_dict, torch_load_safely,
)
from .model_file import save_model_file
from .modeling import CWSAM
from .trainable import configure_trainable

# The FUSAR-Map 1.0 configuration of their code (configs/fusar-sar-map-...-5cls-...-ignore_bg.yaml).
FUSAR_MAP_CLASSES = (
    ClassInfo(0, "building", "#ff0000"),
    ClassInfo(1, "vegetation", "#00ff00"),
    ClassInfo(2, "water", "#0000ff"),
    ClassInfo(3, "road", "#ffff00"),
    ClassInfo(4, "background", "#000000"),
)
FUSAR_MAP_LOSS_WEIGHTS = (1.5, 1.0, 0.5, 1.9, 0.1)

# Their input: one 8-bit grey band copied to RGB (PIL ``convert('RGB')``), divided by 255 (ToTensor),
# normalised with ImageNet's mean and std. On 8-bit values read as they are (amplitude scale, no
# conversion) that is a normalisation with mean 255 * m and std 255 * s.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUTHORS_NORMALIZATION = {"mean": [255.0 * m for m in IMAGENET_MEAN], "std": [255.0 * s for s in IMAGENET_STD]}
AUTHORS_BANDS = ["band 1"]
AUTHORS_INPUT = ("one 8-bit grey band copied to RGB, divided by 255, normalised with ImageNet mean and std "
                 "(0.485, 0.456, 0.406; 0.229, 0.224, 0.225)")


@dataclass
class AuthorsConfig:
    """What an import takes from one of their YAML configs."""

    path: Path
    classes: Optional[List[ClassInfo]] = None
    num_classes: Optional[int] = None
    loss_weight: Optional[List[float]] = None
    ignore_bg: Optional[bool] = None
    input_size: Optional[int] = None
    encoder: Dict[str, Any] = field(default_factory=dict)


def _hex(rgb: Any, where: str) -> str:
    if not (isinstance(rgb, (list, tuple)) and len(rgb) == 3
            and all(isinstance(v, int) and 0 <= v <= 255 for v in rgb)):
        raise AuthorsImportError(f"{where}: palette entries must be [R, G, B] with values 0..255, got {rgb!r}")
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def read_authors_config(path: Path | str) -> AuthorsConfig:
    """Classes (names and palette), class count, loss weights and input size of one of their YAML configs."""
    path = Path(path)
    if not path.is_file():
        raise AuthorsImportError(f"config not found: {path}")
    try:
        import yaml
    except ImportError:
        raise AuthorsImportError("reading --config needs PyYAML (pip install pyyaml); or give --classes instead") \
            from None
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AuthorsImportError(f"{path} is not a YAML file that can be read ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise AuthorsImportError(f"{path} is not a config of the authors' code (no mapping at the top level)")
    config = AuthorsConfig(path)
    for split in ("train_dataset", "val_dataset", "test_dataset"):
        args = ((data.get(split) or {}).get("dataset") or {}).get("args") or {}
        if args.get("classes"):
            names, palette = list(args["classes"]), args.get("palette")
            if palette is not None and len(palette) != len(names):
                raise AuthorsImportError(f"{path}: {split} names {len(names)} classes but its palette has "
                                         f"{len(palette)} colours")
            config.classes = [ClassInfo(i, str(name), _hex(palette[i], str(path)) if palette else default_color(i))
                              for i, name in enumerate(names)]
            config.ignore_bg = args.get("ignore_bg")
            break
    model_args = (data.get("model") or {}).get("args") or {}
    config.num_classes = model_args.get("num_classes")
    if model_args.get("loss_weight") is not None:
        config.loss_weight = [float(w) for w in model_args["loss_weight"]]
    config.input_size = model_args.get("inp_size")
    config.encoder = dict(model_args.get("encoder_mode") or {})
    if config.classes is None and config.num_classes is None:
        raise AuthorsImportError(f"{path} names no classes and no num_classes: not a config of the authors' code")
    if config.classes is not None and config.num_classes is not None and len(config.classes) != config.num_classes:
        raise AuthorsImportError(f"{path} lists {len(config.classes)} classes but sets num_classes: "
                                 f"{config.num_classes}")
    return config


def parse_authors_classes(spec: str) -> List[ClassInfo]:
    """``--classes``: names in the model's class order (``building,vegetation,...``; values 0, 1, ...),
    or ``VALUE:NAME[:#RRGGBB],...`` / a CSV or JSON file as for training (listed in the model's order)."""
    path = Path(spec)
    if ":" in spec or path.suffix.lower() in (".csv", ".json"):
        return parse_classes(spec)
    names = [part.strip() for part in spec.split(",")]
    if not names or any(not n for n in names):
        raise ClassSpecError(f"--classes: expected class names separated by commas, got {spec!r}")
    return [ClassInfo(i, name, default_color(i)) for i, name in enumerate(names)]


def _resolve_classes(count: int, classes: Optional[List[ClassInfo]], config: Optional[AuthorsConfig],
                     checkpoint: Path) -> List[ClassInfo]:
    if config is not None and config.num_classes is not None and config.num_classes != count:
        raise AuthorsImportError(f"{checkpoint.name} has {count} classes but {config.path.name} sets num_classes: "
                                 f"{config.num_classes}: is it the config this model was trained with?")
    if classes is not None:
        if len(classes) != count:
            raise AuthorsImportError(f"{checkpoint.name} has {count} classes but --classes lists {len(classes)}: "
                                     f"give {count} classes, in the model's order")
        return list(classes)
    if config is not None and config.classes is not None:
        return list(config.classes)
    if count == len(FUSAR_MAP_CLASSES):
        return list(FUSAR_MAP_CLASSES)
    raise AuthorsImportError(f"{checkpoint.name} has {count} classes, not FUSAR-Map's 5: name them in the model's "
                             "order with --classes (e.g. water,woodland,...) or --config their.yaml")


def _read_authors_state(path: Path) -> Dict[str, torch.Tensor]:
    payload = torch_load_safely(path, "checkpoint of the authors' code")
    if isinstance(payload, dict) and payload.get("format") == "cwsam-model":
        raise AuthorsImportError(f"{path} is already a CWSAM model file: use it as it is")
    state = _unwrap_state_dict(payload)
    if not state or not is_authors_layout(state):
        raise AuthorsImportError(
            f"{path} is not a checkpoint of the authors' CWSAM code (no Space_Adapter or prompt_generator tensors): "
            "expected the model_epoch_best.pth their train.py saves"
        )
    return state


def _check_frozen_encoder(state: Dict[str, torch.Tensor], sam: Dict[str, torch.Tensor], sam_path: Path) -> None:
    """Refuse a SAM checkpoint whose encoder differs from the frozen one saved in the authors' file."""
    differing = [key for key, value in sam.items() if key.startswith("image_encoder.")
                 and (key not in state or state[key].shape != value.shape
                      or not torch.equal(state[key].float(), value.float()))]
    if differing:
        raise AuthorsImportError(
            f"the SAM checkpoint {sam_path.name} does not match the one the model was trained with: "
            f"{len(differing)} frozen encoder tensors differ (e.g. {differing[0]}); give the official SAM "
            "checkpoint named in their config (for vit_b: sam_vit_b_01ec64.pth)"
        )


def import_authors_checkpoint(
    checkpoint: Path | str,
    sam_checkpoint: Path | str,
    classes: Optional[List[ClassInfo]] = None,
    config: Optional[AuthorsConfig] = None,
) -> Tuple[CWSAM, ModelCard, LoadReport]:
    """A model trained with the authors' code, its frozen weights from ``sam_checkpoint``, and its card.

    Classes come from ``classes``, else ``config``, else FUSAR-Map's when the model has 5; their count
    must be the model's. Raises ``AuthorsImportError`` or ``CheckpointError`` with one line to act on.
    """
    checkpoint, sam_path = Path(checkpoint), Path(sam_checkpoint)
    state = _read_authors_state(checkpoint)
    loss_weight = state.get(AUTHORS_LOSS_WEIGHT)
    renamed, dropped = from_authors_layout(state)
    backbone, count = authors_model_shape(renamed, checkpoint)
    chosen = _resolve_classes(count, classes, config, checkpoint)

    sam = read_state_dict(sam_path)
    if is_authors_layout(sam):
        raise AuthorsImportError(f"{sam_path.name} is a checkpoint of the authors' code, not an official SAM "
                                 "checkpoint: give SAM's own file (e.g. sam_vit_b_01ec64.pth) as --sam-checkpoint")
    width, depth = encoder_shape(sam)
    if backbone_by_shape(width, depth) != backbone:
        looks_like = backbone_by_shape(width, depth) or f"an encoder of width {width} and depth {depth}"
        raise AuthorsImportError(
            f"the SAM checkpoint {sam_path.name} does not match the one the model was trained with: it is "
            f"{looks_like}, the model {backbone}; give {backbone_config(backbone).sam_checkpoint or f'the {backbone} checkpoint'}"
        )
    _check_frozen_encoder(renamed, sam, sam_path)

    grid = renamed["image_encoder.pos_embed"].shape[1]
    input_size = grid * 16
    if config is not None and config.input_size not in (None, input_size):
        raise AuthorsImportError(f"{checkpoint.name} was built for {input_size} px inputs but {config.path.name} "
                                 f"sets inp_size: {config.input_size}")
    model = build_model(backbone, count, input_size, refine_channels=0, embedding_layout="authors", pixel_expert=False)
    # Every tensor of their model, nothing missing; the frozen ones equal SAM's (checked above), so the
    # model file can name SAM's checkpoint for them.
    report = load_into_model(model, renamed, allow_new=False)
    report.ignored = dropped
    configure_trainable(model, pretrained_encoder=True)
    model.sam_checkpoint_identity = {"name": sam_path.name, "sha256": file_sha256(sam_path)}

    provenance: Dict[str, Any] = {
        "trained_with": "the authors' code (xypu98/CWSAM)",
        "imported_from": {"file": checkpoint.name, "sha256": file_sha256(checkpoint)},
        "imported_with": f"cwsam {__version__}",
        "input_convention": AUTHORS_INPUT,
        "dropped_tensors": len(dropped),
    }
    if loss_weight is not None:
        weights = [round(float(w), 6) for w in loss_weight.flatten()]
        if len(weights) != count:
            raise AuthorsImportError(f"{checkpoint.name}: {AUTHORS_LOSS_WEIGHT} holds {len(weights)} class weights for "
                                     f"{count} classes: not a checkpoint of one model")
        provenance["loss_weight"] = weights
    if config is not None:
        provenance["config"] = config.path.name
        if config.ignore_bg is not None:
            provenance["ignore_bg"] = bool(config.ignore_bg)
    elif chosen == list(FUSAR_MAP_CLASSES):
        provenance["classes_from"] = "FUSAR-Map 1.0 defaults (background ignored in their scoring)"
    card = ModelCard(
        backbone=backbone, input_size=input_size, classes=chosen, bands=list(AUTHORS_BANDS), input_scale="amplitude",
        normalization={k: list(v) for k, v in AUTHORS_NORMALIZATION.items()}, tile_size=input_size,
        training_input_scale="amplitude", provenance=provenance,
    )
    return model, card, report


def write_authors_model_file(
    checkpoint: Path | str,
    sam_checkpoint: Path | str,
    output: Path | str,
    classes: Optional[List[ClassInfo]] = None,
    config: Optional[AuthorsConfig] = None,
) -> Tuple[Path, ModelCard]:
    """Import a checkpoint of the authors' code and write it as a model file (atomically: nothing is
    written when anything fails)."""
    output = Path(output)
    try:
        check_outputs([("checkpoint", [checkpoint]), ("SAM checkpoint", [sam_checkpoint]),
                       ("config", [config.path if config else None])], [("model file", [output])])
    except OutputConflictError as exc:
        raise AuthorsImportError(str(exc)) from None
    if not output.parent.is_dir():
        raise AuthorsImportError(f"output folder does not exist: {output.parent}")
    model, card, _ = import_authors_checkpoint(checkpoint, sam_checkpoint, classes, config)
    return save_model_file(output, model, card), card


__all__ = [
    "AUTHORS_NORMALIZATION", "AuthorsConfig", "AuthorsImportError", "CheckpointError", "FUSAR_MAP_CLASSES",
    "FUSAR_MAP_LOSS_WEIGHTS", "import_authors_checkpoint", "parse_authors_classes", "read_authors_config",
    "write_authors_model_file",
]
