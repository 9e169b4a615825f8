"""Warm starts: a training run that continues from an existing model file, its *parent*.

The backbone, classes, bands, scales, normalisation and tile size are the parent's, and the new file's
provenance names the parent (file name and SHA-256) and the whole chain before it (``lineage``), so
versions can be traced. Labels may only use the parent's classes. ``replay`` mixes in windows of the
parent's own training sources, as its provenance records them, where they are still on disk unchanged.
The review loop built on it is in ``retrain``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..common.card import ClassInfo, ModelCard
from ..common.paths import file_sha256, same_file
from ..errors import ModelFileError, RetrainError, TrainingDataError
from ..model.model_file import load_model_file, read_model_card
from ..raster.scene import scene_paths
from ..vector.polygons import unmatched_values
from .config import TrainConfig
from .datasets import TrainingSource, label_classes_match, label_values

LOG = logging.getLogger("cwsam")


@dataclass
class Parent:
    """The model a warm start continues from: its file, SHA-256 when loaded, card and built model."""

    path: Path
    sha256: str
    card: ModelCard
    model: object

    def training_data(self) -> List[dict]:
        """The provenance entries of every source this model and the versions before it trained on (each
        once), so a chain of warm starts can still replay the first model's data."""
        provenance = self.card.provenance
        entries = list(provenance.get("inherited_data") or []) + list(provenance.get("data") or [])
        unique = {(e.get("image"), e.get("labels"), e.get("labels_sha256")): e for e in entries
                  if e.get("role") in ("training", "replay")}
        return [{**e, "role": "training"} for e in unique.values()]

    def lineage(self) -> List[Dict[str, str]]:
        """The versions before the new one, oldest first, each {"name", "sha256"}; the parent last."""
        earlier = list(self.card.provenance.get("lineage") or [])
        return earlier + [{"name": self.path.name, "sha256": self.sha256}]


def describe_parent(card: ModelCard) -> str:
    """Lines for ``cwsam info``: the model a warm start came from, and the versions before it ("" if none)."""
    parent = card.provenance.get("parent") if isinstance(card.provenance, dict) else None
    if not parent:
        return ""
    chain = " <- ".join(p["name"] for p in reversed(card.provenance.get("lineage") or [parent]))
    return f"\nParent model:    {parent['name']} (sha256 {parent['sha256']})\nVersions:        this <- {chain}"


def check_unchanged(path: Path | str, expected_sha256: Optional[str]) -> str:
    """The file's SHA-256; a ``RetrainError`` when it is no longer ``expected_sha256`` (None: any)."""
    path = Path(path)
    if not path.is_file():
        raise RetrainError(f"the model file {path} is gone: no version was written; choose an existing model file")
    digest = file_sha256(path)
    if expected_sha256 and digest != expected_sha256:
        raise RetrainError(
            f"the model file {path.name} changed on disk since it was loaded (sha256 {expected_sha256[:12]}... then, "
            f"{digest[:12]}... now): no version was written; classify with the current file and review again")
    return digest


def load_parent(path: Path | str, sam_checkpoint: Optional[Path | str] = None,
                expected_sha256: Optional[str] = None) -> Parent:
    """The parent model of a warm start, loaded for training (``RetrainError`` / ``TrainingDataError`` if not)."""
    path = Path(path)
    digest = check_unchanged(path, expected_sha256)
    try:
        model, card = load_model_file(path, sam_checkpoint)
    except ModelFileError as exc:
        raise TrainingDataError(str(exc)) from None
    return Parent(path, digest, card, model)


def warm_start_config(model: Path | str, output: Path | str, **fields) -> TrainConfig:
    """A ``TrainConfig`` that continues from the model file ``model``: backbone, classes, bands, model
    scale and tile size from its card (``fields`` set the rest; they may not contradict the card)."""
    try:
        card = read_model_card(model)
    except ModelFileError as exc:
        raise TrainingDataError(str(exc)) from None
    tile = fields.pop("tile_size", None)
    if tile and int(tile) != card.input_size:
        raise TrainingDataError(f"{Path(model).name} was trained on {card.input_size} px tiles: a warm start keeps "
                                f"them; leave out the tile size (got {tile})")
    return TrainConfig(backbone=card.backbone, classes=list(card.classes), output=Path(output), init_model=Path(model),
                       bands=list(card.bands), model_scale=card.input_scale, tile_size=card.input_size, **fields)


def check_label_classes(sources: Sequence[TrainingSource], classes: Sequence[ClassInfo],
                        ignore_values: Sequence[int] = ()) -> List[TrainingSource]:
    """Refuse labels with a class the model (of ``classes``) does not have: adding a class makes a new model.

    Polygons with text classes meet the model's classes by name; so do label rasters that name their classes
    (renumbered where their numbers differ, said in the log): the sources returned carry that renumbering."""
    names = ", ".join(f"{c.value}:{c.name}" for c in classes)
    checked = []
    for source in sources:
        if source.polygons is not None:
            unknown = unmatched_values(source.polygons, source.class_field, classes, source.layer)
        else:
            match = label_classes_match(source.labels, classes, ignore_values)
            if match.note:
                LOG.log(logging.WARNING if match.renumber else logging.INFO, match.note)
            source = replace(source, renumber=match.renumber)
            known = set(match.renumber) if match.renumber is not None else {c.value for c in classes}
            unknown = [v for v in label_values(source.labels, ignore_values) if v not in known]
        if unknown:
            shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in unknown[:8])
            raise RetrainError(
                f"{Path(source.label_path).name} uses class(es) {shown} that the model does not have (its classes: "
                f"{names}): label with the model's classes; adding a class needs a new model, trained with all the "
                "classes")
        checked.append(source)
    return checked


def replay_sources(parent: Parent, primary: Sequence[TrainingSource],
                   extra: Sequence[TrainingSource] = ()) -> List[TrainingSource]:
    """The parent's own training sources (from its provenance) still on disk and unchanged, the new
    labels themselves left out, and ``extra`` (e.g. the parent's own map outside the corrections, see
    :func:`anchor_labels`). Said in the log."""
    found: List[TrainingSource] = []
    seen = set()
    new_labels = {file_sha256(p.label_path) for p in primary if Path(p.label_path).is_file()}
    for entry in parent.training_data():
        source = _recorded_source(entry, parent.path.parent)
        if source is None:
            continue
        key = (source.image, str(source.label_path))
        if key in seen or entry.get("labels_sha256") in new_labels or any(
                same_file(source.label_path, p.label_path) for p in primary):
            continue  # the new labels themselves (or a copy of them)
        seen.add(key)
        found.append(source)
    if found:
        LOG.info("replay: %d training source(s) of %s (%s)", len(found), parent.path.name,
                 ", ".join(Path(s.label_path).name for s in found))
    elif extra:
        LOG.info("replay: %s records no training data still on disk unchanged", parent.path.name)
    else:
        LOG.warning("replay: %s records no training data still on disk unchanged: training on the new labels "
                    "only", parent.path.name)
    if extra:
        LOG.info("replay: also %s", ", ".join(Path(s.label_path).name for s in extra))
    return found + list(extra)


def _recorded_source(entry: dict, folder: Path) -> Optional[TrainingSource]:
    """A provenance data entry as a source, when its files exist with the recorded SHA-256."""
    def locate(text: str) -> Optional[Path]:
        path = Path(text)
        for candidate in (path, folder / path):
            if candidate.is_file():
                return candidate
        return None

    images = [locate(p) for p in scene_paths(entry.get("image", ""))]
    labels = locate(entry.get("labels", ""))
    if labels is None or not images or any(p is None for p in images):
        LOG.info("replay: %s is no longer on disk", entry.get("labels"))
        return None
    recorded = [entry.get("image_sha256", "").split(","), [entry.get("labels_sha256", "")]]
    if [file_sha256(p) for p in images] != recorded[0] or file_sha256(labels) != recorded[1][0]:
        LOG.info("replay: %s or its image changed since the parent was trained: left out", labels.name)
        return None
    image = ",".join(map(str, images))
    if entry.get("class_field"):
        return TrainingSource(image, polygons=labels, class_field=entry["class_field"], layer=entry.get("layer"))
    return TrainingSource(image, labels=labels)
