"""The review loop on simulated data: a model of one season corrected on a scene of another.

A vit_nano model is trained on a simulated summer scene, then classifies a different scene simulated
in winter (wet soil, wind-roughened water, harvested fields: ``cwsam_core.simulate.SEASON_SHIFTS_DB``),
which it gets partly wrong. Each round then draws a few correction polygons, as an analyst would,
over the largest wrongly classified regions (found from the reference labels; each polygon a patch of
at most ``PATCH`` px across inside one region, labelled with its true class), retrains the current
version on all corrections so far for a fixed number of steps, a fifth of the windows replayed from
the parent's summer scene and the current version's own map outside the corrections
(``cwsam_core.training.retrain.retrain``, the engine of the dock's *Retrain from corrections*, as the dock
calls it) and classifies the scene again.

Printed per round: mIoU and overall accuracy on the pixels no correction polygon covers (the
polygons of all rounds, so every round is scored on the same pixels), accuracy on the corrected
pixels, the share of pixels that changed class, and the seconds taken.

    .venv/bin/python bench/bench_review_loop.py [--rounds 3] [--json out.json]
        [--without-training-data | --no-own-map] [--replay SHARE]

``tests/test_retrain_loop.py`` runs :func:`review_loop` with the defaults and checks the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List

import numpy as np
import rasterio
import shapely
from rasterio.features import rasterize, shapes

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cwsam_core.common.card import ClassInfo  # noqa: E402
from cwsam_core.engine.inference import classify_file  # noqa: E402
from cwsam_core.simulate import SIMULATED_CLASSES, simulate_scene, write_scene  # noqa: E402
from cwsam_core.training.config import TrainConfig  # noqa: E402
from cwsam_core.training.datasets import TrainingSource  # noqa: E402
from cwsam_core.training.loop import train  # noqa: E402
from cwsam_core.training.metrics import confusion_matrix, metrics_from_confusion  # noqa: E402
from cwsam_core.training.retrain import compare_maps, retrain  # noqa: E402

SIZE = 192  # px, both scenes
TILE = 64
PATCH = 28  # px: the largest side of one correction polygon
POLYGONS_PER_ROUND = 6
PARENT_STEPS = 160
RETRAIN_STEPS = 150
REPLAY = 0.2  # share of windows from the parent's summer scene, as the dock's default
CLASSES = [ClassInfo(c.value, c.name, c.color) for c in SIMULATED_CLASSES]


@dataclass
class Round:
    """The numbers of one round (round 0: the parent model, before any correction)."""

    round: int
    model: str
    polygons: int  # correction polygons so far
    corrected_pixels: int
    miou_uncovered: float = float("nan")  # on pixels no correction polygon (of any round) covers
    accuracy_uncovered: float = float("nan")
    accuracy_corrected: float = float("nan")  # on the pixels of this round's corrections so far
    changed: float = 0.0  # share of pixels whose class changed against the previous round's map
    iou_uncovered: List[float] = field(default_factory=list)  # per class, in SIMULATED_CLASSES order
    seconds: float = 0.0


@dataclass
class LoopResult:
    rounds: List[Round] = field(default_factory=list)
    seconds: float = 0.0


def _metrics(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray):
    confusion = confusion_matrix(reference[mask], prediction[mask], len(CLASSES))
    return metrics_from_confusion(confusion)


def wrong_patches(prediction: np.ndarray, reference: np.ndarray, covered: np.ndarray, transform, count: int,
                  patch: int = PATCH) -> list:
    """(polygon, class value) for the ``count`` largest connected regions (4-connected) of pixels
    classified wrongly and not yet corrected, each cut to a square of ``patch`` px around a point inside
    it: what an analyst would draw over the largest errors."""
    wrong = (prediction != reference) & ~covered
    regions = []
    for value in np.unique(reference[wrong]):
        mask = (wrong & (reference == value)).astype(np.uint8)
        for geometry, _ in shapes(mask, mask=mask.astype(bool), connectivity=4, transform=transform):
            polygon = shapely.geometry.shape(geometry)
            regions.append((polygon.area, polygon, int(value)))
    regions.sort(key=lambda r: -r[0])
    pixel = abs(transform.a)
    drawn = []
    for _, polygon, value in regions[:count]:
        centre = polygon.point_on_surface()
        box = shapely.box(centre.x - patch * pixel / 2, centre.y - patch * pixel / 2,
                          centre.x + patch * pixel / 2, centre.y + patch * pixel / 2)
        piece = polygon.intersection(box)
        if piece.geom_type != "Polygon":
            piece = max(getattr(piece, "geoms", [piece]), key=lambda g: g.area)
        if piece.area >= 4 * pixel * pixel:
            drawn.append((piece, value))
    return drawn


def write_corrections(path: Path, polygons: list, crs: str) -> None:
    """The correction polygons as a GeoPackage layer with an integer ``class`` field (replaced whole)."""
    import cwsam_core.vector.polygons  # noqa: F401, I001 (first: imports pyogrio without Debian pyproj's warning)
    import pyogrio.raw

    path.unlink(missing_ok=True)
    pyogrio.raw.write(path, np.array([shapely.to_wkb(p) for p, _ in polygons], dtype=object),
                      [np.array([v for _, v in polygons], dtype=np.int32)], fields=["class"],
                      geometry_type="Polygon", crs=crs, driver="GPKG", layer="corrections")


def review_loop(folder: Path, rounds: int = 3, seed: int = 0, parent_steps: int = PARENT_STEPS,
                retrain_steps: int = RETRAIN_STEPS, per_round: int = POLYGONS_PER_ROUND, replay: float = REPLAY,
                own_map: bool = True, without_training_data: bool = False, log=print) -> LoopResult:
    """Train the parent on summer, correct it on winter for ``rounds`` rounds; see the module docstring.
    ``own_map``: the replay also draws from the current version's map outside the corrections (as the
    dock does); ``without_training_data``: the summer scene is deleted once the parent is trained."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    summer = simulate_scene(SIZE, SIZE, seed=11 + seed, season="summer")
    winter = simulate_scene(SIZE, SIZE, seed=12 + seed, season="winter")
    train_image, train_labels = write_scene(summer, folder / "summer.tif", folder / "summer_labels.tif")
    image, _ = write_scene(winter, folder / "winter.tif", folder / "winter_labels.tif")
    reference = winter.labels.astype(np.int64)

    parent = folder / "model.cwsam.pt"
    train([TrainingSource(train_image, train_labels)], TrainConfig(
        backbone="vit_nano", classes=list(CLASSES), output=parent, tile_size=TILE, epochs=1,
        steps_per_epoch=parent_steps, batch_size=4, lr=3e-3, warmup_steps=10, val_fraction=0.0, device="cpu",
        seed=seed))
    if without_training_data:
        for path in (train_image, train_labels):
            path.unlink()
    models, maps = [parent], []
    corrections = folder / "corrections.gpkg"
    drawn: list = []
    result = LoopResult()
    for number in range(rounds + 1):
        tick = time.perf_counter()
        if number > 0:
            prediction = maps[-1][1]
            covered = _covered(drawn, winter.transform)
            new = wrong_patches(prediction, reference, covered, winter.transform, per_round)
            drawn += new
            write_corrections(corrections, drawn, winter.crs)
            version = retrain(models[-1], image, corrections, "class", steps=retrain_steps, replay=replay,
                              anchor_map=maps[-1][0] if own_map else None, device="cpu", seed=seed)
            models.append(version.model_path)
        output = folder / f"winter_classes_round{number}.tif"
        classify_file(image, output, models[-1], device="cpu", batch_size=8)
        with rasterio.open(output) as src:
            prediction = src.read(1).astype(np.int64)
        changed = compare_maps(maps[-1][0], output).changed if maps else 0.0
        maps.append((output, prediction))
        result.rounds.append(Round(number, models[-1].name, len(drawn), int(_covered(drawn, winter.transform).sum()),
                                   changed=changed, seconds=time.perf_counter() - tick))
    covered = _covered(drawn, winter.transform)
    for record, (_, prediction) in zip(result.rounds, maps):
        outside = _metrics(prediction, reference, ~covered)
        record.miou_uncovered, record.accuracy_uncovered = outside.miou, outside.overall_accuracy
        mine = _covered(drawn[: record.polygons], winter.transform)
        if mine.any():
            record.accuracy_corrected = _metrics(prediction, reference, mine).overall_accuracy
        record.iou_uncovered = [round(float(v), 3) for v in outside.iou]
        log(f"round {record.round}: {record.model}, {record.polygons} polygons ({record.corrected_pixels} px): "
            f"mIoU uncovered {record.miou_uncovered:.3f}, OA uncovered {record.accuracy_uncovered:.3f}, "
            f"OA corrected {record.accuracy_corrected:.3f}, changed {record.changed:.1%}, {record.seconds:.1f} s")
    result.seconds = time.perf_counter() - started
    return result


def _covered(polygons: list, transform) -> np.ndarray:
    if not polygons:
        return np.zeros((SIZE, SIZE), dtype=bool)
    return rasterize(((p, 1) for p, _ in polygons), out_shape=(SIZE, SIZE), transform=transform,
                     dtype="uint8").astype(bool)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--without-training-data", action="store_true",
                        help="delete the summer scene once the parent is trained (replay the model's own map only)")
    parser.add_argument("--no-own-map", action="store_true", help="replay the summer scene only, not the model's map")
    parser.add_argument("--replay", type=float, default=REPLAY, help=f"replay share (default {REPLAY})")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="cwsam-review-loop-") as folder:
        result = review_loop(Path(folder), args.rounds, args.seed, replay=args.replay, own_map=not args.no_own_map,
                             without_training_data=args.without_training_data)
    print(f"total {result.seconds:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in result.rounds], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
