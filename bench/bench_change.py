"""``cwsam change`` on two large class maps: time and peak memory against simply reading both maps.

Run: ``.venv/bin/python bench/bench_change.py [--size 20000]`` (``make bench`` runs it at 8192). Two class maps of
``--size`` x ``--size`` pixels (5 classes in blocks; the second shifted by 7 pixels, cropped, with changed blocks)
are written once to bench/out; then, each in a fresh process: reading both maps strip by strip on the first one's
grid (the second through a WarpedVRT, as the comparison reads it), and ``compare_class_maps``. Prints seconds,
peak resident memory (VmHWM) and their ratios; memory must not follow the maps' size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
NAMES = {0: "water", 1: "bare soil", 2: "cropland", 3: "forest", 4: "urban"}

READ = r'''
import json, sys, time
import rasterio
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
before, after = sys.argv[1:3]
start = time.perf_counter()
with rasterio.Env(GDAL_CACHEMAX=128), rasterio.open(before) as b, rasterio.open(after) as a, WarpedVRT(a, crs=b.crs, transform=b.transform,
        width=b.width, height=b.height, resampling=rasterio.enums.Resampling.nearest, nodata=255) as v:
    rows = max(1, min(512, 2 ** 21 // b.width))  # the strips compare_class_maps reads
    for row in range(0, b.height, rows):
        window = Window(0, row, b.width, min(rows, b.height - row))
        b.read(1, window=window).sum(); v.read(1, window=window).sum()
seconds = time.perf_counter() - start
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"seconds": seconds, "peak_mib": int(peak) / 1024}))
'''

CHANGE = r'''
import json, sys, time
from cwsam_core.engine.change import compare_class_maps
before, after, output = sys.argv[1:4]
start = time.perf_counter()
result = compare_class_maps(before, after, output)
seconds = time.perf_counter() - start
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"seconds": seconds, "peak_mib": int(peak) / 1024, "transitions": len(result.transitions)}))
'''


def write_map(path: Path, size: int, shift: int, changed: bool) -> None:
    """Blocks of 256 px of 5 classes; ``changed``: one block in 7 becomes urban. Written a strip at a time."""
    profile = dict(driver="GTiff", width=size - shift, height=size - shift, count=1, dtype="uint8", nodata=255,
                   crs="EPSG:32633", transform=from_origin(500_000 + 10 * shift, 4_500_000 - 10 * shift, 10, 10),
                   compress="deflate", tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as out:
        for row in range(0, size - shift, 512):
            rows = np.arange(row, min(row + 512, size - shift)) + shift
            cols = np.arange(size - shift) + shift
            block = (rows[:, None] // 256) * 7 + cols[None, :] // 256
            values = (block % 5).astype(np.uint8)
            if changed:
                values[block % 7 == 3] = 4
            out.write(values, 1, window=Window(0, row, size - shift, len(rows)))
        out.update_tags(1, **{f"class_{v}": n for v, n in NAMES.items()})


def run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=20000, help="side of the maps in pixels (default 20000)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    before, after = OUT / f"change_before_{args.size}.tif", OUT / f"change_after_{args.size}.tif"
    if not before.exists():
        write_map(before, args.size, 0, False)
    if not after.exists():
        write_map(after, args.size, 7, True)
    output = OUT / f"change_{args.size}.tif"
    read = run(READ, str(before), str(after))
    change = run(CHANGE, str(before), str(after), str(output))
    print(f"maps {args.size} x {args.size} px (the second shifted by 7 px, cropped); {change['transitions']} "
          "transitions")
    print(f"read both maps strip by strip: {read['seconds']:.1f} s, peak {read['peak_mib']:.0f} MiB")
    print(f"cwsam change:                  {change['seconds']:.1f} s, peak {change['peak_mib']:.0f} MiB")
    print(f"ratio: time {change['seconds'] / read['seconds']:.2f}x, "
          f"memory {change['peak_mib'] / read['peak_mib']:.2f}x (a map is {args.size * args.size / 2 ** 20:.0f} MiB "
          "of pixels)")


if __name__ == "__main__":
    main()
