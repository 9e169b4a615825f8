"""The CWSAM demo, offline: classify the bundled simulated SAR scene with the bundled model.

Run as ``make demo`` (or ``.venv/bin/python tools/demo.py``). Uses ``resources/demo/`` (made by
``make demo-model``): ``model.cwsam.pt`` (vit_tiny trained on other simulated scenes), ``scene.tif``
(VV, VH in dB) and ``reference.tif`` (its true classes). Writes to ``out/demo/``:

* ``classes.tif`` with ``classes.qml`` and ``classes.tif.aux.xml`` (colours and class names),
* ``confidence.tif`` (the probability of the chosen class, percent),
* ``classes.run.json`` (the run record: model, input, parameters, software, areas),
* ``quicklook.png`` (SAR image, classes, reference and legend, side by side),
* ``accuracy.json`` (the confusion matrix and metrics against the reference),

and prints the area per class, the accuracy against the reference (computed in this run from the
written class raster) and how to open the results in QGIS.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import rasterio

from cwsam_core.common.card import ModelCard
from cwsam_core.engine.inference import ClassificationResult, classify_file
from cwsam_core.errors import (
    CheckpointError, ClassificationError, ModelFileError, QuicklookError, RadiometryError, TrainingDataError,
)
from cwsam_core.model.model_file import read_model_card
from cwsam_core.raster.quicklook import write_quicklook
from cwsam_core.training.evaluation import class_raster_confusion
from cwsam_core.training.metrics import SegmentationMetrics, metrics_from_confusion

REPO = Path(__file__).resolve().parents[1]
BUNDLE = {"model": "model.cwsam.pt", "scene": "scene.tif", "reference": "reference.tif"}


class DemoError(Exception):
    """The demo cannot run, with what to do about it."""


@dataclass
class DemoResult:
    classification: ClassificationResult
    metrics: SegmentationMetrics
    card: ModelCard
    files: Dict[str, Path]


def bundle_paths(resources: Path) -> Dict[str, Path]:
    """The bundled files; a ``DemoError`` naming the missing ones and how to get them back."""
    paths = {key: resources / name for key, name in BUNDLE.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DemoError(
            f"bundled demo file(s) missing: {', '.join(missing)}. They come with the repository: restore them "
            "with `git checkout -- resources/demo`, or rebuild them with `make demo-model` (about 15 min on a CPU)"
        )
    return paths


def score_against_reference(class_path: Path, image_path: Path, reference_path: Path,
                            card: ModelCard) -> SegmentationMetrics:
    """Metrics of a written class raster against reference labels read onto the image's grid.

    One confusion matrix over every pixel that has a reference label and a class; rows are read in
    strips of 1024 so memory does not follow the raster size.
    """
    return metrics_from_confusion(class_raster_confusion(class_path, image_path, reference_path, card))


def run(resources: Path, output_dir: Path, device: str = "auto", threads: Optional[int] = None,
        say: Callable[[str], None] = print) -> DemoResult:
    """Classify the bundled scene into ``output_dir``, score it, draw the quick-look; returns what it did."""
    bundle = bundle_paths(resources)
    card = read_model_card(bundle["model"])
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "classes": output_dir / "classes.tif",
        "style": output_dir / "classes.qml",
        "confidence": output_dir / "confidence.tif",
        "record": output_dir / "classes.run.json",
        "quicklook": output_dir / "quicklook.png",
        "accuracy": output_dir / "accuracy.json",
    }
    with rasterio.open(bundle["scene"]) as scene:
        size = f"{scene.width} x {scene.height} px, {', '.join(d or '?' for d in scene.descriptions)}"
    say(f"Classifying {_shown(bundle['scene'])} ({size}) with {_shown(bundle['model'])} ({card.backbone}, "
        f"{len(card.classes)} classes)")
    result = classify_file(bundle["scene"], files["classes"], bundle["model"], device=device,
                           confidence_path=files["confidence"], threads=threads)
    say(f"  done on {result.device} in {result.seconds:.1f} s")
    for message in result.warnings:
        say(f"  warning: {message}")

    metrics = score_against_reference(files["classes"], bundle["scene"], bundle["reference"], card)
    files["accuracy"].write_text(json.dumps({
        "classes": [c.__dict__ for c in card.classes],
        "confusion": metrics.confusion.tolist(),  # rows: reference classes, columns: predicted
        "overall_accuracy": metrics.overall_accuracy, "miou": metrics.miou, "kappa": metrics.kappa,
        "fwiou": metrics.fwiou, "pixels": metrics.pixels,
        "per_class": metrics.per_class([c.value for c in card.classes], [c.name for c in card.classes]),
    }, indent=2))
    write_quicklook(bundle["scene"], files["classes"], files["quicklook"], card.classes,
                    reference_path=bundle["reference"],
                    title=f"CWSAM demo: {bundle['scene'].name} classified by {bundle['model'].name} "
                          f"(OA {metrics.overall_accuracy:.1%}, mIoU {metrics.miou:.3f})")
    _report(result, metrics, card, files, bundle["scene"], say)
    return DemoResult(result, metrics, card, files)


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _report(result: ClassificationResult, metrics: SegmentationMetrics, card: ModelCard, files: Dict[str, Path],
            scene: Path, say: Callable[[str], None]) -> None:
    total = sum(result.pixel_counts.values()) or 1
    reference_pixels = metrics.confusion.sum(axis=1)
    reference_total = reference_pixels.sum() or 1
    area = "area (km2)" if result.area_unit == "m2" else f"area ({result.area_unit})"
    to_unit = 1e-6 if result.area_unit == "m2" else 1.0
    say("")
    say("Area per class (model)")
    say(f"  {'class':<12} {'pixels':>9} {'share':>7} {area:>11} {'reference share':>16}")
    for index, c in enumerate(card.classes):
        count = result.pixel_counts.get(c.value, 0)
        say(f"  {c.name:<12} {count:>9,} {count / total:>7.1%} {result.areas.get(c.value, 0.0) * to_unit:>11.3f} "
            f"{reference_pixels[index] / reference_total:>16.1%}")
    say(f"  {'total':<12} {total:>9,} {1:>7.1%} {sum(result.areas.values()) * to_unit:>11.3f}")

    say("")
    say(f"Accuracy against the reference labels ({metrics.pixels:,} pixels), computed now from {files['classes'].name}")
    say(f"  overall accuracy (OA)  {metrics.overall_accuracy:.4f}")
    say(f"  mean IoU (mIoU)        {metrics.miou:.4f}")
    say(f"  Cohen's kappa          {metrics.kappa:.4f}")
    say(f"  {'class':<12} {'IoU':>7} {'precision':>10} {'recall':>7}")
    for index, c in enumerate(card.classes):
        say(f"  {c.name:<12} {_metric(metrics.iou[index]):>7} {_metric(metrics.precision[index]):>10} "
            f"{_metric(metrics.recall[index]):>7}")

    say("")
    say("Files")
    described = {
        "classes": "class raster: uint8 with a colour table",
        "style": "QGIS style: class colours and names",
        "confidence": "confidence of each pixel's class, percent",
        "record": "run record: model, input, parameters, areas",
        "quicklook": "quick-look: SAR image, classes, reference, legend",
        "accuracy": "confusion matrix and metrics against the reference",
    }
    for key, text in described.items():
        say(f"  {files[key].resolve()}  ({text})")
    say("")
    say("Open in QGIS: Layer > Add Layer > Add Raster Layer..., choose")
    say(f"  {files['classes'].resolve()}")
    say("  QGIS applies classes.qml from the same folder (class colours and names in the Layers panel).")
    say(f"  Add the SAR scene {scene.resolve()} and confidence.tif the same way to compare.")


def _metric(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.4f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Classify the bundled simulated SAR scene with the bundled model.")
    parser.add_argument("--output-dir", type=Path, default=REPO / "out" / "demo", help="default out/demo")
    parser.add_argument("--resources", type=Path, default=REPO / "resources" / "demo",
                        help="folder of the bundled model, scene and reference (default resources/demo)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    args = parser.parse_args(argv)
    try:
        run(args.resources, args.output_dir, args.device, args.threads)
    except (DemoError, ClassificationError, ModelFileError, CheckpointError, RadiometryError, TrainingDataError,
            QuicklookError, OSError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
