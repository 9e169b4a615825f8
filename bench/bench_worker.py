"""The engine's worker process: what running the engine outside QGIS's process costs.

Run: ``.venv/bin/python bench/bench_worker.py`` (``make bench``). On the bundled demo scene (512 x 512) and on
a simulated large scene (4096 x 4096 by default), with the same model:

- ``cwsam classify`` from the shell (a new Python: interpreter start, imports, classification);
- Processing ``cwsam:classify`` in a headless QGIS started from Debian's Python (no torch in it): the first
  run starts the engine's worker (its imports), the second finds it waiting;

and prints the wall-time ratios Processing / CLI (targets: <= 1.2 on the demo scene, <= 1.05 on the large one)
and whether the maps are identical pixel for pixel.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cwsam_core.simulate import simulate_scene, write_scene  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
DEMO = REPO / "resources" / "demo"
SYSTEM_PYTHON = "/usr/bin/python3"

QGIS_SCRIPT = r'''
import json, os, sys, time
repo, jobs = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, repo)
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.setPrefixPath("/usr", True)
app.initQgis()
sys.path.append("/usr/share/qgis/python/plugins")
from processing.core.Processing import Processing
Processing.initialize()
from qgis.core import QgsApplication as A
from cwsam_qgis.processing.provider import CwsamProvider
provider = CwsamProvider()  # kept: the registry does not hold the Python object
A.processingRegistry().addProvider(provider)
import processing
times = []
for scene, model, output in jobs:
    start = time.perf_counter()
    processing.run("cwsam:classify", {"INPUT": scene, "MODEL": model, "DEVICE": 1, "OUTPUT": output})
    times.append(time.perf_counter() - start)
heavy = sorted(m for m in ("torch", "rasterio", "onnxruntime") if m in sys.modules)
print("RESULT " + json.dumps({"times": times, "engine_modules_in_qgis": heavy}), flush=True)
os._exit(0)
'''


def cli_seconds(scene: Path, model: Path, output: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cwsam_core.cli", "classify", str(scene), "--model", str(model), "--output",
                    str(output), "--device", "cpu", "--overwrite"], check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - start


def processing_seconds(jobs: list) -> dict:
    with tempfile.TemporaryDirectory() as profile:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        # The engine environment named as on a server (no settings written anywhere): this checkout's .venv.
        env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=profile, CWSAM_ENGINE_ENV=str(REPO / ".venv"))
        done = subprocess.run([SYSTEM_PYTHON, "-c", QGIS_SCRIPT, str(REPO),
                               json.dumps([[str(a) for a in job] for job in jobs])],
                              capture_output=True, text=True, env=env, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"QGIS run failed: {done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def same_map(a: Path, b: Path) -> bool:
    with rasterio.open(a) as first, rasterio.open(b) as second:
        return bool(np.array_equal(first.read(1), second.read(1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large", type=int, default=4096, help="side of the large simulated scene in pixels")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    model = DEMO / "model.cwsam.pt"
    large = OUT / f"worker_scene_{args.large}.tif"
    if not large.exists():
        write_scene(simulate_scene(args.large, args.large, seed=7), large, OUT / f"worker_scene_{args.large}_labels.tif")
    rows = []
    for name, scene in (("demo 512 x 512", DEMO / "scene.tif"), (f"large {args.large} x {args.large}", large)):
        stem = OUT / f"worker_{scene.stem}"
        cli = cli_seconds(scene, model, stem.with_name(stem.name + "_cli.tif"))
        for output in (stem.with_name(stem.name + "_cold.tif"), stem.with_name(stem.name + "_warm.tif")):
            for suffix in ("", ".aux.xml"):
                Path(str(output) + suffix).unlink(missing_ok=True)
            output.with_suffix(".qml").unlink(missing_ok=True)
            output.with_suffix(".run.json").unlink(missing_ok=True)
        result = processing_seconds([(scene, model, stem.with_name(stem.name + "_cold.tif")),
                                     (scene, model, stem.with_name(stem.name + "_warm.tif"))])
        cold, warm = result["times"]
        identical = all(same_map(stem.with_name(stem.name + "_cli.tif"), stem.with_name(stem.name + f"_{k}.tif"))
                        for k in ("cold", "warm"))
        rows.append((name, cli, cold, warm, identical, result["engine_modules_in_qgis"]))
    print(f"{'scene':<22} {'cwsam classify':>15} {'Processing (new worker)':>24} {'Processing (warm worker)':>25} "
          f"{'identical':>10}")
    for name, cli, cold, warm, identical, _ in rows:
        print(f"{name:<22} {cli:>13.2f} s {cold:>13.2f} s ({cold / cli:.2f}x) {warm:>14.2f} s ({warm / cli:.2f}x) "
              f"{str(identical):>10}")
    demo, big = rows
    print(f"check: demo scene, Processing with a new worker / cwsam classify = {demo[2] / demo[1]:.2f} (target <= 1.2): "
          f"{'met' if demo[2] / demo[1] <= 1.2 else 'NOT met'}")
    print(f"check: large scene, Processing with a new worker / cwsam classify = {big[2] / big[1]:.2f} (target <= 1.05): "
          f"{'met' if big[2] / big[1] <= 1.05 else 'NOT met'}")
    print(f"check: maps identical pixel for pixel: {'met' if all(r[4] for r in rows) else 'NOT met'}; engine modules "
          f"in QGIS's process after the runs: {sorted(set(sum((r[5] for r in rows), []))) or 'none'}")


if __name__ == "__main__":
    main()
