"""Classification benchmark: pipeline overhead, memory flatness and throughput of ``classify_raster``.

Run: ``.venv/bin/python bench/bench_classify.py`` (``make bench``). Prints, in one run:

- overhead: wall time of ``classify_raster`` on a simulated 2-band raster against the model forward
  alone on the same number of tiles in the same batches (no I/O, no blending); target <= 1.10 on CPU
  with vit_tiny;
- memory: peak RSS of classifying an 8192 x 8192 two-band raster against a 2048 x 2048 one, each in a
  fresh process; target <= 1.15 (flat);
- throughput in megapixels per second for vit_tiny (S = 256) and vit_b (S = 512) on this CPU, and
  vit_b at S = 1024 with bf16 autocast where CUDA is available.

Models have random weights (speed does not depend on them); rasters come from ``cwsam_core.simulate``
and are cached under ``bench/out/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import peak_rss_bytes  # noqa: E402

from cwsam_core.common.card import ClassInfo, ModelCard  # noqa: E402
from cwsam_core.engine.inference import classify_raster, tile_offsets  # noqa: E402
from cwsam_core.engine.torch_runner import _autocast, select_device  # noqa: E402
from cwsam_core.model.build import build_cwsam  # noqa: E402
from cwsam_core.simulate import SIMULATED_CLASSES, simulate_scene, write_scene  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def scene(size: int) -> Path:
    image = OUT / f"scene_{size}.tif"
    if not image.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        write_scene(simulate_scene(size, size, seed=size), image, OUT / f"scene_{size}_labels.tif")
    return image


def model_and_card(backbone: str, size: int):
    torch.manual_seed(0)
    classes = [ClassInfo(c.value, c.name, c.color) for c in SIMULATED_CLASSES]
    model = build_cwsam(backbone, len(classes), input_size=size).eval()
    card = ModelCard(backbone=backbone, input_size=size, classes=classes, bands=["VV", "VH"], input_scale="db",
                     normalization={"mean": [-11.0, -18.0, 7.0], "std": [5.0, 5.0, 2.0]})
    return model, card


def forward_only_seconds(model, size: int, tiles: int, batch_size: int, device: torch.device) -> float:
    """The model alone on ``tiles`` tiles in batches of ``batch_size`` (the pipeline's batching per tile row)."""
    images = torch.randn(batch_size, 3, size, size, device=device)
    with torch.inference_mode(), _autocast(device):
        model(images[:1])  # warm-up
        start = time.perf_counter()
        remaining = tiles
        while remaining > 0:
            n = min(batch_size, remaining)
            torch.softmax(model(images[:n]).float(), dim=1)
            remaining -= n
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start


def overhead_and_throughput(backbone: str, tile: int, raster_size: int, batch_size: int, device: torch.device) -> dict:
    model, card = model_and_card(backbone, tile)
    image = scene(raster_size)
    output = OUT / f"classes_{backbone}_{raster_size}.tif"
    model.to(device)
    classify_raster(image, output, model, card, batch_size=batch_size, device=device)  # warm-up (+ GDAL caches)
    pipeline_runs, forward_runs = [], []
    per_row = len(tile_offsets(raster_size, tile, tile - int(round(tile * 0.25))))  # default overlap 0.25
    tiles = per_row * per_row
    for _ in range(2):  # interleaved
        start = time.perf_counter()
        classify_raster(image, output, model, card, batch_size=batch_size, device=device)
        pipeline_runs.append(time.perf_counter() - start)
        seconds = 0.0
        for _ in range(per_row):  # one tile row at a time, batched as the pipeline does
            seconds += forward_only_seconds(model, tile, per_row, batch_size, device)
        forward_runs.append(seconds)
    pipeline, forward = min(pipeline_runs), min(forward_runs)
    return {"backbone": backbone, "tile": tile, "raster": raster_size, "tiles": tiles, "pipeline_s": pipeline,
            "forward_s": forward, "ratio": pipeline / forward, "megapixels_per_s": raster_size**2 / 1e6 / pipeline}


def peak_rss_child(raster_size: int) -> int:
    model, card = model_and_card("vit_tiny", 256)
    classify_raster(scene(raster_size), OUT / f"memory_{raster_size}.tif", model, card, batch_size=4, device="cpu")
    return peak_rss_bytes()


def peak_rss(raster_size: int) -> int:
    scene(raster_size)  # simulate outside the measured process
    command = [sys.executable, __file__, "--child-memory", str(raster_size)]
    return int(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child-memory", type=int)
    parser.add_argument("--skip-vit-b", action="store_true", help="leave out the slow vit_b throughput row")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child_memory:
        print(peak_rss_child(args.child_memory))
        return
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CUDA: {torch.cuda.is_available()}")
    results = {}
    row = overhead_and_throughput("vit_tiny", 256, 2048, 4, cpu)
    results["tiny"] = row
    print(f"[overhead] vit_tiny S=256, 2048x2048, {row['tiles']} tiles: classify {row['pipeline_s']:.1f} s, model "
          f"forward alone {row['forward_s']:.1f} s, ratio {row['ratio']:.3f} (target <= 1.10); "
          f"throughput {row['megapixels_per_s']:.3f} MP/s", flush=True)
    small, large = peak_rss(2048), peak_rss(8192)
    results["memory"] = {"rss_2048": small, "rss_8192": large, "ratio": large / small}
    print(f"[memory] peak RSS classifying 8192x8192: {large / 2**20:.0f} MiB, 2048x2048: {small / 2**20:.0f} MiB, "
          f"ratio {large / small:.3f} (target <= 1.15)", flush=True)
    if not args.skip_vit_b:
        row = overhead_and_throughput("vit_b", 512, 1024, 1, cpu)
        results["vit_b_cpu"] = row
        print(f"[throughput] vit_b S=512 CPU, 1024x1024: {row['megapixels_per_s']:.4f} MP/s "
              f"(pipeline/forward {row['ratio']:.3f})", flush=True)
    if torch.cuda.is_available():
        row = overhead_and_throughput("vit_b", 1024, 4096, 4, select_device("cuda"))
        results["vit_b_cuda"] = row
        print(f"[throughput] vit_b S=1024 CUDA bf16 autocast, 4096x4096: {row['megapixels_per_s']:.3f} MP/s "
              f"(pipeline/forward {row['ratio']:.3f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
