"""ONNX Runtime against PyTorch eager on this CPU: throughput, class-map agreement and file sizes.

Run: ``nice .venv/bin/python bench/bench_onnx.py`` (``make bench``). For each configuration the same tiles
(read from a raster by the engine's ``SarReader``, normalised as the model card says) go through:

- PyTorch eager (the engine's model: fused attention, FFT low-pass), ``torch.inference_mode``;
- ONNX Runtime, CPU provider, the float32 export (``cwsam export``);
- ONNX Runtime, the int8 export (``cwsam export --int8``: dynamic int8 quantisation of the linear layers);

in batches of the engine's CPU batch size, with the same number of threads, each engine at its defaults. They take
turns twice, each turn an untimed pass and timed ones; the median timed pass counts, so the shared machine's
changing load hits all three alike. Printed
and written to ``bench/out/bench_onnx.json``: tiles per second, the speed-up over PyTorch (targets: float32
>= 1.3x, int8 >= 2x), the share of pixels whose class (argmax of the logits) equals PyTorch's (target for int8:
>= 99 %), the largest logit difference, and the sizes of the model file and the exports.

Configurations: vit_tiny at S = 256 is the bundled demo model (trained) on the demo scene; vit_b at S = 512 is
fine-tuned from a randomly initialised SAM checkpoint in the official layout (adapters and decoder given random
weights) on a simulated 1024 x 1024 scene: its speed is vit_b's, its class margins are not a trained model's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import rasterio
import torch
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_classify import scene as simulated_scene  # noqa: E402 (cached under bench/out/)

# noqa: E402
from cwsam_core.common.card import ClassInfo, ModelCard
from cwsam_core.engine.onnx_export import export_onnx  # noqa: E402
from cwsam_core.engine.runners import CPU_BATCH_SIZE  # noqa: E402
from cwsam_core.model.build import build_bare_sam, build_cwsam  # noqa: E402
from cwsam_core.model.model_file import load_model_file, save_model_file
from cwsam_core.raster.radiometry import SarReader  # noqa: E402
from cwsam_core.simulate import SIMULATED_CLASSES  # noqa: E402

OUT = REPO / "bench" / "out"
WORK = OUT / "onnx"
DEMO_MODEL = REPO / "resources" / "demo" / "model.cwsam.pt"
DEMO_SCENE = REPO / "resources" / "demo" / "scene.tif"
TARGETS = {"float32_speedup": 1.3, "int8_speedup": 2.0, "int8_agreement": 0.99}


def vit_b_model(size: int) -> tuple:
    """(model file, SAM checkpoint) of vit_b fine-tuned from a random official-layout SAM checkpoint."""
    WORK.mkdir(parents=True, exist_ok=True)
    sam = WORK / "sam_vit_b_random.pth"
    if not sam.exists():
        torch.manual_seed(0)
        torch.save(build_bare_sam("vit_b").state_dict(), sam)
    path = WORK / f"vit_b_{size}.cwsam.pt"
    if not path.exists():
        torch.manual_seed(1)
        classes = [ClassInfo(c.value, c.name, c.color) for c in SIMULATED_CLASSES]
        model = build_cwsam("vit_b", len(classes), sam_checkpoint=sam, input_size=size)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.add_(torch.randn_like(parameter) * 0.02)
        card = ModelCard(backbone="vit_b", input_size=size, classes=classes, bands=["VV", "VH"], input_scale="db",
                         normalization={"mean": [-11.0, -18.0, 7.0], "std": [5.0, 5.0, 2.0]})
        save_model_file(path, model, card)
    return path, sam


def read_tiles(scene: Path, card: ModelCard, size: int, count: int) -> np.ndarray:
    """``count`` normalised tiles of ``size`` px from ``scene``, on a regular grid, as the engine reads them."""
    with rasterio.open(scene) as dataset:
        reader = SarReader(dataset, card.bands, card.input_scale, normalization=card.normalization,
                           trained_scale=card.training_input_scale)
        step = size // 2
        corners = [(row, col) for row in range(0, dataset.height - size + 1, step)
                   for col in range(0, dataset.width - size + 1, step)]
        if len(corners) < count:
            raise SystemExit(f"{scene.name} holds {len(corners)} tiles of {size} px at half-tile steps, not {count}")
        tiles = [reader.read(Window(col, row, size, size))[0] for row, col in corners[:count]]
    return np.stack(tiles).astype(np.float32)


def interleaved(runs: dict, tiles: np.ndarray, batch: int, repeats: int, rounds: int = 2) -> tuple:
    """Tiles per second of each runner (name -> batch of images -> logits), each at its defaults. The runners
    take turns ``rounds`` times: each turn is one untimed pass over the tiles (it also absorbs the threads the
    previous runner leaves spinning) and ``repeats`` timed ones, so a shared machine's changing load hits all
    alike; the median timed pass counts. Also returns each runner's logits of its last pass."""
    def one_pass(run):
        return np.concatenate([run(tiles[i : i + batch]) for i in range(0, len(tiles), batch)])

    seconds = {name: [] for name in runs}
    logits = {}
    for _ in range(rounds):
        for name, run in runs.items():
            one_pass(run)
            for _ in range(repeats):
                started = time.perf_counter()
                logits[name] = one_pass(run)
                seconds[name].append(time.perf_counter() - started)
    return {name: len(tiles) / float(np.median(s)) for name, s in seconds.items()}, logits


def bench(name: str, model_path: Path, sam: Path | None, scene: Path, tiles_count: int, repeats: int,
          threads: int) -> dict:
    print(f"{name}: exporting...", flush=True)
    exports = {precision: WORK / f"{model_path.name.split('.')[0]}_{precision}.onnx" for precision in ("float32", "int8")}
    seconds = {}
    for precision, path in exports.items():
        started = time.perf_counter()
        export_onnx(model_path, path, sam_checkpoint=sam, int8=precision == "int8")
        seconds[precision] = round(time.perf_counter() - started, 1)
    model, card = load_model_file(model_path, sam)
    size = model.input_size
    tiles = read_tiles(scene, card, size, tiles_count)
    batch = CPU_BATCH_SIZE
    print(f"{name}: {len(tiles)} tiles of {size} px, batches of {batch}, {threads} threads", flush=True)

    def torch_run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(images)).numpy()

    runs = {"pytorch": torch_run}
    for precision, path in exports.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        runs[precision] = lambda images, session=session: session.run(None, {"images": images})[0]
    rates, logits = interleaved(runs, tiles, batch, repeats)
    reference = logits["pytorch"].argmax(axis=1)
    row = {
        "model": name, "tile_size": size, "tiles": len(tiles), "batch_size": batch, "threads": threads,
        "repeats": repeats, "tiles_per_second": {k: round(v, 3) for k, v in rates.items()},
        "speedup": {k: round(rates[k] / rates["pytorch"], 3) for k in exports},
        "agreement": {k: float((logits[k].argmax(axis=1) == reference).mean()) for k in exports},
        "max_abs_logit_difference": {k: float(np.abs(logits[k] - logits["pytorch"]).max()) for k in exports},
        "logit_range": float(np.abs(logits["pytorch"]).max()),
        "classes_in_pytorch_map": int(len(np.unique(reference))),
        "bytes": {"model_file": model_path.stat().st_size, **({"sam_checkpoint": sam.stat().st_size} if sam else {}),
                  **{f"onnx_{k}": p.stat().st_size for k, p in exports.items()}},
        "export_seconds": seconds,
    }
    print(f"{name}: {json.dumps(row)}", flush=True)
    return row


def table(rows: list) -> str:
    mb = lambda n: f"{n / 2**20:.1f}"  # noqa: E731
    lines = [f"{'model':<10} {'S':>4} {'PyTorch':>9} {'ORT fp32':>16} {'ORT int8':>16} {'fp32 agree':>10} "
             f"{'int8 agree':>10} {'sizes MB: model file / fp32 / int8':>36}",
             f"{'':<10} {'':>4} {'tiles/s':>9} {'tiles/s (x)':>16} {'tiles/s (x)':>16}"]
    for r in rows:
        t, s, a, b = r["tiles_per_second"], r["speedup"], r["agreement"], r["bytes"]
        model_size = mb(b["model_file"]) + (f" (+SAM {mb(b['sam_checkpoint'])})" if "sam_checkpoint" in b else "")
        lines.append(f"{r['model']:<10} {r['tile_size']:>4} {t['pytorch']:>9.3f} "
                     f"{t['float32']:>9.3f} ({s['float32']:.2f}x) {t['int8']:>9.3f} ({s['int8']:.2f}x) "
                     f"{a['float32']:>10.4%} {a['int8']:>10.4%} {model_size + ' / ' + mb(b['onnx_float32']) + ' / ' + mb(b['onnx_int8']):>36}")
    lines.append(f"targets: fp32 >= {TARGETS['float32_speedup']}x, int8 >= {TARGETS['int8_speedup']}x, int8 agreement "
                 f">= {TARGETS['int8_agreement']:.0%}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for both engines")
    parser.add_argument("--only", choices=["vit_tiny", "vit_b"], help="one configuration")
    parser.add_argument("--tiles", type=int, help="tiles per configuration (default 8 for vit_tiny, 4 for vit_b)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the tiles per turn (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.only in (None, "vit_tiny"):
        rows.append(bench("vit_tiny", DEMO_MODEL, None, DEMO_SCENE, args.tiles or 8, args.repeats, args.threads))
    if args.only in (None, "vit_b"):
        model, sam = vit_b_model(512)
        rows.append(bench("vit_b", model, sam, simulated_scene(1024), args.tiles or 4, args.repeats, args.threads))
    report = {"cpu": _cpu(), "torch": str(torch.__version__), "onnxruntime": ort.__version__, "targets": TARGETS,
              "rows": rows}
    suffix = f"_{args.only}" if args.only else ""
    (OUT / f"bench_onnx{suffix}.json").write_text(json.dumps(report, indent=2))
    print(table(rows))
    print(f"written to {OUT / f'bench_onnx{suffix}.json'}")
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return f"{os.cpu_count()} logical CPUs"


if __name__ == "__main__":
    sys.exit(main())
