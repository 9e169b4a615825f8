"""Crop or resize? How SAM's relative-position tables should be fitted to an input size S < 1024.

Builds SAM's vit_b image encoder in the official layout from a random initialisation. SAM's own
initialisation leaves the relative-position tables at zero, which would make both choices identical,
so every table gets seeded random values: smooth ones (a sum of four sinusoids of 1 to 4 cycles along
the offset axis) or rough ones (white noise), of a given standard deviation. The absolute position
embedding stays at its initial zero, so that only the tables differ between the two choices. A
simulated 1024 x 1024 SAR scene is encoded at S = 1024, then S x S crops of the same pixels (top-left
and centre) with the tables of the global blocks cropped or interpolated, and the embeddings of the
crop's tokens are compared with those of the same tokens at S = 1024:

    relative error = ||E_S - E_1024[crop]|| / ||E_1024[crop]||,  cosine = mean over tokens

Usage: nice .venv/bin/python tools/measure_position_tables.py [--sizes 512 256] [--json out.json]
(vit_b at 1024 on a CPU: about a minute and 4 GB.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cwsam_core.model.build import build_bare_sam  # noqa: E402
from cwsam_core.model.checkpoint import resize_to_model  # noqa: E402
from cwsam_core.raster.radiometry import channel_stats, normalize, to_model_channels  # noqa: E402
from cwsam_core.simulate import simulate_scene  # noqa: E402


def smooth_table(length: int, channels: int, generator: torch.Generator, std: float) -> torch.Tensor:
    """length x channels: per channel a sum of 4 sinusoids of 1..4 cycles over the table, scaled to ``std``."""
    offsets = torch.arange(length, dtype=torch.float64)[:, None] / length
    table = torch.zeros(length, channels, dtype=torch.float64)
    for cycles in range(1, 5):
        amplitude = torch.randn(channels, generator=generator, dtype=torch.float64)
        phase = torch.rand(channels, generator=generator, dtype=torch.float64) * 2 * math.pi
        table += amplitude * torch.sin(2 * math.pi * cycles * offsets + phase)
    return (table / table.std() * std).float()


def fill_position_tables(state: dict, kind: str, seed: int, std: float) -> dict:
    """``state`` with every relative-position table replaced by seeded random values."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(state)
    for key, value in state.items():
        if key.endswith(("rel_pos_h", "rel_pos_w")):
            out[key] = (smooth_table(*value.shape, generator, std) if kind == "smooth"
                        else torch.randn(value.shape, generator=generator) * std)
    return out


def scene_image(size: int, seed: int) -> torch.Tensor:
    scene = simulate_scene(size, size, seed=seed)
    channels = to_model_channels(np.stack([scene.vv_db, scene.vh_db]), "db")
    stats = channel_stats(channels, np.ones(channels.shape[1:], dtype=bool))
    return torch.from_numpy(normalize(channels, stats))[None]


def encoder_at(size: int, state: dict, mode: str) -> torch.nn.Module:
    sam = build_bare_sam("vit_b", input_size=size)
    sam.position_tables = mode
    encoder_state = {k[len("image_encoder."):]: v for k, v in resize_to_model(state, sam).items()
                     if k.startswith("image_encoder.")}
    sam.image_encoder.load_state_dict(encoder_state)
    return sam.image_encoder.eval()


def compare(reference: torch.Tensor, embedding: torch.Tensor) -> dict:
    error = float((embedding - reference).norm() / reference.norm())
    cosine = float(torch.nn.functional.cosine_similarity(embedding, reference, dim=1).mean())
    return {"relative_error": round(error, 4), "cosine": round(cosine, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--kinds", nargs="+", default=["smooth", "rough"], choices=["smooth", "rough"])
    parser.add_argument("--stds", type=float, nargs="+", default=[0.5, 2.0],
                        help="standard deviations of the random tables")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    official = build_bare_sam("vit_b").state_dict()  # what sam_model_registry["vit_b"]() holds
    image = scene_image(1024, args.seed + 101)
    results = []
    started = time.perf_counter()
    for kind, std in ((k, s) for k in args.kinds for s in args.stds):
        state = fill_position_tables(official, kind, args.seed, std)
        with torch.inference_mode():
            full = encoder_at(1024, state, "interpolate")(image)  # 1 x 256 x 64 x 64
            for size in args.sizes:
                grid = size // 16
                for where, (top, left) in (("top-left", (0, 0)), ("centre", ((1024 - size) // 2,) * 2)):
                    crop = image[..., top : top + size, left : left + size]
                    reference = full[..., top // 16 : top // 16 + grid, left // 16 : left // 16 + grid]
                    row = {"tables": kind, "std": std, "S": size, "where": where}
                    for mode in ("crop", "interpolate"):
                        row[mode] = compare(reference, encoder_at(size, state, mode)(crop))
                    results.append(row)
                    print(json.dumps(row), flush=True)
    summary = {"backbone": "vit_b (official layout, random init, random relative-position tables)",
               "seed": args.seed, "torch": str(torch.__version__), "seconds": round(time.perf_counter() - started, 1),
               "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
