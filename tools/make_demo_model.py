"""Make the bundled demo: a ``vit_tiny`` model trained on simulated scenes, and a different scene to run it on.

Run as ``make demo-model`` (the same as ``python tools/make_demo_model.py`` with the defaults below).
It writes, in ``resources/demo/``:

* ``model.cwsam.pt``: ``vit_tiny`` trained from scratch (fixed seed, CPU) with ``cwsam_core.training.loop.train``
  on simulated dual-pol scenes (``cwsam_core.simulate``, seeds ``--train-seeds``), stored in float16. Its
  model card's provenance records the command, the seeds, the training budget, the validation metrics
  (on the training scenes held out for validation: ``--val-fraction`` of them, whole) and the metrics on
  the demo scene;
* ``scene.tif``: the demo scene, simulated with another seed (``--scene-seed``): VV, VH in dB, float32,
  DEFLATE, UTM zone 33N (EPSG:32633), 10 m pixels. Seed 15 was chosen among seeds 1 to 30 of 512 x 512
  scenes as the one with the most water and town (7.4 % and 2.9 % of the pixels): every class shows;
* ``reference.tif``: its labels (uint8, the simulator's class values, colour table).

The training scenes and the float32 training outputs (log, resumable state) go to ``--work-dir``
(default ``out/demo-model/``, not committed). The scenes are bit-identical for the same seeds; the
training is seeded (weights, window draws), so the same arguments, torch build, thread count and CPU
give the same model, and another CPU one that differs by floating-point rounding.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from cwsam_core.common.card import ClassInfo
from cwsam_core.model.model_file import load_model_file, read_model_card, save_model_file
from cwsam_core.simulate import SIMULATED_CLASSES, simulate_scene, write_scene
from cwsam_core.training.config import TrainConfig
from cwsam_core.training.datasets import TrainingSource
from cwsam_core.training.evaluation import evaluate
from cwsam_core.training.loop import train
from cwsam_core.training.metrics import SegmentationMetrics

REPO = Path(__file__).resolve().parents[1]
DEMO_CLASSES = [ClassInfo(c.value, c.name, c.color) for c in SIMULATED_CLASSES]
# Sentinel-1 IW GRD high resolution: about 4.4 equivalent looks.
LOOKS = 4.4


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[101, 102, 103, 104],
                        help="simulator seeds of the training scenes (default 101 102 103 104)")
    parser.add_argument("--train-size", type=int, default=1024,
                        help="training scene side in pixels (default 1024)")
    parser.add_argument("--scene-seed", type=int, default=15, help="simulator seed of the demo scene (default 15)")
    parser.add_argument("--scene-size", type=int, default=512, help="demo scene side in pixels (default 512)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps-per-epoch", type=int, default=75)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--val-fraction", type=float, default=0.25,
                        help="fraction of the training scenes held out, whole, for validation (default 0.25: one of 4)")
    parser.add_argument("--seed", type=int, default=0, help="training seed: initial weights and window draws")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (results depend on it slightly)")
    parser.add_argument("--device", default="cpu", help="cpu (default, reproducible) or auto, cuda, mps")
    parser.add_argument("--work-dir", type=Path, default=REPO / "out" / "demo-model",
                        help="training scenes and float32 training outputs (default out/demo-model)")
    parser.add_argument("--dest", type=Path, default=REPO / "resources" / "demo",
                        help="where the bundled files go (default resources/demo)")
    return parser.parse_args(argv)


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _metrics_dict(metrics: SegmentationMetrics) -> dict:
    return {
        "overall_accuracy": round(metrics.overall_accuracy, 4), "miou": round(metrics.miou, 4),
        "kappa": round(metrics.kappa, 4),
        "iou": {c.name: (None if v != v else round(float(v), 4)) for c, v in zip(DEMO_CLASSES, metrics.iou)},
        "pixels": metrics.pixels,
    }


def write_training_scenes(seeds: Sequence[int], size: int, folder: Path) -> List[TrainingSource]:
    """One simulated scene per seed, side ``size`` px, each 20 km further east so no two share a grid."""
    sources = []
    for index, seed in enumerate(seeds):
        scene = simulate_scene(size, size, seed=seed, looks=LOOKS, origin=(500000.0 + index * 20000.0, 4600000.0))
        image, labels = write_scene(scene, folder / f"train_{seed}.tif", folder / f"train_{seed}_labels.tif")
        sources.append(TrainingSource(image, labels))
    return sources


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    command = "python tools/make_demo_model.py" + ("" if argv is None and len(sys.argv) == 1 else
                                                   " " + shlex.join(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.dest.mkdir(parents=True, exist_ok=True)

    print(f"Simulating {len(args.train_seeds)} training scenes of {args.train_size} x {args.train_size} px "
          f"(seeds {', '.join(map(str, args.train_seeds))}) in {_relative(args.work_dir)}")
    sources = write_training_scenes(args.train_seeds, args.train_size, args.work_dir)

    config = TrainConfig(
        backbone="vit_tiny", classes=DEMO_CLASSES, output=args.work_dir / "model.cwsam.pt", epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup_steps, val_fraction=args.val_fraction, seed=args.seed, device=args.device,
        input_scale="db",
    )
    print(f"Training vit_tiny from scratch: {args.epochs} epochs x {args.steps_per_epoch} steps x batch "
          f"{args.batch_size}, lr {args.lr:g}, seed {args.seed}, {args.threads} threads on {args.device}")
    started = time.perf_counter()

    def progress(event: dict) -> None:
        if "val_miou" in event:
            print(f"  epoch {event['epoch']:>2}/{event['epochs']}  train loss {event['train_loss']:.3f}  "
                  f"val mIoU {event['val_miou']:.3f}  ({time.perf_counter() - started:.0f} s)", flush=True)

    result = train(sources, config, progress=progress)
    seconds = time.perf_counter() - started
    print(f"Best validation mIoU {result.best_miou:.4f} at epoch {result.best_epoch} ({seconds:.0f} s)")

    scene_path, reference_path = args.dest / "scene.tif", args.dest / "reference.tif"
    scene = simulate_scene(args.scene_size, args.scene_size, seed=args.scene_seed, looks=LOOKS)
    write_scene(scene, scene_path, reference_path, scale="db")

    model, card = load_model_file(result.model_path)
    provenance = dict(card.provenance)
    for item in provenance.get("data", []):  # paths relative to the repository, not this machine's
        item["image"], item["labels"] = _relative(item["image"]), _relative(item["labels"])
    provenance.update({
        "made_by": "make demo-model",
        "command": command,
        "training_scenes": {"simulator": "cwsam_core.simulate.simulate_scene", "seeds": list(args.train_seeds),
                            "size_px": args.train_size, "looks": LOOKS, "pixel_size_m": 10.0},
        "budget": {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size,
                   "warmup_steps": args.warmup_steps, "training_seconds": round(seconds),
                   "device": args.device, "threads": args.threads, "machine": platform.machine()},
        "weights": "float16 (trained in float32)",
    })
    card.provenance = provenance
    model_path = save_model_file(args.dest / "model.cwsam.pt", model, card, float16=True)

    # The bundled (float16) model on the demo scene: what `make demo` should print on this machine.
    metrics, _ = evaluate(model_path, [(scene_path, reference_path)], device=args.device)
    card.provenance["demo_scene"] = {"seed": args.scene_seed, "size_px": args.scene_size, "looks": LOOKS,
                                     **_metrics_dict(metrics)}
    save_model_file(model_path, model, card, float16=True)

    provenance = read_model_card(model_path).provenance
    summary = {k: provenance[k] for k in ("command", "seed", "training_scenes", "budget", "epoch", "validation",
                                          "demo_scene", "torch")}
    print("\nModel card provenance (summary):")
    print(json.dumps(summary, indent=2))
    print("\nBundled files:")
    for path in (model_path, scene_path, reference_path):
        print(f"  {_relative(path):<32} {path.stat().st_size / 1e6:6.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
