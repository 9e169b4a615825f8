"""Make ``resources/demo/labels.gpkg``: a few training polygons per class over the demo scene, drawn the
way a user would draw them in QGIS (sparse, small, inside areas of one land cover).

The polygons come from the demo scene's reference labels (``resources/demo/reference.tif``, made by
``tools/make_demo_model.py`` with ``cwsam_core.simulate``): for each class, ``--per-class`` centres are
drawn (seeded) among the pixels whose whole neighbourhood of radius r is that class, at least
``--spacing`` pixels from every other centre, and a polygon of 5 to 7 vertices is drawn around each,
inside that neighbourhood. Classes too narrow for the first radius (streets, small towns) get the
next smaller one. One layer, ``labels``, in the scene's CRS (EPSG:32633), with one text field,
``landcover``, holding the class names (water, bare soil, cropland, forest, urban).

The file is kept small (no spatial index, small SQLite pages, a fixed timestamp) and is byte-identical
for the same arguments: ``python tools/make_demo_labels.py`` rewrites the bundled file unchanged.

Usage: .venv/bin/python tools/make_demo_labels.py [--seed 0] [--per-class 4] [--output resources/demo/labels.gpkg]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"
FIELD = "landcover"
LAYER = "labels"
RADII = (16, 12, 8, 5)  # px: the neighbourhood a polygon stays inside, largest first
FIXED_DATE = "2026-01-01T00:00:00.000Z"  # gpkg_contents.last_change: the same bytes on every run


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=DEMO / "reference.tif",
                        help="label raster of the scene (default resources/demo/reference.tif)")
    parser.add_argument("--output", type=Path, default=DEMO / "labels.gpkg")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=4, help="polygons per class (default 4)")
    parser.add_argument("--spacing", type=int, default=56, help="least distance between centres in px (default 56)")
    return parser.parse_args(argv)


def _uniform(labels: np.ndarray, value: int, radius: int) -> np.ndarray:
    """True where the (2r+1) x (2r+1) square around a pixel lies inside the raster and is all ``value``."""
    inside = (labels == value).astype(np.int32)
    total = np.pad(inside.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    side = 2 * radius + 1
    window = total[side:, side:] - total[:-side, side:] - total[side:, :-side] + total[:-side, :-side]
    full = np.zeros(labels.shape, dtype=bool)
    full[radius:labels.shape[0] - radius, radius:labels.shape[1] - radius] = window == side * side
    return full


def _polygon(row: int, col: int, radius: int, rng: np.random.Generator) -> List[Tuple[float, float]]:
    """5 to 7 vertices (col, row in pixels) around a pixel centre, inside its radius: a hand-drawn outline."""
    count = int(rng.integers(5, 8))
    step = 2 * np.pi / count
    angles = rng.uniform(0, 2 * np.pi) + step * (np.arange(count) + rng.uniform(-0.3, 0.3, count))
    radii = radius * rng.uniform(0.6, 0.95, count)
    return [(col + 0.5 + r * np.cos(a), row + 0.5 + r * np.sin(a)) for a, r in zip(angles, radii)]


def draw_polygons(labels: np.ndarray, classes: Sequence[Tuple[int, str]], per_class: int, spacing: int,
                  seed: int) -> List[Tuple[str, List[Tuple[float, float]]]]:
    """(class name, outline in pixel coordinates) for ``per_class`` polygons of each class.

    The rarest class picks first; where a class has too few places at ``spacing``, its polygons come
    closer (half, then a quarter of it) and smaller (``RADII``), as a user labelling a small town would.
    """
    rng = np.random.default_rng(seed)
    centres: List[Tuple[int, int]] = []
    drawn = []
    for value, name in sorted(classes, key=lambda c: int((labels == c[0]).sum())):
        found = 0
        for gap in (spacing, spacing // 2, spacing // 4):
            for radius in RADII:
                rows, cols = np.nonzero(_uniform(labels, value, radius))
                for k in rng.permutation(len(rows)):
                    row, col = int(rows[k]), int(cols[k])
                    if any((row - r) ** 2 + (col - c) ** 2 < max(gap, 2 * radius + 4) ** 2 for r, c in centres):
                        continue
                    centres.append((row, col))
                    drawn.append((name, _polygon(row, col, radius, rng)))
                    found += 1
                    if found == per_class:
                        break
                if found == per_class:
                    break
            if found == per_class:
                break
        if found < per_class:
            raise SystemExit(f"only {found} places found for class {name!r}: lower --spacing or --per-class")
    order = {name: i for i, (_, name) in enumerate(classes)}
    return sorted(drawn, key=lambda item: order[item[0]])  # features in class order, as listed


def write_gpkg(path: Path, polygons, transform, crs) -> None:
    """One polygon layer with the text field ``landcover``; small and reproducible."""
    import pyogrio
    from pyogrio.raw import write
    from shapely import Polygon, to_wkb

    geometries, names = [], []
    for name, outline in polygons:
        ring = [tuple(round(v, 1) for v in transform * point) for point in outline]
        geometries.append(to_wkb(Polygon(ring)))
        names.append(name)
    temporary = path.with_name(path.stem + ".partial.gpkg")
    temporary.unlink(missing_ok=True)
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_DATE})
    write(str(temporary), np.array(geometries, dtype=object), [np.array(names, dtype=object)], [FIELD],
          layer=LAYER, driver="GPKG", geometry_type="Polygon", crs=crs, layer_options={"SPATIAL_INDEX": "NO"},
          dataset_options={"VERSION": "1.2"})  # 1.2: read without a warning by the GDAL of QGIS 3.22
    db = sqlite3.connect(temporary, isolation_level=None)
    try:  # small pages: a few KB instead of about 100
        db.execute("PRAGMA page_size = 512")
        db.execute("VACUUM")
    finally:
        db.close()
    temporary.replace(path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    from cwsam_core.simulate import SIMULATED_CLASSES

    with rasterio.open(args.reference) as src:
        labels, transform, crs = src.read(1), src.transform, src.crs.to_string()  # "EPSG:32633"
    classes = [(c.value, c.name) for c in SIMULATED_CLASSES]
    polygons = draw_polygons(labels, classes, args.per_class, args.spacing, args.seed)
    write_gpkg(args.output, polygons, transform, crs)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KiB): {len(polygons)} polygons, "
          f"{args.per_class} per class, field {FIELD!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
