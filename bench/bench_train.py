"""Training benchmark on real SAR: vit_tiny trained from scratch by the engine, against a classical baseline.

Run: ``.venv/bin/python bench/bench_train.py`` (``make bench-train``; about 25 minutes on a 2-core CPU).
Needs the real data in ``../shared/data`` (``--data``); nothing of it is written into the project.
For every held-out fold it trains ``vit_tiny`` (S = 256, random initialisation, no SAM checkpoint)
with ``cwsam_core.training.train`` on the training files, scores the held-out files with
``cwsam_core.evaluation.evaluate`` (the classification engine, as a user would run it), and scores a
classical baseline on the same labelled pixels in the same run:

- Sen1Floods11 (7 Sentinel-1 chips, VV + VH in dB, water / not water): leave-one-event-out (5 events);
  baseline: a per-chip Otsu threshold on VV (water = VV below it). Water IoU and mIoU per fold, and
  pooled over the folds (their confusion matrices summed).
- PolSF SF-AIRSAR (11 Pauli RGB tiles, 5 land-cover classes): 3 folds of whole tiles, overlapping
  tiles on the same side; baseline: a Gaussian maximum-likelihood (quadratic discriminant)
  classifier of per-pixel features (the 3 channels and their 5 x 5 local means) fitted on the same
  training tiles' labelled pixels. Per-class IoU, mIoU and OA per fold and pooled.

The Pauli tiles are an 8-bit composite, contrast-stretched for display (R = |HH-VV|, G = |HV|,
B = |HH+VV|): not calibrated power, no dB. So the model takes the three channels as they are:
``input_scale = model_scale = "amplitude"`` makes ``SarReader`` convert nothing (3 bands go to the
3 channels unchanged, ``to_model_channels``) and only normalises them. A dB model would take
log10 of a display stretch, and the zeros of dark water (up to 30 % of a channel in some tiles)
would have no dB value and become nodata; ``linear`` would square the stretch. The band names
describe the Pauli channels; the PNGs carry no band descriptions, so bands are taken in order.

No model selection on held-out data: by default nothing is held out for validation
(``--val-fraction 0``: a 512-pixel chip is a single 2-tile block, and a whole file of 4 to 8 is
too much to give up), so each fold keeps its last weights. Seeds are fixed; the results go to
``bench/out/bench_train.json`` (``--json``; written after each fold) and the models to ``bench/out/bench_train/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cwsam_core.classes import parse_classes  # noqa: E402
from cwsam_core.datasets import RasterLabels  # noqa: E402
from cwsam_core.evaluation import evaluate  # noqa: E402
from cwsam_core.losses import IGNORE_INDEX  # noqa: E402
from cwsam_core.metrics import confusion_matrix, metrics_from_confusion  # noqa: E402
from cwsam_core.model_file import ClassInfo  # noqa: E402
from cwsam_core.radiometry import match_bands  # noqa: E402
from cwsam_core.training import TrainConfig, TrainingSource, train  # noqa: E402

OUT = ROOT / "bench" / "out"
RESULTS = OUT / "bench_train.json"
BACKBONE = "vit_tiny"

FLOOD_CLASSES = "0:not water:#8c8c8c,1:water:#1f5fff"
POLSF_CLASSES = "1:bare soil:#00ffff,2:mountain:#ffff00,3:water:#0000ff,4:urban:#ff0000,5:vegetation:#00ff00"
# Held-out tiles per PolSF fold (tiles overlapping these join them, see polsf_folds). Each tile is
# tested once; mountain lies only in r0000_c0000, so fold 1 cannot train it, while folds 2 and 3
# train all five classes (bare soil in fold 2 only from 283 px of r0512/r0644_c0512).
POLSF_HELD_OUT = {
    "polsf-1": ("r0000_c0000", "r0256_c0768", "r0512_c0512"),
    "polsf-2": ("r0000_c0512", "r0512_c0000"),
    "polsf-3": ("r0256_c0000", "r0256_c0256", "r0512_c0768"),
}


@dataclass
class Sample:
    """One labelled image file; ``group`` is what a fold holds out together (event, overlap group)."""

    name: str
    image: Path
    labels: Path
    group: str


@dataclass
class Fold:
    name: str
    train: List[Sample]
    test: List[Sample]


@dataclass
class Task:
    """A dataset and how the model is set up for it."""

    name: str
    classes: List[ClassInfo]
    bands: List[str]
    scale: str  # input and model scale
    ignore_values: List[int]
    folds: List[Fold]
    baseline_name: str
    baseline: Callable[[Fold, "Task"], np.ndarray]  # fold -> confusion matrix over its test pixels


# --- data ---------------------------------------------------------------------------------------


def _manifest(folder: Path) -> List[dict]:
    path = folder / "manifest.csv"
    if not path.is_file():
        raise SystemExit(f"bench_train: {path} not found: point --data at the folder holding "
                         "sen1floods11_s1hand/ and polsf_sf_airsar/")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def flood_folds(folder: Path) -> List[Fold]:
    """Leave-one-event-out folds over the chips of ``manifest.csv`` (column ``event``)."""
    samples = [Sample(r["chip_id"], folder / r["s1_file"], folder / r["label_file"], r["event"])
               for r in _manifest(folder)]
    events = sorted({s.group for s in samples})
    return [Fold(e, [s for s in samples if s.group != e], [s for s in samples if s.group == e]) for e in events]


def polsf_folds(folder: Path) -> List[Fold]:
    """The folds of ``POLSF_HELD_OUT``, each widened to every tile overlapping one of its tiles."""
    rows = _manifest(folder)
    samples = [Sample(r["tile_id"], folder / r["image_file"], folder / r["label_file"], r["tile_id"]) for r in rows]
    boxes = [(int(r["row_off"]), int(r["col_off"]), int(r["height"]), int(r["width"])) for r in rows]

    def overlap(a: int, b: int) -> bool:
        (ra, ca, ha, wa), (rb, cb, hb, wb) = boxes[a], boxes[b]
        return ra < rb + hb and rb < ra + ha and ca < cb + wb and cb < ca + wa

    folds, assigned = [], set()
    for name, tiles in POLSF_HELD_OUT.items():
        held = {i for i, s in enumerate(samples) if any(s.name.endswith(t) for t in tiles)}
        held |= {j for i in held for j in range(len(samples)) if overlap(i, j)}
        if held & assigned:
            raise RuntimeError(f"{name}: tiles {sorted(samples[i].name for i in held & assigned)} are in two folds")
        assigned |= held
        folds.append(Fold(name, [s for i, s in enumerate(samples) if i not in held],
                          [s for i, s in enumerate(samples) if i in held]))
    if len(assigned) != len(samples):
        missing = sorted(s.name for i, s in enumerate(samples) if i not in assigned)
        raise RuntimeError(f"PolSF tiles in no fold: {', '.join(missing)}")
    return folds


def read_labels(sample: Sample, task: Task) -> Tuple[np.ndarray, np.ndarray, Tuple]:
    """(raw K x H x W image, H x W class indexes with IGNORE_INDEX, band descriptions) of a sample;
    the labels are read by the engine, so class values map exactly as in training and evaluation."""
    with rasterio.open(sample.image) as image:
        raw, descriptions = image.read(), image.descriptions
        reference = RasterLabels(sample.labels, image, task.classes, task.ignore_values)
        try:
            target = reference.read(Window(0, 0, image.width, image.height))
        finally:
            reference.close()
    target[~np.isfinite(raw).all(axis=0)] = IGNORE_INDEX  # pixels the classifier writes as nodata
    return raw, target, descriptions


# --- baselines ----------------------------------------------------------------------------------


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of 1-D ``values``: the histogram bin edge maximising the between-class variance."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts).astype(np.float64)  # pixels at or below each bin
    above = below[-1] - below
    mass = np.cumsum(counts * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        # w0 w1 (mu0 - mu1)^2 up to a constant factor, written with cumulative sums.
        between = (mass[-1] * below / below[-1] - mass) ** 2 / (below * above)
    between[~np.isfinite(between)] = -1.0
    return float(edges[int(np.argmax(between)) + 1])


def otsu_baseline(fold: Fold, task: Task) -> np.ndarray:
    """Per-chip Otsu threshold on VV (dB) over the chip's valid pixels; water (index 1) below it."""
    confusion = np.zeros((2, 2), dtype=np.int64)
    for sample in fold.test:
        raw, target, descriptions = read_labels(sample, task)
        vv = raw[match_bands(descriptions, ["VV"])[0] - 1]
        threshold = otsu_threshold(vv[np.isfinite(vv)])
        water = (vv < threshold).astype(np.int64)
        confusion += confusion_matrix(target, water, 2, ignore=target == IGNORE_INDEX)
    return confusion


def pauli_features(raw: np.ndarray, size: int = 5) -> np.ndarray:
    """K x H x W image -> H x W x 2K float64 features: the channels and their ``size`` x ``size`` local means."""
    x = raw.astype(np.float64)
    half = size // 2
    padded = np.pad(x, ((0, 0), (half, half), (half, half)), mode="reflect")
    integral = np.pad(padded.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    box = (integral[:, size:, size:] - integral[:, :-size, size:] - integral[:, size:, :-size]
           + integral[:, :-size, :-size]) / (size * size)
    return np.concatenate([x, box]).transpose(1, 2, 0)


class GaussianML:
    """Gaussian maximum-likelihood classifier (QDA with equal priors): one full-covariance normal per class."""

    def fit(self, features: np.ndarray, labels: np.ndarray, num_classes: int) -> "GaussianML":
        """features: n x d; labels: n class indexes. Classes with fewer than 10 d pixels are never predicted."""
        d = features.shape[1]
        self.params: Dict[int, Tuple[np.ndarray, np.ndarray, float]] = {}
        for c in range(num_classes):
            x = features[labels == c]
            if len(x) < 10 * d:
                continue
            mean = x.mean(axis=0)
            cov = np.cov(x, rowvar=False)
            cov += np.eye(d) * 1e-3 * np.trace(cov) / d  # ridge: constant-valued channels (saturated tiles)
            _, logdet = np.linalg.slogdet(cov)
            self.params[c] = (mean, np.linalg.inv(cov), logdet)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """features: n x d -> n class indexes of the largest log-likelihood."""
        classes = sorted(self.params)
        scores = np.empty((len(features), len(classes)))
        for k, c in enumerate(classes):
            mean, precision, logdet = self.params[c]
            centred = features - mean
            scores[:, k] = -0.5 * (np.einsum("ij,jk,ik->i", centred, precision, centred) + logdet)
        return np.asarray(classes)[scores.argmax(axis=1)]


def gaussian_ml_baseline(fold: Fold, task: Task) -> np.ndarray:
    """Gaussian ML classifier fitted on the training tiles' labelled pixels, scored on the test tiles'."""
    num = len(task.classes)

    def pixels(samples: Sequence[Sample]) -> Tuple[np.ndarray, np.ndarray]:
        features, labels = [], []
        for sample in samples:
            raw, target, _ = read_labels(sample, task)
            keep = target != IGNORE_INDEX
            features.append(pauli_features(raw)[keep])
            labels.append(target[keep])
        return np.concatenate(features), np.concatenate(labels)

    classifier = GaussianML().fit(*pixels(fold.train), num)
    features, labels = pixels(fold.test)
    return confusion_matrix(labels, classifier.predict(features), num)


# --- running ------------------------------------------------------------------------------------


def tasks(data: Path) -> Dict[str, Task]:
    flood, polsf = data / "sen1floods11_s1hand", data / "polsf_sf_airsar"
    return {
        "sen1floods11": Task("sen1floods11", parse_classes(FLOOD_CLASSES), ["VV", "VH"], "db", [-1],
                             flood_folds(flood), "Otsu", otsu_baseline),
        "polsf": Task("polsf", parse_classes(POLSF_CLASSES), ["HH-VV", "HV", "HH+VV"], "amplitude", [0],
                      polsf_folds(polsf), "Gaussian ML", gaussian_ml_baseline),
    }


def settings(args: argparse.Namespace) -> dict:
    """Everything that changes a fold's result (a cached fold is reused only when these match)."""
    return {"backbone": BACKBONE, "steps": args.steps, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "warmup": args.warmup, "val_fraction": args.val_fraction, "seed": args.seed,
            "threads": args.threads, "torch": str(torch.__version__)}


def scores(confusion: np.ndarray) -> dict:
    m = metrics_from_confusion(confusion)
    nan_free = lambda v: None if v != v else float(v)  # noqa: E731 (NaN is not JSON)
    return {"confusion": confusion.tolist(), "iou": [nan_free(v) for v in m.iou], "miou": nan_free(m.miou),
            "overall_accuracy": nan_free(m.overall_accuracy), "pixels": m.pixels}


def run_fold(task: Task, fold: Fold, args: argparse.Namespace) -> dict:
    """Train on the fold's training files, evaluate on its test files, and score the baseline there."""
    folder = args.json.with_suffix("") / task.name / fold.name
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        backbone=BACKBONE, classes=task.classes, output=folder / "model.cwsam.pt", bands=task.bands,
        input_scale=task.scale, model_scale=task.scale, ignore_values=task.ignore_values, epochs=args.epochs,
        steps_per_epoch=args.steps // args.epochs, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup, val_fraction=args.val_fraction, device="cpu", seed=args.seed,
    )
    started = time.perf_counter()

    def progress(info: dict) -> None:
        if "train_loss" in info:
            print(f"    epoch {info['epoch']}/{info['epochs']}: loss {info['train_loss']:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)

    result = train([TrainingSource(s.image, s.labels) for s in fold.train], config, progress=progress)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    metrics, _ = evaluate(result.model_path, [(s.image, s.labels) for s in fold.test],
                          ignore_values=task.ignore_values, device="cpu")
    eval_seconds = time.perf_counter() - started
    baseline = task.baseline(fold, task)
    # Both must score the same pixels: the same reference pixels per class, or the engine's evaluation
    # masks differently from the labels as read here.
    same_pixels = bool(np.array_equal(baseline.sum(axis=1), metrics.confusion.sum(axis=1)))
    if not same_pixels:
        print(f"    WARNING: reference pixels per class differ: baseline {baseline.sum(axis=1).tolist()}, "
              f"engine {metrics.confusion.sum(axis=1).tolist()}")
    return {"fold": fold.name, "train": [s.name for s in fold.train], "test": [s.name for s in fold.test],
            "settings": settings(args), "train_seconds": train_seconds, "eval_seconds": eval_seconds,
            "final_loss": result.history[-1].train_loss if result.history else None,
            "loss_per_epoch": [r.train_loss for r in result.history],
            "ours": scores(metrics.confusion), "baseline": scores(baseline),
            "same_pixels": same_pixels}


def fmt(value: Optional[float]) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def print_flood(rows: List[dict], pooled: dict) -> None:
    print("\nSen1Floods11, leave-one-event-out: water IoU and mIoU (2 classes), labelled pixels only")
    print(f"{'held-out event':<16}{'chips':>6}{'pixels':>10}{'water px':>10} | {'ours: water IoU':>15}{'mIoU':>7} | "
          f"{'Otsu: water IoU':>15}{'mIoU':>7} | train s")
    for r in rows + [pooled]:
        ours, base = r["ours"], r["baseline"]
        water = ours["confusion"][1][0] + ours["confusion"][1][1]
        print(f"{r['fold']:<16}{len(r['test']):>6}{ours['pixels']:>10,}{water:>10,} | {fmt(ours['iou'][1]):>15}"
              f"{fmt(ours['miou']):>7} | {fmt(base['iou'][1]):>15}{fmt(base['miou']):>7} | "
              f"{r.get('train_seconds', 0):7.0f}")


def print_polsf(rows: List[dict], pooled: dict, classes: List[ClassInfo]) -> None:
    print("\nPolSF SF-AIRSAR, 3 folds of whole tiles: per-class IoU, mIoU, OA (labelled pixels only)")
    names = [c.name[:10] for c in classes]
    print(f"{'fold':<9}{'method':<12}" + "".join(f"{n:>11}" for n in names) + f"{'mIoU':>8}{'OA':>8}{'pixels':>10}")
    for r in rows + [pooled]:
        for label, s in (("ours", r["ours"]), ("Gaussian ML", r["baseline"])):
            print(f"{r['fold']:<9}{label:<12}" + "".join(f"{fmt(v):>11}" for v in s["iou"])
                  + f"{fmt(s['miou']):>8}{fmt(s['overall_accuracy']):>8}{s['pixels']:>10,}")


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": str(torch.__version__), "python": platform.python_version(), "numpy": np.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["sen1floods11", "polsf", "all"], default="all")
    parser.add_argument("--folds", help="comma-separated fold names to run (events, polsf-1..3); default all")
    parser.add_argument("--steps", type=int, default=96, help="optimizer steps per fold (default 96)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs the steps are split into (default 4)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default 2e-4)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up steps (default 10)")
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="validation share inside the training files (default 0: keep the last weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine more threads stall each other)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder holding sen1floods11_s1hand/ and polsf_sf_airsar/ (default ../shared/data)")
    parser.add_argument("--json", type=Path, default=RESULTS,
                        help="results file (default bench/out/bench_train.json; the models go to its name without .json)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse folds already in the results file that ran with the same settings")
    args = parser.parse_args()
    if args.steps < 1 or args.epochs < 1 or args.steps % args.epochs:
        parser.error(f"--steps ({args.steps}) must be a positive multiple of --epochs ({args.epochs})")

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the PolSF PNGs have no georeferencing
    logging.basicConfig(level=logging.WARNING, format="    cwsam: %(message)s")
    torch.set_num_threads(args.threads)
    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    info = machine()
    print(f"command: {command}")
    print(f"machine: {info['cpu']}, {info['cpu_count']} CPUs, torch {info['torch']} with {info['torch_threads']} "
          f"threads, Python {info['python']}")
    print(f"settings: {BACKBONE} from scratch, {args.steps} steps x batch {args.batch_size} per fold "
          f"({args.epochs} epochs), lr {args.lr}, warm-up {args.warmup}, val fraction {args.val_fraction}, "
          f"seed {args.seed}", flush=True)

    if not args.data.is_dir():
        raise SystemExit(f"bench_train: data folder not found: {args.data}; give --data")
    all_tasks = tasks(args.data)
    chosen = list(all_tasks) if args.dataset == "all" else [args.dataset]
    wanted = set(args.folds.split(",")) if args.folds else None
    known = {f.name for t in chosen for f in all_tasks[t].folds}
    if wanted and wanted - known:
        parser.error(f"unknown fold(s) {', '.join(sorted(wanted - known))}; choose from {', '.join(sorted(known))}")

    cached = json.loads(args.json.read_text()) if args.reuse and args.json.is_file() else {}
    results = {"command": command, "machine": info, "settings": settings(args), "datasets": {}}
    started = time.perf_counter()
    for name in chosen:
        task = all_tasks[name]
        rows = []
        previous = {r["fold"]: r for r in cached.get("datasets", {}).get(name, {}).get("folds", [])}
        for fold in task.folds:
            if wanted and fold.name not in wanted:
                continue
            if fold.name in previous and previous[fold.name]["settings"] == settings(args):
                print(f"[{name}] {fold.name}: reused from {args.json.name}", flush=True)
                rows.append(previous[fold.name])
                continue
            print(f"[{name}] {fold.name}: train on {', '.join(s.name for s in fold.train)}; "
                  f"test on {', '.join(s.name for s in fold.test)}", flush=True)
            rows.append(run_fold(task, fold, args))
            r = rows[-1]
            print(f"    ours mIoU {fmt(r['ours']['miou'])}, {task.baseline_name} mIoU {fmt(r['baseline']['miou'])} "
                  f"on {r['ours']['pixels']:,} px (train {r['train_seconds']:.0f} s, "
                  f"evaluate {r['eval_seconds']:.0f} s)", flush=True)
            results["datasets"][name] = {"baseline": task.baseline_name, "classes": [c.name for c in task.classes],
                                         "folds": rows}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))
        if not rows:
            continue
        pooled = {"fold": "pooled", "test": [t for r in rows for t in r["test"]],
                  "train_seconds": sum(r["train_seconds"] for r in rows),
                  "ours": scores(sum(np.asarray(r["ours"]["confusion"]) for r in rows)),
                  "baseline": scores(sum(np.asarray(r["baseline"]["confusion"]) for r in rows))}
        results["datasets"][name] = {"baseline": task.baseline_name, "classes": [c.name for c in task.classes],
                                     "folds": rows, "pooled": pooled}
        if name == "sen1floods11":
            print_flood(rows, pooled)
        else:
            print_polsf(rows, pooled, task.classes)
    results["wall_seconds"] = time.perf_counter() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwall time {results['wall_seconds'] / 60:.1f} min; results in {os.path.relpath(args.json, Path.cwd())}")


if __name__ == "__main__":
    main()
