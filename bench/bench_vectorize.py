"""Vectorize benchmark: peak memory of ``cwsam vectorize`` on a tall class map against a short one.

Run: ``.venv/bin/python bench/bench_vectorize.py`` (or ``make bench``). Writes two synthetic class
maps (uint8, 5 classes, 10 m pixels, EPSG:32633): 20,000 x 4,000 and 5,000 x 4,000 pixels (rows x
columns; the short one is the top quarter of the tall one). The classes are a smoothed random field
quantised at its quintiles: two octaves of bilinearly upsampled Gaussian noise (cells of 96 and 24
pixels), so regions range from a few pixels to a few hundred metres across, like a land-cover map.

Each vectorisation runs in a fresh process and reports its peak resident memory (VmHWM, see
``bench_common.peak_rss_bytes``), its wall time and its polygon count; the parent prints, per
variant, the ratio of the tall map's peak to the short one's (target: under 1.5, memory that does not
grow with the raster's height). Variants: ``plain`` (every region), ``mmu`` (``--min-area 2000``:
regions under 20 pixels merged) and, with ``--simplify``, ``simplify`` (``--simplify 15``: slower,
about a millisecond per boundary arc). A process that only imports the engine gives the baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import peak_rss_bytes  # noqa: E402

WIDTH = 4000
TALL, SHORT = 20_000, 5_000
STRIP = 1000  # rows generated at a time
OCTAVES = ((96, 1.0), (24, 0.45))  # (cell size in pixels, weight)
VARIANTS = {"plain": {}, "mmu": {"min_area": 2000.0}, "simplify": {"simplify": 15.0}}
TARGET = 1.5


def _upsampled(noise: np.ndarray, cell: int, row0: int, rows: int, width: int) -> np.ndarray:
    """Rows [row0, row0 + rows) of ``noise`` (one value per ``cell`` pixels) bilinearly upsampled."""
    y = (np.arange(row0, row0 + rows) + 0.5) / cell
    x = (np.arange(width) + 0.5) / cell
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a, b = noise[y0][:, x0], noise[y0][:, x0 + 1]
    c, d = noise[y0 + 1][:, x0], noise[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def write_map(path: Path, height: int, width: int = WIDTH, seed: int = 0) -> Path:
    """The synthetic class map, written strip by strip (the generator never holds the whole map)."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    grids = [(cell, weight, rng.normal(size=(TALL // cell + 3, width // cell + 3))) for cell, weight in OCTAVES]
    # Quintiles of the field: the sum of independent normals, bilinear smoothing shrinks its spread.
    sample = np.concatenate([sum(w * _upsampled(g, c, r, 50, width) for c, w, g in grids)
                             for r in range(0, TALL, TALL // 20)])
    thresholds = np.quantile(sample, [0.2, 0.4, 0.6, 0.8])
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", nodata=255,
                   crs="EPSG:32633", transform=from_origin(500000.0, 4700000.0, 10.0, 10.0), tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        for row0 in range(0, height, STRIP):
            rows = min(STRIP, height - row0)
            field = sum(w * _upsampled(g, c, row0, rows, width) for c, w, g in grids)
            dst.write(np.digitize(field, thresholds).astype(np.uint8)[None],
                      window=rasterio.windows.Window(0, row0, width, rows))
    return path


def child(raster: str, output: str, options: str) -> None:
    """One vectorisation in this process; prints a JSON line with the peak memory."""
    from cwsam_core.vector.vectorize import vectorize_file

    if raster == "-":  # the baseline: imports only
        print(json.dumps({"peak_bytes": peak_rss_bytes()}))
        return
    started = time.perf_counter()
    result = vectorize_file(raster, output, **json.loads(options))
    print(json.dumps({"peak_bytes": peak_rss_bytes(), "seconds": time.perf_counter() - started,
                      "polygons": result.polygons, "merged": result.merged_regions}))


def run_child(raster: str, output: str, options: dict) -> dict:
    command = [sys.executable, __file__, "--child", raster, output, json.dumps(options)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("RASTER", "OUTPUT", "OPTIONS"), help=argparse.SUPPRESS)
    parser.add_argument("--simplify", action="store_true", help="also run the simplify variant (slower)")
    parser.add_argument("--keep", metavar="FOLDER", help="write the maps and polygons here and keep them")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    variants = ["plain", "mmu"] + (["simplify"] if args.simplify else [])
    with tempfile.TemporaryDirectory(prefix="cwsam-bench-vectorize-") as scratch:
        folder = Path(args.keep) if args.keep else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        maps = {}
        for height in (SHORT, TALL):
            started = time.perf_counter()
            maps[height] = write_map(folder / f"classes_{height}x{WIDTH}.tif", height)
            print(f"map {height:,} x {WIDTH:,} written in {time.perf_counter() - started:.0f} s", flush=True)
        baseline = run_child("-", "-", "{}")["peak_bytes"]
        print(f"baseline (imports only): peak {baseline / 2**20:.0f} MiB")
        print(f"{'variant':<10} {'map':>16} {'polygons':>10} {'seconds':>8} {'peak MiB':>9}")
        failed = False
        for variant in variants:
            peaks = {}
            for height in (SHORT, TALL):
                output = folder / f"polygons_{variant}_{height}.gpkg"
                report = run_child(str(maps[height]), str(output), VARIANTS[variant])
                peaks[height] = report["peak_bytes"]
                print(f"{variant:<10} {f'{height:,} x {WIDTH:,}':>16} {report['polygons']:>10,} "
                      f"{report['seconds']:>8.1f} {report['peak_bytes'] / 2**20:>9.0f}", flush=True)
            ratio = peaks[TALL] / peaks[SHORT]
            met = ratio < TARGET
            failed |= not met
            print(f"{variant:<10} peak ratio {TALL:,} / {SHORT:,} rows: {ratio:.2f} "
                  f"(target < {TARGET}: {'met' if met else 'NOT met'})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
