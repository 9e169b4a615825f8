"""Change between two dates: the from -> to transitions of two class maps.

AFTER is read on BEFORE's grid (nearest neighbour, any CRS) over the part they share, strip by strip, so memory
does not follow the maps' size. Classes meet by name where both maps name them (``raster.class_names``): other
numbers are renumbered, names BEFORE lacks refused. Nodata in either map is nodata in the result. The
transition raster holds 0 where the class stayed and one value per from -> to pair that occurs (category names
"forest → urban", coloured as the class it became); a CSV table and a run record go beside it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from .. import __version__
from ..common.card import ClassInfo, default_color
from ..common.classes import match_classes_by_name
from ..common.paths import PathLike, output_file_problem
from ..errors import ChangeCancelled, ChangeError
from ..raster.class_names import read_class_list
from ..raster.output import category_names_aux_xml, colormap, publish, qml_text, remove_quietly, sidecars
from .inference import classify_file, pixel_areas

LOG = logging.getLogger("cwsam")

UNCHANGED = 0
UNCHANGED_COLOUR = "#d9d9d9"
ARROW = "\u2192"


@dataclass
class Transition:
    """One from -> to pair that occurs: its value in the transition raster, pixels and area (``area_unit``)."""

    value: int
    before: str
    after: str
    pixels: int
    area: float


@dataclass
class ChangeResult:
    """What ``compare_class_maps`` wrote and found; areas in ``area_unit`` (m2, or pixels without a CRS)."""

    output: Path
    table: Path
    record: Path
    transitions: List[Transition]
    unchanged_pixels: int
    unchanged_area: float
    area_unit: str
    notes: List[str] = field(default_factory=list)

    def hectares(self, area: float) -> Optional[float]:
        return area / 1e4 if self.area_unit == "m2" else None


def change_files(output: PathLike) -> List[Path]:
    """The transition raster and what is written beside it (sidecars, table, run record)."""
    output = Path(output)
    return [output, *sidecars(output).values(), table_path(output), output.with_suffix(".run.json")]


def table_path(output: PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.stem + "_transitions.csv")


def _class_map(path: Path, what: str) -> rasterio.io.DatasetReader:
    try:
        dataset = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise ChangeError(f"{what} {path} is not a raster GDAL can read ({exc})") from None
    if dataset.count != 1 or np.dtype(dataset.dtypes[0]).kind not in "iu":
        shape = f"{dataset.count} bands" if dataset.count != 1 else f"{dataset.dtypes[0]} values"
        dataset.close()
        raise ChangeError(f"{what} {path.name} is not a class map ({shape}): give class maps of one band of "
                          "class values (cwsam classify writes them), or SAR scenes of both dates with --model")
    return dataset


def _overlap(before: rasterio.io.DatasetReader, after: rasterio.io.DatasetReader) -> Window:
    """BEFORE's window over the part AFTER covers too (``ChangeError`` when they share nothing)."""
    if (before.crs is None) != (after.crs is None):
        raise ChangeError("one map has a CRS and the other none: give both a CRS (QGIS: Assign Projection)")
    bounds = after.bounds if before.crs is None or before.crs == after.crs else transform_bounds(
        after.crs, before.crs, *after.bounds, densify_pts=21)
    left, bottom = max(before.bounds.left, bounds[0]), max(before.bounds.bottom, bounds[1])
    right, top = min(before.bounds.right, bounds[2]), min(before.bounds.top, bounds[3])
    if right <= left or top <= bottom:
        raise ChangeError(f"{Path(before.name).name} and {Path(after.name).name} do not overlap: nothing was "
                          "written; give two maps of the same place")
    window = from_bounds(left, bottom, right, top, before.transform).round_offsets().round_lengths()
    window = window.intersection(Window(0, 0, before.width, before.height))
    if window.width < 1 or window.height < 1:
        raise ChangeError(f"{Path(before.name).name} and {Path(after.name).name} share less than a pixel: "
                          "nothing was written")
    return window


def _strips(window: Window, rows: int) -> Iterator[Window]:
    for row in range(int(window.row_off), int(window.row_off + window.height), rows):
        yield Window(window.col_off, row, window.width, min(rows, int(window.row_off + window.height) - row))


def compare_dates(before: PathLike, after: PathLike, output: PathLike, model: Optional[PathLike] = None,
                  sam_checkpoint: Optional[PathLike] = None, device: str = "auto",
                  progress: Optional[Callable[[float, str], None]] = None,
                  should_cancel: Optional[Callable[[], bool]] = None) -> ChangeResult:
    """:func:`compare_class_maps` of two class maps, or of two SAR scenes classified first with ``model`` (the
    same model for both dates, each scene on its own grid, into a temporary folder)."""
    if model is None:
        return compare_class_maps(before, after, output, progress=progress, should_cancel=should_cancel)
    problem = output_file_problem(output, "transition raster", "change.tif")
    if problem:  # before any classification
        raise ChangeError(problem)
    share = (lambda start: None if progress is None else
             (lambda fraction, message: progress(start + 0.4 * fraction, message)))
    with tempfile.TemporaryDirectory(prefix="cwsam-change-") as folder:
        maps = [classify_file(scene, Path(folder) / f"{what}.tif", model, sam_checkpoint=sam_checkpoint,
                              device=device, progress=share(0.4 * index), should_cancel=should_cancel).output
                for index, (what, scene) in enumerate((("before", before), ("after", after)))]
        final = None if progress is None else (lambda fraction, message: progress(0.8 + 0.2 * fraction, message))
        return compare_class_maps(*maps, output, progress=final, should_cancel=should_cancel,
                                  sources={"before": str(Path(before).resolve()), "after": str(Path(after).resolve()),
                                           "model": str(Path(model).resolve())})


STRIP_PIXELS = 2 ** 21  # pixels read a strip: a few tens of MB of working arrays whatever the maps' size
CACHE_MB = 128


def compare_class_maps(before_path: PathLike, after_path: PathLike, output: PathLike, rows: Optional[int] = None,
                       progress: Optional[Callable[[float, str], None]] = None,
                       should_cancel: Optional[Callable[[], bool]] = None,
                       sources: Optional[dict] = None) -> ChangeResult:
    """Write the transition raster of ``before_path`` -> ``after_path`` at ``output`` (with its table and run
    record), reading both maps strip by strip over their overlap; ``ChangeError`` before any work when they
    cannot be compared, ``ChangeCancelled`` (nothing left) when ``should_cancel`` says so. ``sources``: what the
    run record names as the inputs when the maps are intermediate (SAR scenes and their model)."""
    before_path, after_path, output = Path(before_path), Path(after_path), Path(output)
    problem = output_file_problem(output, "transition raster", "change.tif")
    if problem:
        raise ChangeError(problem)
    notes: List[str] = []
    record = output.with_suffix(".run.json")
    targets = [output, *sidecars(output).values(), table_path(output), record]
    temporaries = {t: t.with_name(f".{t.name}.{os.getpid()}.partial") for t in targets}
    # GDAL's block cache (by default a share of the machine's memory) is what would grow with the maps.
    with ExitStack() as stack:
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=CACHE_MB))
        before = stack.enter_context(_class_map(before_path, "BEFORE"))
        after = stack.enter_context(_class_map(after_path, "AFTER"))
        window = _overlap(before, after)
        before_classes, after_classes = read_class_list(before_path), read_class_list(after_path)
        lookup = np.arange(65536, dtype=np.int64)  # AFTER's values as BEFORE's
        if before_classes and after_classes:
            match = match_classes_by_name(before_classes, {c.value: c.name for c in after_classes},
                                          f"AFTER {after_path.name}", sides=("AFTER", "BEFORE"), ignorable=False)
            for value, mapped in (match.renumber or {}).items():
                lookup[value] = mapped
            if match.note:
                notes.append(match.note)
        else:
            unnamed = [p.name for p, c in ((before_path, before_classes), (after_path, after_classes)) if not c]
            notes.append(f"{' and '.join(unnamed)} name no classes: the maps are compared by class value")
        names = {c.value: c.name for c in before_classes}
        colours = {c.value: c.color for c in before_classes}
        name = lambda value: names.get(value, f"class {value}")  # noqa: E731
        reader = after
        if (after.crs, after.transform, after.shape) != (before.crs, before.transform, before.shape):
            reader = stack.enter_context(WarpedVRT(
                after, crs=before.crs, transform=before.transform, width=before.width, height=before.height,
                resampling=rasterio.enums.Resampling.nearest,
                nodata=after.nodata if after.nodata is not None else 65535))
        strips = list(_strips(window, rows or max(1, min(512, STRIP_PIXELS // int(window.width)))))
        pairs, unchanged_pixels, unchanged_area, area_unit = _count_pairs(before, reader, lookup, strips, progress,
                                                                          should_cancel)
        ordered = sorted(pairs)  # a pair's code is its position + 1
        if len(ordered) >= 65535:
            raise ChangeError(f"{len(ordered):,} different transitions: the maps hold too many class values")
        codes = {pair: index + 1 for index, pair in enumerate(ordered)}
        sorted_keys = np.array([b * 65536 + a for b, a in ordered], dtype=np.int64)
        dtype, nodata = ("uint8", 255) if len(codes) < 255 else ("uint16", 65535)
        transitions = [ClassInfo(UNCHANGED, "no change", UNCHANGED_COLOUR)] + [
            ClassInfo(code, f"{name(b)} {ARROW} {name(a)}", colours.get(a, default_color(code)))
            for (b, a), code in codes.items()]
        profile = {**before.profile, "driver": "GTiff", "dtype": dtype, "nodata": nodata, "count": 1,
                   "width": int(window.width), "height": int(window.height),
                   "transform": before.window_transform(window), "compress": "deflate", "tiled": True,
                   "blockxsize": 256, "blockysize": 256}
        try:
            with rasterio.open(temporaries[output], "w", **profile) as out:
                for done, strip in enumerate(strips):
                    if should_cancel is not None and should_cancel():
                        raise ChangeCancelled("comparison cancelled; nothing was written")
                    b, a, valid = _read(before, reader, lookup, strip)
                    values = np.full(b.shape, nodata, dtype=dtype)
                    values[valid & (b == a)] = UNCHANGED
                    changed = valid & (b != a)
                    values[changed] = np.searchsorted(sorted_keys, b[changed] * 65536 + a[changed]) + 1
                    out.write(values, 1, window=Window(0, strip.row_off - window.row_off, strip.width,
                                                       strip.height))
                    if progress is not None:
                        progress(0.5 + 0.5 * (done + 1) / len(strips), "writing the transitions")
                if dtype == "uint8":
                    out.write_colormap(1, colormap(transitions))
            rows_out = [Transition(codes[pair], name(pair[0]), name(pair[1]), count, area)
                        for pair, (count, area) in sorted(pairs.items(), key=lambda item: -item[1][0])]
            result = ChangeResult(output, table_path(output), record, rows_out, unchanged_pixels, unchanged_area,
                                  area_unit, notes)
            temporaries[sidecars(output)["aux"]].write_text(category_names_aux_xml(transitions))
            temporaries[sidecars(output)["qml"]].write_text(qml_text(transitions))
            _write_table(temporaries[table_path(output)], result)
            temporaries[record].write_text(json.dumps({
                "cwsam_version": __version__, "command": "change", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(sources or {"before": str(before_path.resolve()), "after": str(after_path.resolve())}),
                "outputs": {"transitions": str(output), "table": str(result.table)}, "notes": notes,
                "unchanged_pixels": unchanged_pixels, "area_unit": area_unit,
                "transitions": [t.__dict__ for t in rows_out]}, indent=2))
            publish((temporaries[t], t) for t in reversed(targets))  # the transition raster last
        except BaseException:
            remove_quietly([*temporaries.values(), *(t.with_name(t.name + ".aux.xml") for t in temporaries.values())])
            raise
    for note in notes:
        LOG.warning(note)
    return result


def _read(before, reader, lookup: np.ndarray, strip: Window) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BEFORE's and AFTER's class values (AFTER's as BEFORE's) in a strip, and where both have data."""
    b = before.read(1, window=strip).astype(np.int64)
    raw = reader.read(1, window=strip).astype(np.int64)
    valid = np.ones(b.shape, dtype=bool)
    if before.nodata is not None:
        valid &= b != int(before.nodata)
    if reader.nodata is not None:
        valid &= raw != int(reader.nodata)
    valid &= (raw >= 0) & (raw <= 65535)
    a = lookup[np.clip(raw, 0, 65535)]
    return b, a, valid


def _count_pairs(before, reader, lookup: np.ndarray, strips: Sequence[Window], progress, should_cancel
                 ) -> Tuple[Dict[Tuple[int, int], List], int, float, str]:
    """(before, after) -> [pixels, area] of the changed pairs, the unchanged pixels and area, and the area's unit."""
    pairs: Dict[Tuple[int, int], List] = {}
    unchanged_pixels, unchanged_area, unit = 0, 0.0, "m2"
    for done, strip in enumerate(strips):
        if should_cancel is not None and should_cancel():
            raise ChangeCancelled("comparison cancelled; nothing was written")
        b, a, valid = _read(before, reader, lookup, strip)
        areas, unit = pixel_areas(before.transform, before.crs, int(strip.row_off), int(strip.height))
        weights = np.broadcast_to(areas[:, None], b.shape)
        same = valid & (b == a)
        unchanged_pixels += int(same.sum())
        unchanged_area += float(weights[same].sum())
        changed = valid & (b != a)
        keys, inverse = np.unique(b[changed] * 65536 + a[changed], return_inverse=True)
        counts = np.bincount(inverse, minlength=len(keys))
        sums = np.bincount(inverse, weights=weights[changed], minlength=len(keys))
        for key, count, area in zip(keys.tolist(), counts.tolist(), sums.tolist()):
            entry = pairs.setdefault((key // 65536, key % 65536), [0, 0.0])
            entry[0] += count
            entry[1] += area
        if progress is not None:
            progress(0.5 * (done + 1) / len(strips), "counting the transitions")
    return pairs, unchanged_pixels, unchanged_area, unit


def _write_table(path: Path, result: ChangeResult) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["value", "from", "to", "pixels", "hectares" if result.area_unit == "m2" else "area_pixels"])
        for t in result.transitions:
            area = result.hectares(t.area)
            writer.writerow([t.value, t.before, t.after, t.pixels, f"{area:.4f}" if area is not None else t.pixels])
        area = result.hectares(result.unchanged_area)
        writer.writerow([UNCHANGED, "(no change)", "(no change)", result.unchanged_pixels,
                         f"{area:.4f}" if area is not None else result.unchanged_pixels])
