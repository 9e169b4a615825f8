"""Model benchmark: CWSAM forward against bare SAM, and training-step memory with and without freezing.

Run: ``.venv/bin/python bench/bench_model.py`` (or ``make bench``). Prints, per configuration:

- forward: median wall time of bare SAM (image encoder + mask decoder without prompts) and of the
  full CWSAM forward on the same input, batch 1, fp32, interleaved runs; the ratio (target <= 1.20);
- memory: peak RSS of one training step (forward + backward + AdamW) above the process's
  RSS before the model was built, CWSAM's freezing against the same backbone fully trainable; the
  ratio (target <= 0.6), without and with gradient checkpointing of the encoder blocks (the same
  setting on both sides). Each step runs in a fresh process so peaks do not mix;
- attention: vit_b at S = 512 on this CPU, the encoder's fused attention (``FusedAttention``, the
  default) against segment_anything's own ``Attention`` in the same model with the same weights: forward
  time (batch 1; target: at least 1.3 times faster, and the whole CWSAM model no slower than bare SAM's
  image encoder alone), the largest output difference, and the peak memory of a training step at batch 2
  with SAM's encoder frozen (target: at least 20 % lower), each side in a fresh process.

With CUDA available it also runs vit_b at S = 1024 (fp32 and bf16 autocast, batch 1 and 4):
images per second of the forward and peak GPU memory of a training step.
Weights are random (no SAM checkpoint is needed to time the computation).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import peak_rss_bytes  # noqa: E402

from cwsam_core.model.build import build_bare_sam, build_cwsam  # noqa: E402
from cwsam_core.model.modeling import set_attention  # noqa: E402
from cwsam_core.model.trainable import configure_trainable, parameter_counts  # noqa: E402

NUM_CLASSES = 5
CPU_CONFIGS = [("vit_tiny", 256, 30), ("vit_b", 512, 6)]  # (backbone, input size, timed repeats)


def bare_sam_forward(sam, images: torch.Tensor) -> torch.Tensor:
    """SAM's encoder, decoder and mask upsampling as SAM runs them without prompts (one image: SAM's decoder is per image)."""
    embeddings = sam.image_encoder(images)
    sparse = torch.empty(1, 0, sam.prompt_encoder.embed_dim, device=images.device)
    dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *embeddings.shape[-2:])
    masks, _ = sam.mask_decoder(embeddings, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False)
    # SAM's own postprocess_masks: low-resolution masks back to the input size.
    return F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=False)


def time_forwards(backbone: str, size: int, repeats: int, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    sam = build_bare_sam(backbone, size).to(device).eval()
    cwsam = build_cwsam(backbone, NUM_CLASSES, input_size=size).to(device).eval()
    images = torch.randn(1, 3, size, size, device=device)
    runs = {"sam": [], "cwsam": []}
    with torch.inference_mode():
        bare_sam_forward(sam, images), cwsam(images)  # warm-up
        for _ in range(repeats):  # interleaved, so machine noise hits both alike
            for name, fn in (("sam", lambda: bare_sam_forward(sam, images)), ("cwsam", lambda: cwsam(images))):
                start = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - start)
    sam_s, cwsam_s = statistics.median(runs["sam"]), statistics.median(runs["cwsam"])
    return {"backbone": backbone, "size": size, "sam_s": sam_s, "cwsam_s": cwsam_s, "ratio": cwsam_s / sam_s}


def randomise_position_tables(model: torch.nn.Module, std: float = 0.05) -> None:
    """SAM initialises its relative-position tables to zero; trained ones are not (this keeps the comparison honest)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "rel_pos_" in name:
                parameter.normal_(0.0, std)


def attention_forwards(backbone: str = "vit_b", size: int = 512, repeats: int = 5) -> dict:
    """CWSAM's forward with fused and with segment_anything's attention (same weights), and bare SAM's
    image encoder alone on the same input; median of interleaved runs, batch 1, fp32."""
    torch.manual_seed(0)
    cwsam = build_cwsam(backbone, NUM_CLASSES, input_size=size).eval()
    randomise_position_tables(cwsam)
    encoder = build_bare_sam(backbone, size).image_encoder.eval()
    images = torch.randn(1, 3, size, size)

    def run_cwsam(kind: str) -> torch.Tensor:
        set_attention(cwsam, kind)
        return cwsam(images)

    runs = {"fused": [], "reference": [], "sam_encoder": []}
    calls = {"fused": lambda: run_cwsam("fused"), "reference": lambda: run_cwsam("reference"),
             "sam_encoder": lambda: encoder(images)}
    with torch.inference_mode():
        fused, reference = run_cwsam("fused"), run_cwsam("reference")  # warm-up, and the outputs compared
        encoder(images)
        for _ in range(repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                runs[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in runs.items()}
    return {"backbone": backbone, "size": size, "fused_s": seconds["fused"], "reference_s": seconds["reference"],
            "sam_encoder_s": seconds["sam_encoder"], "speedup": seconds["reference"] / seconds["fused"],
            "fused_vs_sam_encoder": seconds["fused"] / seconds["sam_encoder"],
            "max_abs_diff": float((fused - reference).abs().max()),
            "max_abs_logit": float(reference.abs().max())}


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def train_step_memory(backbone: str, size: int, batch: int, frozen: bool, checkpointing: bool) -> dict:
    """One training step in this process; returns RSS before the model and the peak (bytes)."""
    torch.manual_seed(0)
    before = _rss_bytes()
    model = build_cwsam(backbone, NUM_CLASSES, input_size=size)
    configure_trainable(model, pretrained_encoder=frozen)
    model.image_encoder.gradient_checkpointing = checkpointing
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    images = torch.randn(batch, 3, size, size)
    target = torch.randint(0, NUM_CLASSES, (batch, size, size))
    start = time.perf_counter()
    loss = F.cross_entropy(model(images), target)
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    trainable, total = parameter_counts(model)
    return {"before": before, "peak": peak, "step_bytes": peak - before, "seconds": seconds,
            "trainable": trainable, "total": total}


def train_step_memory_in_subprocess(backbone: str, size: int, batch: int, frozen: bool, checkpointing: bool,
                                    attention: str = "fused") -> dict:
    command = [sys.executable, __file__, "--child-train-step", backbone, str(size), str(batch), str(int(frozen)),
               str(int(checkpointing))]
    environment = {**os.environ, "CWSAM_ATTENTION": attention, "BENCH_THREADS": str(torch.get_num_threads())}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
    return json.loads(output.strip().splitlines()[-1])


def gpu_benchmark() -> list:
    results = []
    for dtype_name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        for batch in (1, 4):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            model = build_cwsam("vit_b", NUM_CLASSES, input_size=1024).cuda()
            configure_trainable(model, pretrained_encoder=True)
            images = torch.randn(batch, 3, 1024, 1024, device="cuda")
            target = torch.randint(0, NUM_CLASSES, (batch, 1024, 1024), device="cuda")
            autocast = torch.autocast("cuda", dtype=dtype, enabled=dtype is not None)
            model.eval()
            with torch.inference_mode(), autocast:
                model(images)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(5):
                    model(images)
                torch.cuda.synchronize()
                images_per_s = 5 * batch / (time.perf_counter() - start)
            model.train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            with autocast:
                loss = F.cross_entropy(model(images).float(), target)
            loss.backward()
            optimizer.step()
            torch.cuda.synchronize()
            results.append({"dtype": dtype_name, "batch": batch, "forward_images_per_s": images_per_s,
                            "train_step_s": time.perf_counter() - start,
                            "train_step_peak_gib": torch.cuda.max_memory_allocated() / 2**30})
            del model, optimizer
    return results


def attention_rows(backbone: str = "vit_b", size: int = 512, batch: int = 2) -> dict:
    forward = attention_forwards(backbone, size)
    print(f"[attention] {backbone} S={size} batch 1 fp32 CPU forward: CWSAM with fused attention "
          f"{forward['fused_s'] * 1000:.0f} ms, with segment_anything's attention {forward['reference_s'] * 1000:.0f} ms: "
          f"{forward['speedup']:.2f}x faster (target >= 1.30: {'met' if forward['speedup'] >= 1.3 else 'not met'}); "
          f"outputs differ by at most {forward['max_abs_diff']:.1e} (logits up to {forward['max_abs_logit']:.1f})",
          flush=True)
    print(f"[attention] {backbone} S={size} whole CWSAM (fused) {forward['fused_s'] * 1000:.0f} ms vs bare SAM image "
          f"encoder alone {forward['sam_encoder_s'] * 1000:.0f} ms: ratio {forward['fused_vs_sam_encoder']:.3f} "
          f"(target <= 1.00: {'met' if forward['fused_vs_sam_encoder'] <= 1.0 else 'not met'})", flush=True)
    steps = {kind: train_step_memory_in_subprocess(backbone, size, batch, True, False, kind)
             for kind in ("fused", "reference")}
    ratio = steps["fused"]["step_bytes"] / steps["reference"]["step_bytes"]
    print(f"[attention] {backbone} S={size} training step batch {batch} (SAM encoder frozen), peak memory above the "
          f"process before the model: fused {steps['fused']['step_bytes'] / 2**20:.0f} MiB, segment_anything's "
          f"{steps['reference']['step_bytes'] / 2**20:.0f} MiB: ratio {ratio:.3f} (target <= 0.80: "
          f"{'met' if ratio <= 0.8 else 'not met'}); step {steps['fused']['seconds']:.2f} s vs "
          f"{steps['reference']['seconds']:.2f} s", flush=True)
    return {"forward": forward, "train_step": {"batch": batch, **steps, "memory_ratio": ratio}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child-train-step", nargs=5, metavar=("BACKBONE", "SIZE", "BATCH", "FROZEN", "CHECKPOINTING"))
    parser.add_argument("--only", choices=[c[0] for c in CPU_CONFIGS] + ["attention"],
                        help="run one CPU configuration, or only the attention comparison")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch CPU threads (default: all CPUs; 1 keeps a shared machine's other jobs from "
                        "stalling every parallel region)")
    args = parser.parse_args()
    if args.child_train_step:
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
        backbone, size, batch, frozen, checkpointing = args.child_train_step
        print(json.dumps(train_step_memory(backbone, int(size), int(batch), bool(int(frozen)), bool(int(checkpointing)))))
        return

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CUDA: {torch.cuda.is_available()}")
    results = {"forward": [], "train_memory": [], "attention": {}, "gpu": []}
    if args.only in (None, "attention"):
        results["attention"] = attention_rows()
    for backbone, size, repeats in CPU_CONFIGS:
        if args.only and backbone != args.only:
            continue
        forward = time_forwards(backbone, size, repeats)
        results["forward"].append(forward)
        print(f"[forward] {backbone} S={size} batch 1 fp32 CPU: bare SAM {forward['sam_s'] * 1000:.1f} ms, "
              f"CWSAM {forward['cwsam_s'] * 1000:.1f} ms, ratio {forward['ratio']:.3f} (target <= 1.20)", flush=True)
        batch = 2 if backbone == "vit_tiny" else 1
        for checkpointing in (False, True):
            frozen = train_step_memory_in_subprocess(backbone, size, batch, True, checkpointing)
            full = train_step_memory_in_subprocess(backbone, size, batch, False, checkpointing)
            ratio = frozen["step_bytes"] / full["step_bytes"]
            results["train_memory"].append({"backbone": backbone, "size": size, "batch": batch,
                                            "checkpointing": checkpointing, "frozen": frozen, "full": full,
                                            "ratio": ratio})
            print(f"[train step] {backbone} S={size} batch {batch}, gradient checkpointing "
                  f"{'on' if checkpointing else 'off'} (both): CWSAM freezing {frozen['step_bytes'] / 2**20:.0f} MiB "
                  f"({frozen['trainable']:,} of {frozen['total']:,} trainable), fully trainable "
                  f"{full['step_bytes'] / 2**20:.0f} MiB; ratio {ratio:.3f} (target <= 0.6); "
                  f"step {frozen['seconds']:.2f} s vs {full['seconds']:.2f} s", flush=True)
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
        for row in gpu_benchmark():
            results["gpu"].append(row)
            print(f"[gpu] vit_b S=1024 {row['dtype']} batch {row['batch']}: forward "
                  f"{row['forward_images_per_s']:.2f} images/s; training step {row['train_step_s']:.3f} s, "
                  f"peak {row['train_step_peak_gib']:.2f} GiB", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
