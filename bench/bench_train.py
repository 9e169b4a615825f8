"""Training benchmark on real SAR: vit_tiny trained from scratch by the engine, against classical baselines.

Run: ``.venv/bin/python bench/bench_train.py`` (``make bench-train``, which first installs
``requirements-bench.txt``; about 2 hours on a 2-core CPU: 8 folds x 3 seeds x 4 minutes of training,
plus evaluation and baselines). Needs scikit-learn (``requirements-bench.txt``) and the real data in
``../shared/data`` (``--data``); nothing of the data is written into the project.
For every held-out fold and every seed (``--seeds``, default 0, 1, 2) it trains ``vit_tiny``
(S = 128, the engine's default, random initialisation, no SAM checkpoint) with
``cwsam_core.training.loop.train`` on the training files, scores the held-out files with ``cwsam_core.training.evaluation.evaluate`` (the classification engine, as
a user would run it), and scores the classical baselines on the same labelled pixels in the same run:

- Sen1Floods11 (7 Sentinel-1 chips, VV + VH in dB, water / not water): leave-one-event-out (5 events);
  baseline: a per-chip Otsu threshold on VV (water = VV below it). Water IoU and mIoU per fold, and
  pooled over the folds (their confusion matrices summed).
- PolSF SF-AIRSAR (11 Pauli RGB tiles, 5 land-cover classes): 3 folds of whole tiles, overlapping
  tiles on the same side; baseline: a Gaussian maximum-likelihood (quadratic discriminant)
  classifier of per-pixel features (the 3 channels and their 5 x 5 local means) fitted on the same
  training tiles' labelled pixels. Per-class IoU, mIoU and OA per fold and pooled.
- Both datasets: a per-pixel random forest (scikit-learn; settings and reasons at ``RF_PARAMS``) on
  9 features, the model's 3 channels (Sen1Floods11: VV, VH, VV - VH in dB; PolSF: the Pauli channels
  as they are) and their 5 x 5 and 11 x 11 local means, fitted on at most 200,000 labelled pixels drawn
  at random from the fold's training files (``random_state`` = the seed), scored on every labelled
  pixel of its held-out files.

Otsu and Gaussian ML are deterministic (computed once per fold); the model and the random forest are
run once per seed. The summary gives each seed's pooled numbers, their mean, min..max and standard
deviation over the seeds, and then checks, each printed as met or not with its numbers: (a) PolSF pooled
mIoU of the model, worst seed, at least 0.05 above the best of random forest (any seed) and Gaussian
ML; (b) Sen1Floods11 pooled water IoU of the model at least 0.80 for the worst seed; (c) on every
held-out event with water pixels, the model's water IoU above Otsu's and the random forest's, for every
seed. ``--baselines-only`` trains nothing and scores only the baselines (no checks).

Training uses the engine's defaults (learning rate, warm-up, batch size; ``--lr``, ``--warmup``,
``--batch-size`` override them) for ``--time-budget`` minutes per fold (default 4; the learning-rate
schedule follows the elapsed time), or with ``--time-budget 0`` for ``--steps`` optimizer steps.
What the benchmark sets explicitly is the input of each task:

The Pauli tiles are an 8-bit composite, contrast-stretched for display (R = |HH-VV|, G = |HV|,
B = |HH+VV|): not calibrated power, no dB. So the model takes the three channels as they are:
``input_scale = model_scale = "amplitude"`` makes ``SarReader`` convert nothing (3 bands go to the
3 channels unchanged, ``to_model_channels``) and only normalises them. A dB model would take
log10 of a display stretch, and the zeros of dark water (up to 30 % of a channel in some tiles)
would have no dB value and become nodata; ``linear`` would square the stretch. The band names
describe the Pauli channels; the PNGs carry no band descriptions, so bands are taken in order.
Sen1Floods11 is read as VV and VH in dB (``"db"``), as the files are.

No model selection on held-out data: by default nothing is held out for validation
(``--val-fraction 0``: with several training files the engine holds out whole files, and one file of
4 to 8 is too much to give up), so each fold keeps its last weights. Seeds are fixed; the results, with the
settings and the engine's training configuration of every fold, go to ``bench/out/bench_train.json``
(``--json``; written after each fold; ``bench/out/bench_train_baselines.json`` with
``--baselines-only``) and the models to ``bench/out/bench_train/<dataset>/seed<N>/<fold>/``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
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

try:
    import sklearn
    from sklearn.ensemble import RandomForestClassifier
except ImportError:  # a benchmark-only dependency
    raise SystemExit("bench_train: scikit-learn is missing: .venv/bin/python -m pip install -r requirements-bench.txt")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# noqa: E402
from cwsam_core.common.card import ClassInfo
from cwsam_core.common.classes import parse_classes  # noqa: E402
from cwsam_core.common.labels import IGNORE_INDEX  # noqa: E402
from cwsam_core.model.model_file import read_model_card
from cwsam_core.raster.radiometry import match_bands, to_model_channels  # noqa: E402
from cwsam_core.training.config import TrainConfig  # noqa: E402
from cwsam_core.training.datasets import RasterLabels  # noqa: E402
from cwsam_core.training.datasets import TrainingSource  # noqa: E402
from cwsam_core.training.evaluation import evaluate  # noqa: E402
from cwsam_core.training.loop import train  # noqa: E402
from cwsam_core.training.metrics import confusion_matrix, metrics_from_confusion  # noqa: E402

OUT = ROOT / "bench" / "out"
RESULTS = OUT / "bench_train.json"
BASELINE_RESULTS = OUT / "bench_train_baselines.json"
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


def box_means(x: np.ndarray, size: int) -> np.ndarray:
    """K x H x W -> K x H x W float64 means over ``size`` x ``size`` windows (reflected at the edges),
    from an integral image; NaN and infinite values are left out of the means."""
    finite = np.isfinite(x)
    half = size // 2
    pad = ((0, 0), (half, half), (half, half))

    def window_sums(values: np.ndarray) -> np.ndarray:
        integral = np.pad(np.pad(values, pad, mode="reflect").cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
        return (integral[:, size:, size:] - integral[:, :-size, size:] - integral[:, size:, :-size]
                + integral[:, :-size, :-size])

    with np.errstate(divide="ignore", invalid="ignore"):
        return window_sums(np.where(finite, x, 0.0).astype(np.float64)) / window_sums(finite.astype(np.float64))


def context_features(channels: np.ndarray, sizes: Sequence[int] = (5,)) -> np.ndarray:
    """K x H x W image -> H x W x K(1 + len(sizes)) float64 features: the channels, then their local
    means over each of ``sizes`` (square windows, :func:`box_means`)."""
    x = channels.astype(np.float64)
    return np.concatenate([x] + [box_means(x, size) for size in sizes]).transpose(1, 2, 0)


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


def gaussian_pixels(samples: Sequence[Sample], task: Task) -> Tuple[np.ndarray, np.ndarray]:
    """(n x d features, n class indexes) of the samples' labelled pixels, as the Gaussian classifier takes
    them: the channels and their 5 x 5 means."""
    features, labels = [], []
    for sample in samples:
        raw, target, _ = read_labels(sample, task)
        keep = target != IGNORE_INDEX
        features.append(context_features(raw, (5,))[keep])
        labels.append(target[keep])
    return np.concatenate(features), np.concatenate(labels)


def gaussian_ml_baseline(fold: Fold, task: Task) -> np.ndarray:
    """Gaussian ML classifier fitted on the training tiles' labelled pixels, scored on the test tiles'."""
    num = len(task.classes)
    classifier = GaussianML().fit(*gaussian_pixels(fold.train, task), num)
    features, labels = gaussian_pixels(fold.test, task)
    return confusion_matrix(labels, classifier.predict(features), num)


# Random forest on local context: per pixel the model's 3 channels and their 5 x 5 and 11 x 11 means.
RF_WINDOWS = (5, 11)
RF_MAX_TRAIN = 200_000  # training pixels drawn at random from the training files' labelled pixels
# 100 trees of depth <= 16 with at least 5 pixels a leaf: neighbouring pixels are strongly correlated,
# so fully grown trees would memorise the speckle of the training scenes; the caps smooth the votes.
# Each tree grows on a bootstrap draw of 50,000 of the (at most) 200,000 pixels: correlated pixels carry
# little more information in larger draws (the held-out scores of a Sen1Floods11 fold agreed to 0.002
# with full-size draws) and it makes the fit 3 times faster (20 to 50 s a fold on one core).
# Features per split: sklearn's default sqrt(9) = 3.
RF_PARAMS = {"n_estimators": 100, "max_depth": 16, "min_samples_leaf": 5, "max_features": "sqrt",
             "max_samples": 50_000, "n_jobs": 1}
# Class weights 'balanced_subsample' (each tree weighs the classes of its draw inversely to their
# frequency: equal priors, as the Gaussian ML classifier has): the held-out events and tiles have class
# shares unlike the training ones (water: 0 % to 98 % of an event), so the training priors tell nothing
# about the test, and IoU weighs every class alike. Measured with seed 0 (pooled; chosen for the stronger
# baseline): PolSF mIoU 0.400 balanced, 0.398 with the engine's inverse square-root weights, 0.389
# unweighted; Sen1Floods11 water IoU 0.442 balanced, 0.386 inverse square root.
RF_CLASS_WEIGHT = "balanced_subsample"


def model_channels(raw: np.ndarray, descriptions: Sequence[Optional[str]], task: Task) -> np.ndarray:
    """The 3 channels the model sees, before normalisation: Sen1Floods11 VV, VH, VV - VH (dB); PolSF the
    3 Pauli channels as they are (``cwsam_core.raster.radiometry.to_model_channels`` of the task's bands)."""
    indexes = match_bands(descriptions, task.bands)
    return to_model_channels(raw[[i - 1 for i in indexes]], task.scale)


_RF_PIXELS: Dict[Tuple[str, str], Tuple[np.ndarray, np.ndarray]] = {}


def rf_pixels(sample: Sample, task: Task) -> Tuple[np.ndarray, np.ndarray]:
    """(n x 9 float32 features, n class indexes) of a sample's labelled pixels; kept for the next seeds."""
    key = (task.name, sample.name)
    if key not in _RF_PIXELS:
        raw, target, descriptions = read_labels(sample, task)
        keep = target != IGNORE_INDEX
        features = context_features(model_channels(raw, descriptions, task), RF_WINDOWS)[keep]
        _RF_PIXELS[key] = (features.astype(np.float32), target[keep])
    return _RF_PIXELS[key]


def random_forest_baseline(fold: Fold, task: Task, seed: int) -> np.ndarray:
    """Random forest (``RF_PARAMS``, ``random_state = seed``) fitted on at most ``RF_MAX_TRAIN`` labelled
    pixels drawn at random from the fold's training files, scored on every labelled pixel of its test files."""
    num = len(task.classes)
    train_pixels = [rf_pixels(s, task) for s in fold.train]
    features = np.concatenate([f for f, _ in train_pixels])
    labels = np.concatenate([y for _, y in train_pixels])
    if len(labels) > RF_MAX_TRAIN:
        pick = np.sort(np.random.default_rng(seed).choice(len(labels), RF_MAX_TRAIN, replace=False))
        features, labels = features[pick], labels[pick]
    params = {**RF_PARAMS, "max_samples": min(RF_PARAMS["max_samples"], len(labels))}
    forest = RandomForestClassifier(**params, class_weight=RF_CLASS_WEIGHT, random_state=seed)
    forest.fit(features, labels)
    confusion = np.zeros((num, num), dtype=np.int64)
    for sample in fold.test:
        test_features, test_labels = rf_pixels(sample, task)
        confusion += confusion_matrix(test_labels, forest.predict(test_features).astype(np.int64), num)
    return confusion


# --- running ------------------------------------------------------------------------------------

RF = "RF"


def tasks(data: Path) -> Dict[str, Task]:
    flood, polsf = data / "sen1floods11_s1hand", data / "polsf_sf_airsar"
    return {
        "sen1floods11": Task("sen1floods11", parse_classes(FLOOD_CLASSES), ["VV", "VH"], "db", [-1],
                             flood_folds(flood), "Otsu", otsu_baseline),
        "polsf": Task("polsf", parse_classes(POLSF_CLASSES), ["HH-VV", "HV", "HH+VV"], "amplitude", [0],
                      polsf_folds(polsf), "Gaussian ML", gaussian_ml_baseline),
    }


def rf_settings() -> dict:
    return {**RF_PARAMS, "windows": list(RF_WINDOWS), "max_train_pixels": RF_MAX_TRAIN,
            "class_weight": RF_CLASS_WEIGHT, "random_state": "seed", "scikit-learn": sklearn.__version__}


def settings(args: argparse.Namespace, seed: int) -> dict:
    """Everything that changes a fold's result (a cached fold is reused only when these match).
    None: the engine's default (``time_budget`` None: the ``steps`` schedule)."""
    budget = args.time_budget if args.time_budget > 0 else None
    return {"backbone": BACKBONE, "time_budget_min": budget, "steps": None if budget else args.steps,
            "epochs": None if budget else args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "warmup": args.warmup, "val_fraction": args.val_fraction, "seed": seed, "threads": args.threads,
            "torch": str(torch.__version__), "rf": rf_settings()}


def train_config(task: Task, folder: Path, args: argparse.Namespace, seed: int) -> TrainConfig:
    """The engine's training configuration: its defaults, except the task's explicit band names and
    scales, no validation part (``--val-fraction``), CPU, the seed, and the options given."""
    options = dict(backbone=BACKBONE, classes=task.classes, output=folder / "model.cwsam.pt", bands=task.bands,
                   input_scale=task.scale, model_scale=task.scale, ignore_values=task.ignore_values,
                   val_fraction=args.val_fraction, device="cpu", seed=seed,
                   time_budget=args.time_budget if args.time_budget > 0 else None)
    if args.time_budget <= 0:
        options.update(epochs=args.epochs, steps_per_epoch=args.steps // args.epochs)
    for name, value in (("batch_size", args.batch_size), ("lr", args.lr), ("warmup_steps", args.warmup)):
        if value is not None:
            options[name] = value
    return TrainConfig(**options)


def config_record(config: TrainConfig) -> dict:
    """The training fields of a TrainConfig, as JSON values (the classes and paths are recorded elsewhere)."""
    record = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if item.name in ("classes", "output", "sam_checkpoint"):
            continue
        record[item.name] = value if isinstance(value, (type(None), bool, int, float, str, list)) else str(value)
    return record


def scores(confusion: np.ndarray) -> dict:
    m = metrics_from_confusion(confusion)
    nan_free = lambda v: None if v != v else float(v)  # noqa: E731 (NaN is not JSON)
    return {"confusion": confusion.tolist(), "iou": [nan_free(v) for v in m.iou], "miou": nan_free(m.miou),
            "overall_accuracy": nan_free(m.overall_accuracy), "pixels": m.pixels}


class Baselines:
    """The baselines of each fold: the task's deterministic one computed once per fold, the random
    forest once per fold and seed."""

    def __init__(self) -> None:
        self._fixed: Dict[Tuple[str, str], np.ndarray] = {}

    def __call__(self, task: Task, fold: Fold, seed: int) -> Tuple[Dict[str, np.ndarray], float]:
        """({method: confusion matrix over the fold's test pixels}, seconds the random forest took)."""
        key = (task.name, fold.name)
        if key not in self._fixed:
            self._fixed[key] = task.baseline(fold, task)
        started = time.perf_counter()
        forest = random_forest_baseline(fold, task, seed)
        return {task.baseline_name: self._fixed[key], RF: forest}, time.perf_counter() - started


def run_fold(task: Task, fold: Fold, seed: int, args: argparse.Namespace, baselines: Baselines) -> dict:
    """Train on the fold's training files, evaluate on its test files, and score the baselines there
    (only the baselines with ``--baselines-only``)."""
    row = {"fold": fold.name, "seed": seed, "train": [s.name for s in fold.train],
           "test": [s.name for s in fold.test], "settings": settings(args, seed)}
    if not args.baselines_only:
        folder = args.json.with_suffix("") / task.name / f"seed{seed}" / fold.name
        folder.mkdir(parents=True, exist_ok=True)
        config = train_config(task, folder, args, seed)
        started = time.perf_counter()

        def progress(info: dict) -> None:
            if "train_loss" in info:
                of = f"/{info['epochs']}" if info.get("epochs") and not config.time_budget else ""
                print(f"    epoch {info['epoch']}{of}: loss {info['train_loss']:.4f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)

        result = train([TrainingSource(s.image, s.labels) for s in fold.train], config, progress=progress)
        row["train_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        metrics, _ = evaluate(result.model_path, [(s.image, s.labels) for s in fold.test],
                              ignore_values=task.ignore_values, device="cpu")
        row["eval_seconds"] = time.perf_counter() - started
        # What the engine made of the configuration (its defaults resolved, steps and minutes run).
        provenance = read_model_card(result.model_path).provenance or {}
        row.update(config=config_record(config), trained={k: v for k, v in provenance.items() if k != "data"},
                   epochs_run=len(result.history),
                   final_loss=result.history[-1].train_loss if result.history else None,
                   loss_per_epoch=[r.train_loss for r in result.history], ours=scores(metrics.confusion))
    confusions, rf_seconds = baselines(task, fold, seed)
    row["rf_seconds"] = rf_seconds
    row["baselines"] = {name: scores(c) for name, c in confusions.items()}
    # All methods must score the same pixels: the same reference pixels per class, or the engine's
    # evaluation masks differently from the labels as read here.
    reference = {name: c.sum(axis=1).tolist() for name, c in confusions.items()}
    if "ours" in row:
        reference["ours"] = metrics.confusion.sum(axis=1).tolist()
    row["same_pixels"] = len({tuple(v) for v in reference.values()}) == 1
    if not row["same_pixels"]:
        print(f"    WARNING: reference pixels per class differ: {reference}")
    return row


def pooled_row(rows: List[dict]) -> dict:
    """The folds' confusion matrices summed, per method."""
    pooled = {"fold": "pooled", "test": [t for r in rows for t in r["test"]],
              "train_seconds": sum(r.get("train_seconds", 0.0) for r in rows),
              "rf_seconds": sum(r["rf_seconds"] for r in rows),
              "baselines": {name: scores(sum(np.asarray(r["baselines"][name]["confusion"]) for r in rows))
                            for name in rows[0]["baselines"]}}
    if all("ours" in r for r in rows):
        pooled["ours"] = scores(sum(np.asarray(r["ours"]["confusion"]) for r in rows))
    return pooled


def methods_of(row: dict, task: Task) -> List[Tuple[str, dict]]:
    """(method, scores) of a result row: ours (when trained), the task's baseline, the random forest."""
    found = [("ours", row["ours"])] if "ours" in row else []
    return found + [(name, row["baselines"][name]) for name in (task.baseline_name, RF)]


def fmt(value: Optional[float]) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def water_pixels(s: dict) -> int:
    return int(sum(s["confusion"][1]))


def print_flood(rows: List[dict], pooled: dict, task: Task, seed: int) -> None:
    print(f"\nSen1Floods11, leave-one-event-out, seed {seed}: water IoU and mIoU (2 classes), labelled pixels only")
    methods = [m for m, _ in methods_of(pooled, task)]
    trained = "ours" in pooled
    print(f"{'held-out event':<16}{'chips':>6}{'pixels':>10}{'water px':>10}"
          + "".join(f" | {m + ': water IoU':>17}{'mIoU':>7}" for m in methods)
          + f" |{' train s' if trained else ''}   RF s")
    for r in rows + [pooled]:
        found = methods_of(r, task)
        first = found[0][1]
        seconds = (f"{r['train_seconds']:8.0f}" if trained else "") + f"{r['rf_seconds']:7.0f}"
        print(f"{r['fold']:<16}{len(r['test']):>6}{first['pixels']:>10,}{water_pixels(first):>10,}"
              + "".join(f" | {fmt(s['iou'][1]):>17}{fmt(s['miou']):>7}" for _, s in found) + f" |{seconds}")


def print_polsf(rows: List[dict], pooled: dict, task: Task, seed: int) -> None:
    print(f"\nPolSF SF-AIRSAR, 3 folds of whole tiles, seed {seed}: per-class IoU, mIoU, OA (labelled pixels only)")
    names = [c.name[:10] for c in task.classes]
    print(f"{'fold':<9}{'method':<12}" + "".join(f"{n:>11}" for n in names) + f"{'mIoU':>8}{'OA':>8}{'pixels':>10}")
    for r in rows + [pooled]:
        for label, s in methods_of(r, task):
            print(f"{r['fold']:<9}{label:<12}" + "".join(f"{fmt(v):>11}" for v in s["iou"])
                  + f"{fmt(s['miou']):>8}{fmt(s['overall_accuracy']):>8}{s['pixels']:>10,}")


Stat = Optional[float]


def spread(values: Sequence[Stat]) -> Tuple[Stat, Stat, Stat, Stat]:
    """(mean, min, max, sample standard deviation) of the values that are not None."""
    known = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(known):
        return None, None, None, None
    std = float(known.std(ddof=1)) if len(known) > 1 else 0.0
    return float(known.mean()), float(known.min()), float(known.max()), std


def print_over_seeds(title: str, columns: List[str], table: Dict[str, Dict[int, List[Optional[float]]]],
                     deterministic: Sequence[str]) -> None:
    """One block per method: a row per seed, then the mean, min..max and std over the seeds; a
    deterministic method gets one row (its result is the same for every seed)."""
    width = max(14, *(len(c) + 2 for c in columns))
    print(f"\n{title}")
    print(f"{'method':<13}{'':<10}" + "".join(f"{c:>{width}}" for c in columns))
    for method, per_seed in table.items():
        seeds = sorted(per_seed)
        if method in deterministic:
            print(f"{method:<13}{'any seed':<10}" + "".join(f"{fmt(v):>{width}}" for v in per_seed[seeds[0]]))
            continue
        for seed in seeds:
            print(f"{method:<13}{'seed ' + str(seed):<10}" + "".join(f"{fmt(v):>{width}}" for v in per_seed[seed]))
        stats = [spread([per_seed[s][k] for s in seeds]) for k in range(len(columns))]
        print(f"{'':<13}{'mean':<10}" + "".join(f"{fmt(m):>{width}}" for m, _, _, _ in stats))
        print(f"{'':<13}{'min..max':<10}" + "".join(
            f"{'-' if lo is None else f'{lo:.3f}..{hi:.3f}':>{width}}" for _, lo, hi, _ in stats))
        print(f"{'':<13}{'std':<10}" + "".join(f"{fmt(s):>{width}}" for _, _, _, s in stats))


def summarise(name: str, task: Task, runs: Dict[int, dict]) -> None:
    """The pooled numbers of every seed, with their mean and spread over the seeds."""
    seeds = sorted(runs)
    methods = [m for m, _ in methods_of(runs[seeds[0]]["pooled"], task)]
    table: Dict[str, Dict[int, List[Optional[float]]]] = {m: {} for m in methods}
    if name == "sen1floods11":
        events = [r["fold"] for r in runs[seeds[0]]["folds"]]
        columns = ["pooled wIoU", "pooled mIoU"] + [f"{e} wIoU" for e in events]
        for seed in seeds:
            pooled = dict(methods_of(runs[seed]["pooled"], task))
            folds = [dict(methods_of(r, task)) for r in runs[seed]["folds"]]
            for m in methods:
                table[m][seed] = [pooled[m]["iou"][1], pooled[m]["miou"]] + [f[m]["iou"][1] for f in folds]
        title = (f"Sen1Floods11 over seeds {', '.join(map(str, seeds))}: pooled water IoU and mIoU, water IoU "
                 "per held-out event ('-': no water in the reference nor in the prediction)")
    else:
        columns = [c.name for c in task.classes] + ["mIoU", "OA"]
        for seed in seeds:
            pooled = dict(methods_of(runs[seed]["pooled"], task))
            for m in methods:
                table[m][seed] = list(pooled[m]["iou"]) + [pooled[m]["miou"], pooled[m]["overall_accuracy"]]
        title = f"PolSF SF-AIRSAR over seeds {', '.join(map(str, seeds))}: pooled per-class IoU, mIoU, OA"
    print_over_seeds(title, columns, table, deterministic=[task.baseline_name])


def checks(results: dict, all_tasks: Dict[str, Task]) -> List[dict]:
    """The benchmark's acceptance checks, each met or not with its numbers (only those the run allows)."""
    found: List[dict] = []
    datasets = results["datasets"]

    def trained(name: str) -> bool:
        runs = datasets.get(name, {}).get("runs", {})
        return bool(runs) and all("ours" in run["pooled"] for run in runs.values())

    def margin_text(value: float) -> str:
        return f"{value:+.3f}"

    if trained("polsf"):
        runs, task = datasets["polsf"]["runs"], all_tasks["polsf"]
        ours = {s: run["pooled"]["ours"]["miou"] for s, run in runs.items()}
        forest = {s: run["pooled"]["baselines"][RF]["miou"] for s, run in runs.items()}
        fixed = next(iter(runs.values()))["pooled"]["baselines"][task.baseline_name]["miou"]  # same every seed
        worst = min(ours, key=lambda s: ours[s])
        best_forest = max(forest, key=lambda s: forest[s])
        bar = max(forest[best_forest], fixed) + 0.05
        found.append({"check": "a", "met": ours[worst] >= bar, "text": (
            f"(a) PolSF pooled mIoU, ours (worst seed, {worst}) {ours[worst]:.3f} >= max(RF (best seed, "
            f"{best_forest}) {forest[best_forest]:.3f}, {task.baseline_name} {fixed:.3f}) + 0.05 = {bar:.3f}; "
            "per seed, ours - max(RF of that seed, Gaussian ML): "
            + ", ".join(f"seed {s} {margin_text(ours[s] - max(forest[s], fixed))}" for s in sorted(runs)))})
    if trained("sen1floods11"):
        runs = datasets["sen1floods11"]["runs"]
        water = {s: run["pooled"]["ours"]["iou"][1] for s, run in runs.items()}
        worst = min(water, key=lambda s: -1.0 if water[s] is None else water[s])
        met = water[worst] is not None and water[worst] >= 0.80
        found.append({"check": "b", "met": met, "text": (
            f"(b) Sen1Floods11 pooled water IoU, ours (worst seed, {worst}) {fmt(water[worst]).strip()} >= 0.80; "
            "per seed: " + ", ".join(f"seed {s} {fmt(water[s]).strip()}" for s in sorted(runs)))})
        task = all_tasks["sen1floods11"]
        failures, compared, closest = [], 0, None
        for seed, run in sorted(runs.items()):
            for row in run["folds"]:
                if water_pixels(row["ours"]) == 0:
                    continue
                ours = row["ours"]["iou"][1]
                for method in (task.baseline_name, RF):
                    other = row["baselines"][method]["iou"][1]
                    compared += 1
                    margin = ours - other
                    if closest is None or margin < closest[0]:
                        closest = (margin, seed, row["fold"], method, ours, other)
                    if not margin > 0:
                        failures.append(f"seed {seed} {row['fold']}: ours {ours:.3f} vs {method} {other:.3f}")
        text = (f"(c) Sen1Floods11, every held-out event with water pixels, every seed: ours water IoU > Otsu's "
                f"and > RF's ({compared} comparisons)")
        if closest is not None:
            text += (f"; smallest margin {margin_text(closest[0])} (seed {closest[1]}, {closest[2]}: ours "
                     f"{closest[4]:.3f} vs {closest[3]} {closest[5]:.3f})")
        if failures:
            text += "; not above in: " + "; ".join(failures)
        found.append({"check": "c", "met": not failures and compared > 0, "text": text})
    return found


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": str(torch.__version__), "python": platform.python_version(), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}


def write(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["sen1floods11", "polsf", "all"], default="all")
    parser.add_argument("--folds", help="comma-separated fold names to run (events, polsf-1..3); default all")
    parser.add_argument("--seeds", default="0,1,2",
                        help="comma-separated seeds; every fold runs once per seed (training seed and the "
                             "random forest's random_state; default 0,1,2)")
    parser.add_argument("--time-budget", type=float, default=4.0, metavar="MINUTES",
                        help="training time per fold in minutes (default 4; the learning-rate schedule follows "
                             "the elapsed time); 0: train --steps optimizer steps instead")
    parser.add_argument("--steps", type=int, default=96,
                        help="optimizer steps per fold with --time-budget 0 (default 96)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs the --steps are split into, with --time-budget 0 (default 4)")
    parser.add_argument("--batch-size", type=int, help="windows per step (default: the engine's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the engine's for training from scratch)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (default: the engine's)")
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="validation share inside the training files (default 0: keep the last weights)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine more threads stall each other)")
    parser.add_argument("--baselines-only", action="store_true",
                        help="train nothing: score only the baselines (Otsu or Gaussian ML, and the random forest)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder holding sen1floods11_s1hand/ and polsf_sf_airsar/ (default ../shared/data)")
    parser.add_argument("--json", type=Path,
                        help=f"results file (default {RESULTS.relative_to(ROOT)}, with --baselines-only "
                             f"{BASELINE_RESULTS.relative_to(ROOT)}; the models go to its name without .json)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse folds already in the results file that ran with the same settings")
    args = parser.parse_args()
    try:
        seeds = list(dict.fromkeys(int(s) for s in args.seeds.split(",") if s.strip()))
    except ValueError:
        parser.error(f"--seeds: comma-separated integers expected, got {args.seeds!r}")
    if not seeds:
        parser.error("--seeds: give at least one seed")
    if args.time_budget < 0:
        parser.error(f"--time-budget must be 0 (use --steps) or positive, got {args.time_budget}")
    if args.time_budget == 0 and (args.steps < 1 or args.epochs < 1 or args.steps % args.epochs):
        parser.error(f"--steps ({args.steps}) must be a positive multiple of --epochs ({args.epochs})")
    if args.json is None:
        args.json = BASELINE_RESULTS if args.baselines_only else RESULTS

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the PolSF PNGs have no georeferencing
    logging.basicConfig(level=logging.WARNING, format="    cwsam: %(message)s")
    torch.set_num_threads(args.threads)
    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    info = machine()
    print(f"command: {command}")
    print(f"machine: {info['cpu']}, {info['cpu_count']} CPUs, torch {info['torch']} with {info['torch_threads']} "
          f"threads, Python {info['python']}, scikit-learn {info['scikit-learn']}")
    engine = lambda v: "engine default" if v is None else v  # noqa: E731
    if args.baselines_only:
        print("settings: baselines only, no training", end="")
    else:
        schedule = (f"{args.time_budget:g} min of training" if args.time_budget > 0
                    else f"{args.steps} steps ({args.epochs} epochs)")
        print(f"settings: {BACKBONE} from scratch, {schedule} per fold, batch {engine(args.batch_size)}, "
              f"lr {engine(args.lr)}, warm-up {engine(args.warmup)}, val fraction {args.val_fraction}", end="")
    print(f"; seeds {', '.join(map(str, seeds))}; random forest {RF_PARAMS['n_estimators']} trees, depth <= "
          f"{RF_PARAMS['max_depth']}, leaves >= {RF_PARAMS['min_samples_leaf']} px, "
          f"{RF_PARAMS['max_samples']:,} px a tree of at most {RF_MAX_TRAIN:,} training pixels, class weights "
          f"{RF_CLASS_WEIGHT}", flush=True)

    if not args.data.is_dir():
        raise SystemExit(f"bench_train: data folder not found: {args.data}; give --data")
    all_tasks = tasks(args.data)
    chosen = list(all_tasks) if args.dataset == "all" else [args.dataset]
    wanted = set(args.folds.split(",")) if args.folds else None
    known = {f.name for t in chosen for f in all_tasks[t].folds}
    if wanted and wanted - known:
        parser.error(f"unknown fold(s) {', '.join(sorted(wanted - known))}; choose from {', '.join(sorted(known))}")

    cached = json.loads(args.json.read_text()) if args.reuse and args.json.is_file() else {}
    results = {"command": command, "machine": info, "seeds": seeds, "baselines_only": args.baselines_only,
               "settings": {k: v for k, v in settings(args, seeds[0]).items() if k != "seed"}, "datasets": {}}
    baselines = Baselines()
    started = time.perf_counter()
    for seed in seeds:
        for name in chosen:
            task = all_tasks[name]
            entry = results["datasets"].setdefault(name, {
                "methods": ([] if args.baselines_only else ["ours"]) + [task.baseline_name, RF],
                "classes": [c.name for c in task.classes], "runs": {}})
            previous = {(r["seed"], r["fold"]): r
                        for run in cached.get("datasets", {}).get(name, {}).get("runs", {}).values()
                        for r in run["folds"]}
            rows: List[dict] = []
            for fold in task.folds:
                if wanted and fold.name not in wanted:
                    continue
                old = previous.get((seed, fold.name))
                if old and old["settings"] == settings(args, seed) and ("ours" in old or args.baselines_only):
                    print(f"[{name}] seed {seed}, {fold.name}: reused from {args.json.name}", flush=True)
                    rows.append(old)
                else:
                    print(f"[{name}] seed {seed}, {fold.name}: train on {', '.join(s.name for s in fold.train)}; "
                          f"test on {', '.join(s.name for s in fold.test)}", flush=True)
                    rows.append(run_fold(task, fold, seed, args, baselines))
                    r = rows[-1]
                    line = ", ".join(f"{m} mIoU {fmt(s['miou']).strip()}" for m, s in methods_of(r, task))
                    times = (f"train {r['train_seconds']:.0f} s, evaluate {r['eval_seconds']:.0f} s, "
                             if "ours" in r else "")
                    pixels = methods_of(r, task)[0][1]["pixels"]
                    print(f"    {line} on {pixels:,} px ({times}RF {r['rf_seconds']:.0f} s)", flush=True)
                entry["runs"][str(seed)] = {"folds": rows}
                write(results, args.json)
            if not rows:
                if not entry["runs"]:  # no fold of this dataset chosen (--folds)
                    del results["datasets"][name]
                continue
            pooled = pooled_row(rows)
            entry["runs"][str(seed)] = {"folds": rows, "pooled": pooled}
            write(results, args.json)
            if name == "sen1floods11":
                print_flood(rows, pooled, task, seed)
            else:
                print_polsf(rows, pooled, task, seed)

    for name in chosen:
        runs = {int(s): run for s, run in results["datasets"].get(name, {}).get("runs", {}).items() if "pooled" in run}
        if runs:
            summarise(name, all_tasks[name], runs)
    results["checks"] = checks(results, all_tasks)
    print("\nChecks")
    if not results["checks"]:
        print("  none evaluated: they compare the trained model with the baselines"
              + (" (--baselines-only)" if args.baselines_only else ""))
    for check in results["checks"]:
        print(f"  {'MET    ' if check['met'] else 'NOT MET'} {check['text']}")
    if args.folds:
        print("  (on the chosen folds only: --folds)")
    results["wall_seconds"] = time.perf_counter() - started
    write(results, args.json)
    print(f"\nwall time {results['wall_seconds'] / 60:.1f} min; results in {os.path.relpath(args.json, Path.cwd())}")


if __name__ == "__main__":
    main()
