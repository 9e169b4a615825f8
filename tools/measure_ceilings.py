"""Upper bounds for the training benchmark's folds: what no classifier trained on them can beat, and
what the radiometry of the held-out images allows when the classifier has seen their labels.

    .venv/bin/python tools/measure_ceilings.py [--data ../shared/data]

Prints, on the folds of ``bench/bench_train.py`` and scored as it scores (pooled confusion matrices):

- PolSF, "unseen classes": every test pixel correct, except those of classes with no label in the
  fold's training tiles, which no trained classifier can name; they are given to the known class that
  costs the pooled mIoU least (tried one by one). The ceiling of any method on these folds.
- "Gaussian ML fitted on the test images": the benchmark's Gaussian classifier (the 3 or 2 channels and
  their 5 x 5 means), fitted on the labelled pixels of the held-out images themselves and scored on them:
  how well local radiometry separates the classes there, with nothing left to generalise.
- Sen1Floods11, "best VV threshold per chip" and "best VV, VH threshold pair per chip": water below
  the thresholds that maximise each chip's own water IoU, chosen with its labels (an oracle Otsu).

The oracles see the test labels: they are bounds to read the benchmark's targets against, not methods.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from rasterio.errors import NotGeoreferencedWarning

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench_train as bt  # noqa: E402  (the benchmark's folds, readers and baselines)

from cwsam_core.common.labels import IGNORE_INDEX  # noqa: E402
from cwsam_core.raster.radiometry import match_bands  # noqa: E402
from cwsam_core.training.metrics import confusion_matrix, metrics_from_confusion  # noqa: E402


def labelled(samples: Sequence[bt.Sample], task: bt.Task) -> List[Tuple[np.ndarray, np.ndarray, tuple]]:
    """(raw image, class indexes, band descriptions) of each sample."""
    return [bt.read_labels(s, task) for s in samples]


def unseen_class_ceiling(task: bt.Task) -> Tuple[np.ndarray, List[str]]:
    """Pooled confusion of the best classifier that only names classes seen in training, and what it did."""
    num = len(task.classes)
    pooled = np.zeros((num, num), dtype=np.int64)
    choices = []
    for fold in task.folds:
        seen = set()
        for _, target, _ in labelled(fold.train, task):
            seen |= {int(c) for c in np.unique(target) if c != IGNORE_INDEX}
        targets = [t for _, t, _ in labelled(fold.test, task)]
        present = {int(c) for t in targets for c in np.unique(t) if c != IGNORE_INDEX}
        unseen = sorted(present - seen)
        exact = sum(confusion_matrix(t, t, num, ignore=t == IGNORE_INDEX) for t in targets)
        best = None
        for stand_in in sorted(seen):  # the unseen pixels all go to one known class; try each
            confusion = exact.copy()
            for c in unseen:
                confusion[c, stand_in] += confusion[c, c]
                confusion[c, c] = 0
            trial = pooled + confusion
            miou = metrics_from_confusion(trial).miou
            if best is None or miou > best[0]:
                best = (miou, stand_in, confusion)
        pooled += best[2]
        if unseen:
            names = ", ".join(task.classes[c].name for c in unseen)
            choices.append(f"{fold.name}: {names} unseen in training, given to {task.classes[best[1]].name}")
    return pooled, choices


def gaussian_on_test(task: bt.Task) -> np.ndarray:
    """Pooled confusion of the benchmark's Gaussian classifier fitted on each fold's test pixels."""
    num = len(task.classes)
    pooled = np.zeros((num, num), dtype=np.int64)
    for fold in task.folds:
        x, y = bt.gaussian_pixels(fold.test, task)
        pooled += confusion_matrix(y, bt.GaussianML().fit(x, y, num).predict(x), num)
    return pooled


def best_thresholds(task: bt.Task, bands: Sequence[str], steps: int = 64) -> Tuple[np.ndarray, str]:
    """(pooled water confusion, water IoU per event) of per-chip thresholds on ``bands`` (water below all
    of them), each chip's thresholds those of its largest water IoU over a grid of ``steps`` quantiles
    per band."""
    pooled = np.zeros((2, 2), dtype=np.int64)
    events = []
    for fold in task.folds:
        event = np.zeros((2, 2), dtype=np.int64)
        for raw, target, descriptions in labelled(fold.test, task):
            channels = [raw[i - 1] for i in match_bands(descriptions, list(bands))]
            keep = target != IGNORE_INDEX
            water = target[keep] == 1
            values = [c[keep] for c in channels]
            grids = [np.quantile(v, np.linspace(0, 1, steps + 1)) for v in values]
            best = (-1.0, None)
            for cut in np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, len(bands)):
                predicted = np.logical_and.reduce([v <= t for v, t in zip(values, cut)])
                union = np.count_nonzero(predicted | water)
                iou = np.count_nonzero(predicted & water) / union if union else 1.0
                if iou > best[0]:
                    best = (iou, predicted)
            event += confusion_matrix(water.astype(np.int64), best[1].astype(np.int64), 2)
        pooled += event
        if event[1].sum():  # events with water
            events.append(f"{fold.name} {metrics_from_confusion(event).iou[1]:.3f}")
    return pooled, ", ".join(events)


def report(title: str, confusion: np.ndarray, task: bt.Task) -> None:
    m = metrics_from_confusion(confusion)
    per_class = ", ".join(f"{c.name} {iou:.3f}" for c, iou in zip(task.classes, m.iou))
    print(f"  {title}: mIoU {m.miou:.3f} ({per_class})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder holding sen1floods11_s1hand/ and polsf_sf_airsar/ (default ../shared/data)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    logging.disable(logging.WARNING)
    tasks = bt.tasks(args.data)

    polsf = tasks["polsf"]
    print("PolSF, pooled over the benchmark's 3 folds")
    confusion, choices = unseen_class_ceiling(polsf)
    report("every pixel of a class seen in training correct", confusion, polsf)
    for line in choices:
        print(f"    {line}")
    report("Gaussian ML fitted on the test tiles", gaussian_on_test(polsf), polsf)

    flood = tasks["sen1floods11"]
    print("Sen1Floods11, pooled over the benchmark's leave-one-event-out folds (water IoU is the 'water' entry)")
    report("Gaussian ML fitted on the test chips", gaussian_on_test(flood), flood)
    for bands in (["VV"], ["VV", "VH"]):
        confusion, events = best_thresholds(flood, bands)
        report(f"best {', '.join(bands)} threshold{'s' if len(bands) > 1 else ''} per chip", confusion, flood)
        print(f"    water IoU per event with water: {events}")


if __name__ == "__main__":
    main()
