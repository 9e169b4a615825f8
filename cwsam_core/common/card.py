"""The model card: what a CWSAM model says about itself, whatever file holds it.

Torch-free, so that the classification path (radiometry, tiling, output, the ``cwsam`` command) runs
where only ONNX Runtime is installed: ``model.model_file`` reads and writes cards in ``.cwsam.pt`` files (with
torch), ``model.onnx_card`` reads them from the metadata of ``.onnx`` exports; ``model.card_reader.read_card``
reads either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import ModelFileError

FORMAT_VERSION = 1
# The radiometric scales a model's input can be in (raster.radiometry converts between them).
INPUT_SCALES = ("db", "linear", "amplitude")
ONNX_SUFFIX = ".onnx"

# How the frozen patch embedding E (B x h x w x D) reaches the per-token projection ``embedding_proj``
# of the input module (modeling.low_frequency):
#   "ours": each token gets its own D features (models trained here);
#   "authors": as the authors' ``PromptGenerator.init_embeddings`` does it, ``E.reshape(B, D, h * w)
#       .permute(0, 2, 1)`` on a tensor laid out B, h, w, D: token t gets the values E_flat[c * h * w + t],
#       c = 0..D-1, of the flattened (h, w, D) embedding, which mixes channels of different tokens.
#       Their trained ``embedding_generator`` weights expect that layout: models imported from their code use it.
EMBEDDING_LAYOUTS = ("ours", "authors")

# How relative-position tables are fitted to a model built for another input size S:
#   "crop": the global-attention tables of S = 1024 are cut to the central 2 S/16 - 1 offsets
#           (S < 1024; a larger S has no learnt values to cut and is interpolated);
#   "interpolate": every table is resized linearly (SAM's own behaviour; files written before the
#           choice existed use it).
# Crop is the default for new models: our tiles are cut from the raster at its own pixel size, never
# rescaled, so a token offset of d at S = 512 is the same ground distance as at S = 1024, and cropping
# keeps for it exactly the embedding SAM learnt for offset d (the windowed blocks, whose 14 x 14 tables
# never change, already work that way), whereas resizing gives it the one learnt for about 2 d.
# Measured on the official-layout vit_b with random relative-position tables against S = 1024 on the
# same pixels (tools/measure_position_tables.py, numbers in docs/EVALUATION.md): cropping keeps the
# encoder's output closer to S = 1024 in 12 of 16 cases and in all 8 at S = 512; resizing was ahead
# only with white-noise tables at S = 256, by at most 0.007 in relative error.
POSITION_TABLE_MODES = ("crop", "interpolate")
DEFAULT_POSITION_TABLES = "crop"


@dataclass
class ClassInfo:
    """One output class: the value written to the class raster, its name and colour (#rrggbb)."""

    value: int
    name: str
    color: str


@dataclass
class ModelCard:
    """What a model file says about its model."""

    backbone: str
    input_size: int
    classes: List[ClassInfo]
    bands: List[str] = field(default_factory=lambda: ["VV", "VH"])
    input_scale: str = "db"
    normalization: Optional[Dict[str, List[float]]] = None  # {"mean": [3], "std": [3]} of the model input
    tile_size: Optional[int] = None
    tile_overlap: float = 0.25
    refine_channels: int = 0  # width of the full-resolution logit refinement (0: none, the published model)
    training_input_scale: Optional[str] = None  # the scale the training images were read in
    # Later additions; their defaults are what files written before them did.
    input_clip: Optional[float] = None  # normalised inputs clipped to +-input_clip before the encoder
    position_tables: str = "interpolate"  # how position tables fit another input size (crop, interpolate)
    embedding_layout: str = "ours"  # "authors": a model imported from the authors' code
    pixel_expert: bool = False  # a per-pixel Gaussian classifier joins the logits (modeling.pixel_expert)
    pixel_expert_weight: float = 1.0  # the weight of its log posterior (files before the field: 1)
    gsd: Optional[float] = None
    sam_checkpoint: Optional[Dict[str, str]] = None  # {"name", "sha256"}; None when self-contained
    provenance: Dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.classes = [c if isinstance(c, ClassInfo) else ClassInfo(**c) for c in self.classes]
        if self.input_scale not in INPUT_SCALES:
            raise ModelFileError(f"input scale must be one of {', '.join(INPUT_SCALES)}, got {self.input_scale!r}")
        if len({c.value for c in self.classes}) != len(self.classes):
            raise ModelFileError("class values must be unique")
        if self.embedding_layout not in EMBEDDING_LAYOUTS:
            raise ModelFileError(f"embedding layout must be one of {', '.join(EMBEDDING_LAYOUTS)}, "
                                 f"got {self.embedding_layout!r}")
        if self.position_tables not in POSITION_TABLE_MODES:
            raise ModelFileError(f"position tables must be one of {', '.join(POSITION_TABLE_MODES)}, "
                                 f"got {self.position_tables!r}")
        if self.input_clip is not None and not (isinstance(self.input_clip, (int, float)) and self.input_clip > 0):
            raise ModelFileError(f"input clip must be a positive number or none, got {self.input_clip!r}")
        if not (isinstance(self.pixel_expert_weight, (int, float)) and self.pixel_expert_weight > 0):
            raise ModelFileError(f"pixel expert weight must be a positive number, got {self.pixel_expert_weight!r}")
        if self.tile_size is None:
            self.tile_size = self.input_size

    @property
    def self_contained(self) -> bool:
        return self.sam_checkpoint is None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelCard":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def describe(self, weights: Optional[str] = None) -> str:
        """The model card as text, for ``cwsam info`` and the plugin; ``weights`` replaces the line saying
        where the weights come from (an ONNX export holds them all)."""
        lines = [
            f"Backbone:        {self.backbone} (input {self.input_size} x {self.input_size} px)",
            "Weights:         " + (weights or (
                "self-contained (trained from scratch)"
                if self.self_contained
                else f"needs SAM checkpoint {self.sam_checkpoint['name']} (sha256 {self.sam_checkpoint['sha256'][:12]}...)"
            )),
            f"Bands expected:  {', '.join(self.bands)}",
            f"Input scale:     {self.input_scale}" + (
                f" (trained on {self.training_input_scale} data)" if self.training_input_scale else ""),
            "Normalisation:   " + (
                f"mean {_fmt(self.normalization['mean'])}, std {_fmt(self.normalization['std'])}"
                if self.normalization else "none stored (computed from the raster being classified)"
            ),
            "Input clip:      " + (f"normalised values clipped to +-{self.input_clip:g}" if self.input_clip
                                    else "none"),
            f"Tiles:           {self.tile_size} px, overlap {self.tile_overlap:.0%}"
            + (" (at other sizes the global position tables are cropped)" if self.position_tables == "crop" else ""),
            "Refinement:      " + (f"full-resolution, {self.refine_channels} channels" if self.refine_channels
                                    else "none"),
            *([f"Pixel expert:    Gaussian classifier on each pixel and its 5 x 5 means, fitted on the training "
               f"labels (weight {self.pixel_expert_weight:g})"] if self.pixel_expert else []),
            f"GSD:             {self.gsd if self.gsd is not None else 'unknown'}",
            *(["Embedding:       the authors' layout (a model trained with their code)"]
              if self.embedding_layout == "authors" else []),
            f"Classes ({len(self.classes)}):",
            *[f"  {c.value:>4}  {c.color}  {c.name}" for c in self.classes],
        ]
        if self.provenance:
            lines.append("Provenance:")
            for key, value in self.provenance.items():
                if key == "data" and isinstance(value, list) and all(isinstance(d, dict) for d in value):
                    lines.append(f"  data: {len(value)} file pair{'s' if len(value) != 1 else ''}")
                    lines += [f"    {_data_line(entry)}" for entry in value]
                else:
                    lines.append(f"  {key}: {_provenance_value(value)}")
        lines.append(f"Format version:  {self.format_version}")
        return "\n".join(lines)


def _fmt(values: List[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _provenance_value(value: Any) -> str:
    """A provenance value on one short line: floats to 4 significant digits, mappings as key value pairs."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_provenance_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_provenance_value(v) for v in value) + "]"
    return str(value)


def _data_line(entry: Dict[str, Any]) -> str:
    """One training or validation file pair of the provenance: role, image, labels, short checksums."""
    sums = [f"{what} {entry[what + '_sha256'][:12]}" for what in ("image", "labels") if entry.get(what + "_sha256")]
    text = f"{entry.get('role', 'data')}: {entry.get('image')} + {entry.get('labels')}"
    return text + (f" (sha256 {', '.join(sums)})" if sums else "")


PALETTE = ["#1f5fff", "#2e9e3f", "#d9a21b", "#c73b3b", "#8c8c8c", "#8e44ad", "#16a085", "#e67e22",
           "#34495e", "#f1c40f"]


def default_color(index: int) -> str:
    """A distinct colour for the class at position ``index`` of a list given without colours."""
    return PALETTE[index % len(PALETTE)]


def default_classes(num_classes: int) -> List[ClassInfo]:
    """Placeholder classes 0..N-1 with distinct colours, for models built without a class list."""
    return [ClassInfo(i, f"class {i}", default_color(i)) for i in range(num_classes)]
