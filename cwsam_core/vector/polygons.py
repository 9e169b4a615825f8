"""Polygon training labels: a layer of labelled polygons read onto an image's grid, window by window.

Same interface as :class:`cwsam_core.training.datasets.RasterLabels`, so training and evaluation take either.
The layer (GeoPackage, Shapefile, GeoJSON, anything GDAL reads) is read once with pyogrio; its
polygons are repaired, clipped to the image, reprojected to the image CRS and kept in an STRtree.
Each window then rasterises only the polygons whose envelope meets it (pixel-centre rule).

Matching a feature to a class (``class_field``):

- integer fields, and real fields holding whole numbers, match ``ClassInfo.value``;
- text fields match ``ClassInfo.name`` (both stripped of surrounding spaces, case-sensitive); a text
  that no name matches but that reads as an integer ("3") matches that ``ClassInfo.value``.

Features whose value matches no class are left out of the labels and reported by ``stats().unnamed``;
so are pixels where polygons of different classes overlap (``stats().conflict``): such pixels are
ambiguous and get ``IGNORE_INDEX``. :func:`polygon_classes` lists the classes of a field in a form that
maps every feature when fed back.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
import rasterio.errors
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..common.card import ClassInfo, default_color
from ..common.labels import IGNORE_INDEX, LabelStats
from ..errors import TrainingDataError
from ..raster.windows import clip_window

with warnings.catch_warnings():
    # pyogrio imports Debian's pyproj when present, which warns about its own data directory; pyogrio
    # (its bundled GDAL and PROJ) never uses it here.
    warnings.simplefilter("ignore", UserWarning)
    import pyogrio
    import pyogrio.errors
    from pyogrio.raw import read as read_vector

LOG = logging.getLogger("cwsam")

MAX_CLASS_VALUE = 254  # 255 is IGNORE_INDEX and the class raster's nodata
_POLYGON, _MULTIPOLYGON, _COLLECTION = 3, 6, 7  # shapely type ids
_TYPE_NAMES = ["Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon",
               "GeometryCollection"]
_SEGMENT_PIXELS = 8.0  # densify reprojected edges to at most this many image pixels (edges curve)


@dataclass
class PolygonLabelStats(LabelStats):
    """Label statistics of a polygon layer; ``unnamed`` keys are field values (int or text)."""

    conflict: int = 0  # pixels covered by polygons of different classes (ignored)


@dataclass
class _Layer:
    """The usable features of a polygon layer, in its own CRS."""

    name: str
    crs: Optional[CRS]
    fids: np.ndarray  # (N,) feature ids
    geometries: np.ndarray  # (N,) valid Polygon / MultiPolygon
    keys: List[Any]  # (N,) class field value: int (number fields) or stripped str (text fields)
    text: bool
    repaired: List[int]  # fids of invalid geometries repaired
    skipped: Dict[str, List[int]]  # reason -> fids of features dropped


def polygon_classes(path: Path | str, class_field: str, layer: Optional[str] = None) -> List[ClassInfo]:
    """The classes found in ``class_field`` of a polygon layer, for when the user gives none.

    Integer fields: one class per distinct value (sorted), named "class V". Text fields: values
    0..K-1 in sorted order of the distinct names, named by the text. Colours from the default palette.
    """
    source = _read_layer(Path(path), class_field, layer)
    distinct = sorted(set(source.keys))
    if source.text:
        if len(distinct) > MAX_CLASS_VALUE + 1:
            raise TrainingDataError(
                f"{Path(path).name}: field {class_field!r} holds {len(distinct)} distinct names, more than the "
                f"{MAX_CLASS_VALUE + 1} classes a model can have; merge some, or choose another field"
            )
        return [ClassInfo(i, name, default_color(i)) for i, name in enumerate(distinct)]
    return [ClassInfo(value, f"class {value}", default_color(i)) for i, value in enumerate(distinct)]


def unmatched_values(path: Path | str, class_field: str, classes: Sequence[ClassInfo],
                     layer: Optional[str] = None) -> List[Any]:
    """The distinct values of ``class_field`` that match none of ``classes`` (sorted; empty when all do)."""
    source = _read_layer(Path(path), class_field, layer)
    match = _class_matcher(classes, source.text)
    return sorted({k for k in source.keys if match(k) < 0})


class PolygonLabels:
    """A polygon layer of class labels, read onto an image's grid window by window."""

    def __init__(self, path: Path | str, image: rasterio.io.DatasetReader, class_field: str,
                 classes: Sequence[ClassInfo], layer: Optional[str] = None) -> None:
        self.path = Path(path)
        source = _read_layer(self.path, class_field, layer)
        self.layer = source.name
        self.num_classes = len(classes)
        self._transform: Affine = image.transform
        self._height, self._width = image.height, image.width
        self.repaired = len(source.repaired)

        match = _class_matcher(classes, source.text)
        index = np.array([match(k) for k in source.keys], dtype=np.int64)
        named = index >= 0
        skipped = dict(source.skipped)
        if (~named).any():
            skipped["class not in the class list"] = source.fids[~named].tolist()
        if not named.any():
            found = ", ".join(repr(k) for k in sorted(set(source.keys))[:20])
            listed = ", ".join(f"{c.value}:{c.name}" for c in classes)
            raise TrainingDataError(
                f"{self.path.name}: no value of field {class_field!r} ({found}) matches the classes ({listed}); "
                "give the classes the field holds (values for number fields, names for text fields)"
            )

        image_crs = image.crs if image.crs else None
        if image_crs is None and source.crs is not None:
            raise TrainingDataError(
                f"the image has no CRS but {self.path.name} is in {_crs_name(source.crs)}: give the image file a CRS "
                "(QGIS: Raster > Projections > Assign Projection; GDAL: gdal_edit.py -a_srs), or save the polygons "
                "without a CRS, in the image's own coordinates"
            )
        if source.crs is None and image_crs is not None:
            raise TrainingDataError(
                f"{self.path.name} has no CRS but the image is in {_crs_name(image_crs)}: set the CRS the polygons "
                "were drawn in (QGIS: right-click the layer > Layer CRS > Set Layer CRS) and save them again "
                "(Export > Save Features As, e.g. GeoPackage)"
            )
        reproject = source.crs is not None and image_crs is not None and source.crs != image_crs
        footprint = _footprint(self._transform, self._width, self._height)
        geometries, failed = _onto_image(source.geometries, source.crs if reproject else None, image_crs,
                                         footprint, self._width, self._height)
        if failed.any():
            skipped["could not be reprojected"] = source.fids[failed].tolist()
        self.skipped = sum(len(v) for v in skipped.values())
        _log_dropped(self.path.name, source.repaired, skipped)

        present = ~shapely.is_missing(geometries)
        overlaps = present & named & shapely.intersects(geometries, shapely.box(*footprint))
        if not overlaps.any():
            raise TrainingDataError(self._no_overlap_message(source, named, footprint, image_crs))
        keep = present & named
        self._labelled = _Shapes(geometries[keep])
        self._class_of = index[keep]
        keep_unnamed = present & ~named
        self._unnamed = _Shapes(geometries[keep_unnamed])
        self._unnamed_keys = [k for k, u in zip(source.keys, keep_unnamed) if u]

    def read(self, window: Window) -> np.ndarray:
        """(h, w) int64 class indexes for an image window; ``IGNORE_INDEX`` outside polygons, in
        overlaps of different classes and outside the image."""
        shape, part = clip_window(window, self._height, self._width)
        labels = np.full(shape, IGNORE_INDEX, dtype=np.int64)
        if part is not None:
            labels[part.rows, part.cols] = self._rasterize(part.inside)[0]
        return labels

    def stats(self, block: int = 1024) -> PolygonLabelStats:
        """Pixel counts over the whole image, rasterised block by block."""
        class_pixels = np.zeros(self.num_classes, dtype=np.int64)
        unnamed: Dict[Any, int] = {}
        conflict = 0
        for row in range(0, self._height, block):
            for col in range(0, self._width, block):
                window = Window(col, row, min(block, self._width - col), min(block, self._height - row))
                labels, overlap = self._rasterize(window)
                class_pixels += np.bincount(labels[labels != IGNORE_INDEX], minlength=self.num_classes)
                conflict += int(overlap.sum())
                for key, count in self._unnamed_pixels(window).items():
                    unnamed[key] = unnamed.get(key, 0) + count
        if conflict:
            LOG.warning("%s: %d pixels lie where polygons of different classes overlap; they are ignored",
                        self.path.name, conflict)
        return PolygonLabelStats(class_pixels, unnamed, conflict)

    def close(self) -> None:
        """Release the geometries (nothing is held open: the layer was read at construction)."""
        self._labelled = self._unnamed = _Shapes(np.empty(0, dtype=object))
        self._class_of, self._unnamed_keys = np.empty(0, dtype=np.int64), []

    def _rasterize(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """Class indexes (h, w) of a window inside the image, and the mask of conflicting pixels."""
        height, width = int(window.height), int(window.width)
        transform = rasterio.windows.transform(window, self._transform)
        labels = np.full((height, width), IGNORE_INDEX, dtype=np.int64)
        covered = np.zeros((height, width), dtype=np.uint8)  # how many classes claim each pixel
        hits = self._labelled.query(transform, width, height)
        for index in np.unique(self._class_of[hits]):
            mask = self._labelled.burn(hits[self._class_of[hits] == index], transform, height, width)
            labels[mask] = index
            covered += mask
        conflict = covered > 1
        labels[conflict] = IGNORE_INDEX
        return labels, conflict

    def _unnamed_pixels(self, window: Window) -> Dict[Any, int]:
        """Pixels per field value of the features matching no class, in a window inside the image."""
        height, width = int(window.height), int(window.width)
        transform = rasterio.windows.transform(window, self._transform)
        counts: Dict[Any, int] = {}
        by_key: Dict[Any, List[int]] = {}
        for i in self._unnamed.query(transform, width, height):
            by_key.setdefault(self._unnamed_keys[i], []).append(i)
        for key, members in by_key.items():
            pixels = int(self._unnamed.burn(members, transform, height, width).sum())
            if pixels:
                counts[key] = pixels
        return counts

    def _no_overlap_message(self, source: _Layer, named: np.ndarray, footprint: Tuple[float, float, float, float],
                            image_crs: Optional[CRS]) -> str:
        extent = shapely.total_bounds(source.geometries[named])
        where = _crs_name(image_crs) if image_crs is not None else "the image's coordinates"
        if image_crs is not None and source.crs is not None and source.crs != image_crs:
            try:
                extent = transform_bounds(source.crs, image_crs, *extent, densify_pts=21)
            except rasterio.errors.RasterioError:
                where = f"{_crs_name(source.crs)} for the polygons, {where} for the image"
        return (
            f"no polygon of {self.path.name} with a listed class overlaps the image: the polygons span "
            f"{_fmt_bounds(extent)}, the image {_fmt_bounds(footprint)} ({where}); give polygons drawn on this "
            "image, or check the layer's CRS"
        )


def _read_layer(path: Path, class_field: str, layer: Optional[str]) -> _Layer:
    """Read the polygons and class values of one layer, repairing or dropping bad features."""
    name = _choose_layer(path, layer)
    info = pyogrio.read_info(path, layer=name)
    fields = [str(f) for f in info["fields"]]
    if class_field not in fields:
        hint = [f for f in fields if f.lower() == class_field.lower()]
        raise TrainingDataError(
            f"{path.name}: layer {name!r} has no field {class_field!r}"
            + (f" (did you mean {hint[0]!r}? names are case-sensitive)" if hint else "")
            + f"; its fields: {', '.join(fields) or 'none'}"
        )
    dtype = str(info["dtypes"][fields.index(class_field)])
    text = dtype == "object"
    if not text and _dtype_kind(dtype) not in "iubf":
        raise TrainingDataError(f"{path.name}: field {class_field!r} is a {dtype} field; choose an integer or text "
                                f"field of class values or names (fields: {', '.join(fields)})")
    meta, fids, wkb, (raw,) = read_vector(path, layer=name, columns=[class_field], return_fids=True, force_2d=True)
    if len(wkb) == 0:
        raise TrainingDataError(f"{path.name}: layer {name!r} has no features; draw labelled polygons in it")
    keys = _field_keys(raw, text)
    if all(k is None for k in keys):
        raise TrainingDataError(f"{path.name}: field {class_field!r} of layer {name!r} is empty in every feature; "
                                f"fill it in, or choose another field (fields: {', '.join(fields)})")
    crs = _layer_crs(meta.get("crs"), path)

    fids = np.asarray(fids)
    geometries = shapely.from_wkb(wkb, on_invalid="ignore")  # None: null or unreadable (e.g. curved)
    type_ids = shapely.get_type_id(geometries)
    present = (type_ids >= 0) & ~shapely.is_empty(geometries)
    reasons = np.full(len(geometries), "", dtype=object)  # why each feature is dropped; "" when kept
    reasons[type_ids < 0] = "no (readable) geometry"
    reasons[(type_ids >= 0) & ~present] = "empty geometry"
    collections = np.flatnonzero(present & (type_ids == _COLLECTION))
    geometries[collections] = _objects(_polygonal(g) for g in geometries[collections])
    polygonal = present & ~shapely.is_missing(geometries) & np.isin(type_ids, (_POLYGON, _MULTIPOLYGON, _COLLECTION))
    if not polygonal.any():
        found = Counter(_TYPE_NAMES[t] for t in type_ids[present])
        kinds = ", ".join(f"{n} {t}" for t, n in found.most_common()) or "no geometries"
        raise TrainingDataError(f"{path.name}: layer {name!r} holds no polygons (found {kinds}); label with "
                                "polygons (e.g. QGIS Buffer turns points or lines into polygons)")
    reasons[present & ~polygonal] = "not a polygon"
    invalid = np.flatnonzero(polygonal & ~shapely.is_valid(geometries))
    geometries[invalid] = _objects(_polygonal(g) for g in shapely.make_valid(geometries[invalid]))
    unrepairable = invalid[shapely.is_missing(geometries[invalid])]
    reasons[unrepairable] = "invalid geometry that could not be repaired"
    repaired = fids[np.setdiff1d(invalid, unrepairable)].tolist()
    no_value = np.array([k is None for k in keys], dtype=bool)
    reasons[(reasons == "") & no_value] = "no class value"
    usable = reasons == ""
    skipped = {str(r): fids[reasons == r].tolist() for r in dict.fromkeys(reasons[~usable])}
    if not usable.any():
        raise TrainingDataError(f"{path.name}: no polygon of layer {name!r} has a value in field {class_field!r}; "
                                "fill in the field for the polygons to train on")
    keys = [k for k, u in zip(keys, usable) if u]
    if not text:
        _check_values(keys, path, class_field)
        keys = [int(k) for k in keys]
    return _Layer(name, crs, fids[usable], geometries[usable], keys, text, repaired, skipped)


def _choose_layer(path: Path, layer: Optional[str]) -> str:
    """The layer to read: ``layer`` when given, else the file's only polygon (or only spatial) layer."""
    if not path.exists():
        raise TrainingDataError(f"polygon file not found: {path}")
    try:
        layers = pyogrio.list_layers(path)
    except pyogrio.errors.DataSourceError:
        raise TrainingDataError(f"{path} is not a vector file that GDAL can read; give a GeoPackage, Shapefile "
                                "or GeoJSON of labelled polygons") from None
    names = [str(n) for n, _ in layers]
    if layer is not None:
        if layer not in names:
            raise TrainingDataError(f"{path.name} has no layer {layer!r}; its layers: {', '.join(names) or 'none'}")
        return layer
    spatial = [str(n) for n, kind in layers if kind is not None]
    polygonal = [str(n) for n, kind in layers if kind is not None and ("Polygon" in kind or kind in ("Unknown",
                                                                                                    "Geometry"))]
    for candidates in (polygonal, spatial):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise TrainingDataError(f"{path.name} holds several layers ({', '.join(candidates)}); "
                                    "name the one with the labelled polygons")
    raise TrainingDataError(f"{path.name} holds no layer with geometries (layers: {', '.join(names) or 'none'}); "
                            "give a layer of labelled polygons")


def _dtype_kind(dtype: str) -> str:
    try:
        return np.dtype(dtype).kind
    except TypeError:  # GDAL list fields ("list(int32)")
        return "?"


def _field_keys(raw: np.ndarray, text: bool) -> List[Any]:
    """Per feature: the stripped text (text fields) or the number (others); None when null or blank."""
    if text:
        stripped = [str(v).strip() if v is not None else "" for v in raw]
        return [s or None for s in stripped]
    values = raw.astype(np.float64)  # pyogrio gives integer fields with nulls as floats with NaN
    return [None if np.isnan(v) else float(v) for v in values]


def _check_values(keys: List[float], path: Path, class_field: str) -> None:
    """Class values of number fields must be whole numbers in 0..254."""
    values = np.asarray(keys, dtype=np.float64)
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise TrainingDataError(f"{path.name}: field {class_field!r} holds {fractional[0]:g}, not a whole number; "
                                f"class values must be whole numbers in 0..{MAX_CLASS_VALUE} (or use a text field "
                                "of class names)")
    outside = np.unique(values[(values < 0) | (values > MAX_CLASS_VALUE)])
    if outside.size:
        shown = ", ".join(f"{v:g}" for v in outside[:10])
        raise TrainingDataError(f"{path.name}: field {class_field!r} holds values outside 0..{MAX_CLASS_VALUE} "
                                f"({shown}); renumber the classes into 0..{MAX_CLASS_VALUE} (255 marks unlabelled)")


def _layer_crs(crs: Optional[str], path: Path) -> Optional[CRS]:
    if not crs:
        return None
    try:
        return CRS.from_user_input(crs)
    except rasterio.errors.CRSError:
        raise TrainingDataError(f"{path.name}: its CRS cannot be read ({crs[:80]}); save the layer in a standard "
                                "CRS (e.g. an EPSG code)") from None


def _polygonal(geometry: shapely.Geometry) -> Optional[shapely.Geometry]:
    """The polygonal part of a geometry (lines and points of collections dropped), None if none."""
    type_id = shapely.get_type_id(geometry)
    if type_id in (_POLYGON, _MULTIPOLYGON):
        return None if geometry.is_empty else geometry
    if type_id != _COLLECTION:
        return None
    parts = [p for p in shapely.get_parts(geometry) if shapely.get_type_id(p) in (_POLYGON, _MULTIPOLYGON)]
    parts = [q for p in parts for q in ([p] if shapely.get_type_id(p) == _POLYGON else shapely.get_parts(p))]
    parts = [p for p in parts if not p.is_empty]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _objects(items) -> np.ndarray:
    """A 1-D object array of geometries (or None), without numpy looking inside them."""
    items = list(items)
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _class_matcher(classes: Sequence[ClassInfo], text: bool):
    """A function from a field key to a class index (-1 when no class matches)."""
    by_value = {int(c.value): i for i, c in enumerate(classes)}
    by_name = {str(c.name).strip(): i for i, c in enumerate(classes)}

    def match(key: Any) -> int:
        if not text:
            return by_value.get(int(key), -1)
        if key in by_name:
            return by_name[key]
        try:
            return by_value.get(int(key), -1)
        except ValueError:
            return -1

    return match


def _onto_image(geometries: np.ndarray, source_crs: Optional[CRS], image_crs: Optional[CRS],
                footprint: Tuple[float, float, float, float], width: int,
                height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Geometries clipped near the image and put in its CRS (None where outside), and the failures.

    ``source_crs`` is None when no reprojection is needed. Clipping to a margin around the image's
    footprint (in the layer's CRS) keeps huge polygons cheap and far-off ones out of reach of
    projections that fail there; reprojected edges are densified first, since they curve.
    """
    out = np.full(len(geometries), None, dtype=object)
    failed = np.zeros(len(geometries), dtype=bool)
    area = footprint
    if source_crs is not None:
        try:
            area = transform_bounds(image_crs, source_crs, *footprint, densify_pts=21)
        except rasterio.errors.RasterioError:
            area = None
    if area is not None and all(np.isfinite(area)):
        pixel = min((area[2] - area[0]) / width, (area[3] - area[1]) / height)
        pad = 0.05 * max(area[2] - area[0], area[3] - area[1]) + 2 * pixel
        clip = shapely.box(area[0] - pad, area[1] - pad, area[2] + pad, area[3] + pad)
        near = shapely.intersects(clip, geometries)
        inside = shapely.contains_properly(clip, geometries)
        cut = near & ~inside
        out[inside] = geometries[inside]
        out[cut] = _objects(_polygonal(g) for g in shapely.intersection(geometries[cut], clip))
        if source_crs is not None:
            out = shapely.segmentize(out, _SEGMENT_PIXELS * pixel)
    else:
        out[:] = geometries
    if source_crs is None:
        return out, failed
    present = np.flatnonzero(~shapely.is_missing(out))
    try:
        out[present] = shapely.transform(out[present], lambda xy: _reproject(xy, source_crs, image_crs))
    except rasterio.errors.RasterioError:  # some vertex lies outside a projection's domain: one by one
        for i in present:
            try:
                out[i] = shapely.transform(out[i], lambda xy: _reproject(xy, source_crs, image_crs))
            except rasterio.errors.RasterioError:
                out[i], failed[i] = None, True
    bounds = shapely.bounds(out[present])
    broken = present[~np.isfinite(bounds).all(axis=1)]
    out[broken], failed[broken] = None, True
    invalid = np.flatnonzero(~shapely.is_missing(out) & ~shapely.is_valid(out))
    for i in invalid:  # reprojection can fold thin polygons; repair quietly
        out[i] = _polygonal(shapely.make_valid(out[i]))
    return out, failed


def _reproject(xy: np.ndarray, source_crs: CRS, image_crs: CRS) -> np.ndarray:
    xs, ys = transform_points(source_crs, image_crs, xy[:, 0], xy[:, 1])
    return np.column_stack([np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)])


class _Shapes:
    """Polygons in the image CRS, found by envelope (STRtree) and burnt onto pixel grids.

    Coordinates are kept as flat arrays (shapely's ragged layout): GeoJSON-like shapes built from
    array slices reach GDAL about twice as fast as shapely's ``__geo_interface__``.
    """

    def __init__(self, geometries: np.ndarray) -> None:
        self.tree = shapely.STRtree(geometries)
        self.coords = np.empty((0, 2))
        self.rings = self.parts = self.shapes = np.zeros(1, dtype=np.int64)  # offsets
        if len(geometries):
            kind, self.coords, offsets = shapely.to_ragged_array(geometries)
            if kind == shapely.GeometryType.POLYGON:  # every shape is one part
                offsets = (*offsets, np.arange(len(geometries) + 1))
            self.rings, self.parts, self.shapes = offsets

    def query(self, transform: Affine, width: int, height: int) -> np.ndarray:
        """Indexes of the shapes whose envelope meets a (height, width) grid with ``transform``."""
        return self.tree.query(shapely.box(*_footprint(transform, width, height)))

    def burn(self, indexes: Sequence[int], transform: Affine, height: int, width: int) -> np.ndarray:
        """(height, width) bool: pixel centres inside any of the shapes (GDAL, all_touched=False)."""
        return rasterize(((self._shape(i), 1) for i in indexes), out_shape=(height, width), transform=transform,
                         fill=0, dtype="uint8", all_touched=False).astype(bool)

    def _shape(self, index: int) -> Dict[str, Any]:
        parts = range(self.shapes[index], self.shapes[index + 1])
        return {"type": "MultiPolygon", "coordinates": [
            [self.coords[self.rings[r]:self.rings[r + 1]].tolist() for r in range(self.parts[p], self.parts[p + 1])]
            for p in parts
        ]}


def _footprint(transform: Affine, width: float, height: float) -> Tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a grid's corners (any affine, rotated or flipped)."""
    corners = [transform * (c, r) for c, r in ((0, 0), (width, 0), (width, height), (0, height))]
    xs, ys = zip(*corners)
    return min(xs), min(ys), max(xs), max(ys)


def _crs_name(crs: CRS) -> str:
    authority = crs.to_authority()
    return ":".join(authority) if authority else crs.to_wkt()[:60] + "..."


def _fmt_bounds(bounds: Sequence[float]) -> str:
    x0, y0, x1, y1 = bounds
    return f"x {x0:.8g}..{x1:.8g}, y {y0:.8g}..{y1:.8g}"


def _log_dropped(name: str, repaired: List[int], skipped: Dict[str, List[int]]) -> None:
    if repaired:
        LOG.warning("%s: repaired %d invalid polygon(s) (fids %s)", name, len(repaired), _fids(repaired))
    if skipped:
        total = sum(len(v) for v in skipped.values())
        detail = "; ".join(f"{len(v)} {reason} (fids {_fids(v)})" for reason, v in skipped.items())
        LOG.warning("%s: skipped %d feature(s): %s", name, total, detail)


def _fids(fids: Sequence[int], shown: int = 8) -> str:
    head = ", ".join(str(f) for f in list(fids)[:shown])
    return head + (", ..." if len(fids) > shown else "")
