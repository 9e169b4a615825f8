"""GPU check: CWSAM vit_b at S = 1024 in bf16 on one CUDA GPU, in under five minutes; one JSON, one table.

Measures, with random weights (speed does not depend on them; no checkpoint, no network):

1. encoder throughput: tiles/s of CWSAM's image encoder (adapters and input module included) under bf16
   autocast at batch ``--batch``, with the fused attention (the default) and with segment_anything's own,
   and of segment_anything's bare ImageEncoderViT; achieved TFLOP/s from the FLOP count of
   :func:`encoder_flops`, written out in the JSON (2 FLOPs per multiply-add; matrix products,
   convolutions and attention only; window attention over SAM's padded windows);
2. end-to-end classification: ``classify_raster`` on a synthetic 10,000 x 10,000 two-band (VV, VH, dB)
   GeoTIFF, batch chosen from free GPU memory, bf16 autocast: seconds, megapixels/s, tiles/s;
3. training step: peak GPU memory (``torch.cuda.max_memory_allocated``) and time of one step at batch 4
   (SAM's encoder frozen, AdamW, bf16 autocast), fused and segment_anything's attention;
4. which fused attention kernels PyTorch can use for the encoder's shapes (flash without a mask, the
   memory-efficient kernel with a differentiable additive mask).

``--compile`` also times the encoder after ``torch.compile`` (compilation takes a minute or two).
``--dry-run`` runs the same code on the CPU with vit_nano at S = 64, a 600 x 600 scene and batch 2, and
checks the FLOP formula against ``torch.utils.flop_counter`` (a check of the script, not a measurement).

The GPU machine lacks segment-anything and rasterio: ``bench/gpu_wheels.sh`` downloads their wheels into
``.whl/`` here; there, from the repository root::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
        PYTHONPATH=/tmp/site:. python3 bench/gpu_check.py --json $OUT/gpu_check.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cwsam_core.engine.devices import describe_device  # noqa: E402
from cwsam_core.model.backbones import BACKBONES  # noqa: E402
from cwsam_core.model.build import PATCH_SIZE, build_bare_sam, build_cwsam  # noqa: E402
from cwsam_core.model.modeling import set_attention  # noqa: E402
from cwsam_core.model.trainable import configure_trainable  # noqa: E402

NUM_CLASSES = 5
GIB = 2**30


def encoder_flops(backbone: str, size: int, cwsam: bool = True) -> Dict[str, object]:
    """FLOPs of one S x S tile through the image encoder, by part, and the formula they follow.

    g = S / 16 tokens a side, N = g^2, D width, L depth, w window, P = ceil(g / w)^2 w^2 padded tokens
    of a windowed block, G global blocks. 2 FLOPs per multiply-add; normalisation, softmax, GELU, FFTs
    and additions are left out.
    """
    config = BACKBONES[backbone]
    dim, depth, heads, window = config.embed_dim, config.depth, config.num_heads, config.window_size
    head_dim, grid = dim // heads, size // PATCH_SIZE
    tokens = grid * grid
    globals_ = len(config.global_attn_indexes)
    windowed = depth - globals_
    padded = math.ceil(grid / window) ** 2 * window * window
    parts = {
        "patch_embed": 2 * tokens * 3 * PATCH_SIZE * PATCH_SIZE * dim,
        "qkv_proj_mlp": depth * 2 * tokens * (dim * 3 * dim + dim * dim + 2 * dim * 4 * dim),
        # q k^T and attention x v: per query, over its window's w^2 keys or all N keys
        "attention_windowed": windowed * 2 * 2 * padded * window * window * dim,
        "attention_global": globals_ * 2 * 2 * tokens * tokens * dim,
        # decomposed relative positions: q . R over the h + w key rows and columns, per head
        "relative_positions": (windowed * 2 * padded * 2 * window * dim + globals_ * 2 * tokens * 2 * grid * dim),
        "neck": 2 * tokens * (dim * config.prompt_dim + config.prompt_dim * config.prompt_dim * 9),
    }
    formula = ("patch_embed 2 N (3 16 16) D; qkv/proj/MLP L 2 N (3D^2 + D^2 + 8D^2) on real tokens; window "
               "attention (L-G) 2 2 P w^2 D; global attention G 2 2 N^2 D; relative positions (L-G) 2 P 2w D + "
               "G 2 N 2g D; neck 2 N (D C + 9 C^2), C = " + str(config.prompt_dim))
    if cwsam:
        hidden = max(1, dim // 32)
        bottleneck = int(dim * 0.25)
        parts["adapters"] = depth * 2 * (2 * 2 * tokens * dim * bottleneck)
        parts["input_module"] = (2 * tokens * 3 * PATCH_SIZE * PATCH_SIZE * hidden + 2 * tokens * dim * hidden
                                 + depth * 2 * tokens * (hidden * hidden + hidden * dim))
        formula += (f"; CWSAM adapters L 2 (2 2 N D {bottleneck}); input module 2 N (768 {hidden} + D {hidden}) + "
                    f"L 2 N ({hidden}^2 + {hidden} D)")
    head_note = f"D = {dim}, L = {depth}, {heads} heads of {head_dim}, w = {window}, G = {globals_}, g = {grid}"
    return {"total": sum(parts.values()), "parts": parts, "formula": formula, "sizes": head_note,
            "tokens": tokens, "padded_window_tokens": padded}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def time_calls(call: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Seconds per call: ``warmup`` untimed calls, then the median of ``repeats`` timed ones."""
    for _ in range(warmup):
        call()
    _sync(device)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _sync(device)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def randomise_position_tables(model: torch.nn.Module, std: float = 0.05) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "rel_pos_" in name:
                parameter.normal_(0.0, std)


def encoder_throughput(backbone: str, size: int, batch: int, device: torch.device, warmup: int, repeats: int,
                       compile_encoder: bool) -> dict:
    torch.manual_seed(0)
    model = build_cwsam(backbone, NUM_CLASSES, input_size=size).to(device).eval()
    randomise_position_tables(model)
    encoder = model.image_encoder
    bare = build_bare_sam(backbone, size).image_encoder.to(device).eval()
    images = torch.randn(batch, 3, size, size, device=device)
    flops = encoder_flops(backbone, size)
    bare_flops = encoder_flops(backbone, size, cwsam=False)["total"]
    rows: Dict[str, dict] = {}
    with torch.inference_mode(), _autocast(device):
        outputs = {}
        for kind in ("fused", "reference"):
            set_attention(model, kind)
            outputs[kind] = encoder(images).float()
            seconds = time_calls(lambda: encoder(images), device, warmup, repeats)
            rows[f"cwsam_encoder_{kind}"] = {"seconds_per_batch": seconds, "tiles_per_s": batch / seconds,
                                             "tflops": batch * flops["total"] / seconds / 1e12}
        seconds = time_calls(lambda: bare(images), device, warmup, repeats)
        rows["sam_encoder"] = {"seconds_per_batch": seconds, "tiles_per_s": batch / seconds,
                               "tflops": batch * bare_flops / seconds / 1e12}
        difference = float((outputs["fused"] - outputs["reference"]).abs().max())
        scale = float(outputs["reference"].abs().max())
        set_attention(model, "fused")
        if compile_encoder:
            from cwsam_core.engine.devices import compile_encoder as compile_model_encoder

            warnings: List[str] = []
            compile_model_encoder(model, warnings.append)
            start = time.perf_counter()
            encoder(images)
            _sync(device)
            compile_seconds = time.perf_counter() - start
            seconds = time_calls(lambda: encoder(images), device, 1, repeats)
            rows["cwsam_encoder_fused_compiled"] = {"seconds_per_batch": seconds, "tiles_per_s": batch / seconds,
                                                    "tflops": batch * flops["total"] / seconds / 1e12,
                                                    "first_call_s": compile_seconds, "warnings": warnings}
    return {"backbone": backbone, "size": size, "batch": batch, "dtype": "bf16 autocast", "rows": rows,
            "flops_per_tile": flops, "sam_encoder_flops_per_tile": bare_flops,
            "fused_vs_reference_max_abs_diff_bf16": difference, "reference_max_abs": scale}


def attention_kernels(device: torch.device) -> dict:
    """Which fused kernels run the encoder's attention shapes (vit_b heads, a 14 x 14 window, bf16)."""
    if device.type != "cuda":
        return {"checked": False, "why": "no CUDA device"}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(2, 12, 196, 64, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    bias = torch.randn(2, 12, 196, 196, device=device, dtype=torch.bfloat16, requires_grad=True)
    result = {"checked": True}
    for name, backend, mask in (("flash_no_mask", SDPBackend.FLASH_ATTENTION, None),
                                ("efficient_with_mask_grad", SDPBackend.EFFICIENT_ATTENTION, bias),
                                ("cudnn_with_mask", SDPBackend.CUDNN_ATTENTION, bias.detach())):
        try:
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
            torch.cuda.synchronize(device)
            result[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            result[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
    return result


def write_scene(path: Path, size: int, rows_per_block: int = 1000) -> float:
    """A size x size two-band float32 GeoTIFF of dB values (smooth regions plus noise); returns seconds."""
    import rasterio
    from rasterio.transform import from_origin

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", width=size, height=size, count=2, dtype="float32", crs="EPSG:32633",
                   transform=from_origin(500000.0, 4600000.0, 10.0, 10.0), tiled=True, blockxsize=512,
                   blockysize=512)
    with rasterio.open(path, "w", **profile) as dst:
        xx = np.arange(size, dtype=np.float32)[None, :]
        for top in range(0, size, rows_per_block):
            rows = min(rows_per_block, size - top)
            yy = np.arange(top, top + rows, dtype=np.float32)[:, None]
            vv = -14 + 8 * np.sin(xx / 170.0) * np.cos(yy / 230.0) + rng.normal(0, 1.5, (rows, size))
            vh = vv - 7 + rng.normal(0, 1.0, (rows, size))
            window = rasterio.windows.Window(0, top, size, rows)
            dst.write(np.stack([vv, vh]).astype(np.float32), window=window)
        dst.set_band_description(1, "VV")
        dst.set_band_description(2, "VH")
    return time.perf_counter() - start


def classification(backbone: str, size: int, scene_size: int, device: torch.device, workdir: Path,
                   batch_size: Optional[int]) -> dict:
    from cwsam_core.common.card import ClassInfo, ModelCard
    from cwsam_core.engine.inference import classify_raster, tile_offsets

    scene = workdir / f"scene_{scene_size}.tif"
    write_seconds = write_scene(scene, scene_size)
    torch.manual_seed(0)
    model = build_cwsam(backbone, NUM_CLASSES, input_size=size)
    randomise_position_tables(model)
    classes = [ClassInfo(i + 1, name, colour) for i, (name, colour) in enumerate(
        [("water", "#1f5fff"), ("forest", "#1b7837"), ("field", "#d9b44a"), ("urban", "#c73b3b"), ("bare", "#999999")])]
    card = ModelCard(backbone=backbone, input_size=size, classes=classes, bands=["VV", "VH"], input_scale="db",
                     normalization={"mean": [-14.0, -21.0, 7.0], "std": [5.0, 5.0, 2.0]})
    per_row = len(tile_offsets(scene_size, size, size - int(round(size * 0.25))))
    start = time.perf_counter()
    result = classify_raster(scene, workdir / "classes.tif", model, card, device=device, batch_size=batch_size)
    seconds = time.perf_counter() - start
    record = json.loads(result.record.read_text())
    return {"scene": f"{scene_size} x {scene_size} x 2 float32", "write_scene_s": write_seconds, "seconds": seconds,
            "tiles": per_row * per_row, "tiles_per_s": per_row * per_row / seconds,
            "megapixels_per_s": scene_size * scene_size / 1e6 / seconds,
            "batch_size": record["parameters"]["batch_size"],
            "batch_size_source": record["parameters"].get("batch_size_source"), "device": record["device"],
            "warnings": result.warnings}


def training_step(backbone: str, size: int, batch: int, device: torch.device, attention: str) -> dict:
    """Peak memory and time of a training step (SAM's encoder frozen, bf16 autocast, AdamW)."""
    torch.manual_seed(0)
    model = build_cwsam(backbone, NUM_CLASSES, input_size=size)
    configure_trainable(model, pretrained_encoder=True)
    set_attention(model, attention)
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    images = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, NUM_CLASSES, (batch, size, size), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device):
            logits = model(images)
        F.cross_entropy(logits.float(), target).backward()
        optimizer.step()

    step()  # optimizer state allocated, kernels chosen
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    seconds = time_calls(step, device, 0, 2)
    row = {"attention": attention, "batch": batch, "step_s": seconds}
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        row["resident_before_step_gib"] = base / GIB  # weights, gradients of the trainable parts, AdamW state
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def flop_formula_check(backbone: str, size: int) -> dict:
    """The formula against ``torch.utils.flop_counter`` on CWSAM's encoder. The counter does not see the
    CPU's fused attention kernel, so the fused encoder's count is checked against everything but the
    attention products, and those against the matrix products of segment_anything's own attention
    (q k^T, attention x v and the relative-position einsums; its qkv and proj run on padded tokens)."""
    import re

    from torch.utils.flop_counter import FlopCounterMode

    model = build_cwsam(backbone, NUM_CLASSES, input_size=size).eval()
    images = torch.randn(1, 3, size, size)
    counts = {}
    for kind in ("fused", "reference"):
        set_attention(model, kind)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model.image_encoder(images)
        counts[kind] = counter
    parts = encoder_flops(backbone, size)["parts"]
    attention = parts["attention_windowed"] + parts["attention_global"]
    reference_attention = sum(sum(count for op, count in ops.items() if "bmm" in str(op))
                              for module, ops in counts["reference"].get_flop_counts().items()
                              if re.search(r"\.blocks\.\d+\.attn$", module))
    outside = sum(parts.values()) - attention
    return {"fused_counted": counts["fused"].get_total_flops(), "formula_without_attention": outside,
            "reference_attention_counted": reference_attention,
            "formula_attention": attention + parts["relative_positions"],
            "ratio": outside / counts["fused"].get_total_flops(),
            "attention_ratio": (attention + parts["relative_positions"]) / reference_attention}


def targets(results: dict) -> dict:
    """The CPU targets of the fused attention, read on the GPU: reported, not asserted."""
    rows = results["encoder"]["rows"]
    speedup = rows["cwsam_encoder_reference"]["seconds_per_batch"] / rows["cwsam_encoder_fused"]["seconds_per_batch"]
    versus_sam = rows["cwsam_encoder_fused"]["seconds_per_batch"] / rows["sam_encoder"]["seconds_per_batch"]
    report = {"encoder_speedup_fused_vs_reference": {"value": speedup, "target": ">= 1.3", "met": speedup >= 1.3},
              "cwsam_encoder_vs_sam_encoder_time": {"value": versus_sam, "target": "<= 1.0", "met": versus_sam <= 1.0}}
    steps = {row["attention"]: row for row in results["training"]}
    if all("peak_gib" in row for row in steps.values()):
        ratio = steps["fused"]["peak_gib"] / steps["reference"]["peak_gib"]
        report["training_peak_memory_fused_vs_reference"] = {"value": ratio, "target": "<= 0.8", "met": ratio <= 0.8}
    return report


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "device_description": describe_device(str(device) if device.type != "cuda" else "auto")[1]}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, capability=f"{properties.major}.{properties.minor}",
                    memory_gib=properties.total_memory / GIB, multiprocessors=properties.multi_processor_count,
                    bf16=torch.cuda.is_bf16_supported(), cuda=torch.version.cuda)
    return info


def print_table(results: dict) -> None:
    encoder = results["encoder"]
    print(f"\nCWSAM GPU check: {results['environment'].get('gpu', results['environment']['device'])}, torch "
          f"{results['environment']['torch']}; {encoder['backbone']} S={encoder['size']} {encoder['dtype']}")
    flops = encoder["flops_per_tile"]
    print(f"FLOPs per tile assumed: {flops['total'] / 1e9:.1f} GFLOP for CWSAM's encoder, "
          f"{encoder['sam_encoder_flops_per_tile'] / 1e9:.1f} GFLOP for SAM's ({flops['sizes']})")
    print(f"{'what':<58} {'value':>14}")
    for name, row in encoder["rows"].items():
        print(f"{'encoder ' + name + ', batch ' + str(encoder['batch']):<58} "
              f"{row['tiles_per_s']:>8.1f} tiles/s  {row['tflops']:>6.1f} TFLOP/s")
    print(f"{'encoder fused vs reference, max |difference| (bf16)':<58} "
          f"{encoder['fused_vs_reference_max_abs_diff_bf16']:>14.3g}")
    if "classification" in results:
        row = results["classification"]
        print(f"{'classify ' + row['scene'] + ', batch ' + str(row['batch_size']):<58} "
              f"{row['seconds']:>8.1f} s  {row['megapixels_per_s']:>6.1f} MP/s  {row['tiles_per_s']:.1f} tiles/s")
    for row in results.get("training", []):
        memory = f"{row['peak_gib']:>8.2f} GiB peak" if "peak_gib" in row else "   (no GPU memory counter)"
        print(f"{'training step, batch ' + str(row['batch']) + ', attention ' + row['attention']:<58} "
              f"{memory}  {row['step_s']:.3f} s")
    kernels = results.get("attention_kernels", {})
    if kernels.get("checked"):
        print("fused attention kernels: " + ", ".join(f"{k} {v}" for k, v in kernels.items() if k != "checked"))
    if "flop_formula_check" in results:
        check = results["flop_formula_check"]
        print(f"FLOP formula / torch.utils.flop_counter: {check['ratio']:.4f} without attention, "
              f"{check['attention_ratio']:.4f} for attention")
    for name, row in results["targets"].items():
        print(f"{name:<58} {row['value']:>14.3f}  target {row['target']}: {'met' if row['met'] else 'not met'}")
    print(f"total {results['seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("bench/out/gpu_check.json"), help="the JSON to write")
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU with a tiny backbone")
    parser.add_argument("--compile", action="store_true", help="also time the encoder after torch.compile")
    parser.add_argument("--batch", type=int, default=8, help="tiles per batch of the encoder throughput (default 8)")
    parser.add_argument("--scene", type=int, help="side of the synthetic scene (default 10000; 600 with --dry-run)")
    parser.add_argument("--workdir", type=Path, help="where the synthetic scene goes (default: a temporary folder)")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.dry_run:
        device, backbone, size, batch, scene, warmup, repeats = torch.device("cpu"), "vit_nano", 64, 2, \
            args.scene or 600, 1, 2
        torch.set_num_threads(max(1, torch.get_num_threads()))
    else:
        if not torch.cuda.is_available():
            sys.exit(f"gpu_check: no CUDA GPU ({describe_device('auto')[1]}); use --dry-run to check the script")
        device, backbone, size, batch, scene, warmup, repeats = torch.device("cuda"), "vit_b", 1024, args.batch, \
            args.scene or 10_000, 3, 10
    results: dict = {"environment": environment(device), "dry_run": args.dry_run}
    print(json.dumps(results["environment"]), flush=True)
    results["attention_kernels"] = attention_kernels(device)
    results["encoder"] = encoder_throughput(backbone, size, batch, device, warmup, repeats, args.compile)
    print("encoder done", flush=True)
    with tempfile.TemporaryDirectory() if args.workdir is None else contextlib.nullcontext(args.workdir) as folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        results["classification"] = classification(backbone, size, scene, device, Path(folder),
                                                    2 if args.dry_run else None)
    print("classification done", flush=True)
    results["training"] = [training_step(backbone, size, 4, device, kind) for kind in ("fused", "reference")]
    results["targets"] = targets(results)
    if args.dry_run:
        results["flop_formula_check"] = flop_formula_check(backbone, size)
    results["seconds"] = time.perf_counter() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
