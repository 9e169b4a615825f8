"""Simulated dual-polarisation SAR scenes with ground truth, for tests, benchmarks and the offline demo.

A scene is a Sentinel-1 IW-like (C band, VV + VH, about 35 degrees incidence, 10 m pixels) image of
a rural landscape with five land-cover classes and its label raster:

* a patchwork of rectangular field parcels (cropland, some of them bare, ploughed or fallow),
* irregular forest stands and patches of bare / sparsely vegetated ground from thresholded low-pass
  filtered noise,
* at least one meandering river (and sometimes a lake) of open water,
* one or more towns, each a cluster of rectangular blocks on a rotated street grid.

Backscatter follows the usual multiplicative model: a per-class mean (``SIMULATED_CLASSES``) times a
smooth spatial texture with the class's standard deviation (normalised so that it keeps each
class's mean in linear power), times fully developed speckle, Gamma distributed with shape ``looks``
and mean 1, drawn independently for VV and VH. Everything is drawn from
``numpy.random.default_rng(seed)``: the same arguments give bit-identical scenes, and the land cover
and texture do not depend on ``looks``.

Only numpy and rasterio are used (no scipy, no torch), so the simulator can run anywhere the
library's raster code runs::

    scene = simulate_scene(512, 512, seed=3)
    write_scene(scene, "demo/s1.tif", "demo/labels.tif", scale="linear")
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.transform import Affine

MIN_SIZE = 16
SCALES = ("db", "linear", "amplitude")
LABEL_NODATA = 255
# Smallest linear power kept before conversion to dB (-100 dB): speckle draws can be tiny for 1 look.
_POWER_FLOOR = 1e-10


@dataclass(frozen=True)
class SimulatedClass:
    """One simulated land-cover class and its C-band backscatter.

    Attributes:
      value (int): The value written to the label raster.
      name (str): The class name.
      color (str): The display colour, "#rrggbb" (same fields as ``model_file.ClassInfo``).
      vv_db (float): Mean VV backscatter (sigma nought) in dB, taken as 10 log10 of the class's mean
        linear power.
      vh_db (float): Mean VH backscatter in dB, the same way. Always below ``vv_db``.
      texture_std_db (float): Standard deviation in dB of the spatial texture (before speckle): the
        natural variation within the class from parcel to parcel and place to place.
    """

    value: int
    name: str
    color: str
    vv_db: float
    vh_db: float
    texture_std_db: float


# Typical Sentinel-1 IW GRD sigma nought (C band, VV/VH, mid-swath incidence about 35 degrees), rounded
# to 0.5 dB: representative values, not calibration targets; real ones vary by several dB with soil
# moisture, roughness, crop stage, wind and building orientation. They sit in the ranges reported in:
#   water:     Twele et al. 2016, "Sentinel-1-based flood mapping: a fully automated processing chain",
#              Int. J. Remote Sens. 37(13) (calm open water VV below about -18 dB, VH about -25 dB and
#              lower, close to the IW noise floor once thermal noise is removed);
#   bare soil, cropland: Veloso et al. 2017, "Understanding the temporal behavior of crops using
#              Sentinel-1 and Sentinel-2-like data for agricultural applications", Remote Sens.
#              Environ. 199 (bare/early-season fields VV about -12 to -15 dB, VH about -20 to -23 dB;
#              developed crops VV about -8 to -12 dB, VH about -14 to -19 dB);
#   forest:    Dostalova et al. 2018, "Annual seasonality in Sentinel-1 signal for forest mapping and
#              forest type classification", Int. J. Remote Sens. 39(21) (VV about -7 to -8 dB, VH about
#              -12 to -14 dB, little seasonal change);
#   urban:     Abdikan et al. 2016, "Land cover mapping using Sentinel-1 SAR data", ISPRS Arch. XLI-B7
#              (built-up areas brightest, VV a few dB below 0 from double bounce, VH about -10 dB).
# Texture standard deviations are this module's choice: small for forest and water, parcel-to-parcel
# differences for fields, very heterogeneous towns.
SIMULATED_CLASSES: List[SimulatedClass] = [
    SimulatedClass(0, "water", "#1f78b4", vv_db=-20.0, vh_db=-27.0, texture_std_db=0.7),
    SimulatedClass(1, "bare soil", "#c8a064", vv_db=-13.0, vh_db=-21.0, texture_std_db=1.5),
    SimulatedClass(2, "cropland", "#f0e442", vv_db=-10.0, vh_db=-17.0, texture_std_db=1.5),
    SimulatedClass(3, "forest", "#1b7837", vv_db=-7.5, vh_db=-13.0, texture_std_db=0.8),
    SimulatedClass(4, "urban", "#d7191c", vv_db=-3.0, vh_db=-10.0, texture_std_db=3.0),
]
WATER, BARE_SOIL, CROPLAND, FOREST, URBAN = range(5)

# Seasons: the class means above are the growing season ("summer"); "winter" is a wet late-autumn or
# winter acquisition of the same landscape, each class's VV and VH shifted by the dB offsets below
# (class value -> (VV, VH)): wind-roughened water brighter, moist bare soil brighter, harvested
# fields darker (bare stubble), leaf-off forest a little darker, towns unchanged. A model trained
# on one season and applied to the other then confuses classes the way a real seasonal shift does
# (the magnitudes follow the seasonal ranges of Veloso et al. 2017 and Dostalova et al. 2018 cited above).
SEASONS = ("summer", "winter")
SEASON_SHIFTS_DB = {
    "summer": {},
    "winter": {WATER: (3.0, 2.0), BARE_SOIL: (3.5, 4.0), CROPLAND: (-3.0, -3.5), FOREST: (-0.5, -0.5)},
}


def seasonal_classes(season: str = "summer") -> List[SimulatedClass]:
    """``SIMULATED_CLASSES`` with the backscatter of ``season`` (one of ``SEASONS``)."""
    if season not in SEASON_SHIFTS_DB:
        raise ValueError(f"season must be one of {', '.join(SEASONS)}, got {season!r}")
    shifts = SEASON_SHIFTS_DB[season]
    return [replace(c, vv_db=c.vv_db + shifts.get(c.value, (0.0, 0.0))[0],
                    vh_db=c.vh_db + shifts.get(c.value, (0.0, 0.0))[1]) for c in SIMULATED_CLASSES]


@dataclass
class SimulatedScene:
    """A simulated SAR scene and its ground truth on one north-up grid.

    Attributes:
      vv_db (np.ndarray): VV backscatter in dB, speckle included, float32, H x W.
      vh_db (np.ndarray): VH backscatter in dB, speckle included, float32, H x W.
      labels (np.ndarray): Class values, uint8, H x W.
      classes (list(SimulatedClass)): The classes the values refer to.
      transform (Affine): Pixel to map coordinates, north-up, origin at the top-left corner.
      crs (str): The coordinate reference system, as given (e.g. "EPSG:32633").
      looks (float): The equivalent number of looks of the speckle.
    """

    vv_db: np.ndarray
    vh_db: np.ndarray
    labels: np.ndarray
    classes: List[SimulatedClass]
    transform: Affine
    crs: str
    looks: float

    @property
    def shape(self) -> Tuple[int, int]:
        """(H, W) of the scene."""
        return self.labels.shape  # type: ignore[return-value]


def simulate_scene(
    height: int,
    width: int,
    seed: int = 0,
    looks: float = 4.0,
    pixel_size: float = 10.0,
    crs: str = "EPSG:32633",
    origin: Tuple[float, float] = (500000.0, 4600000.0),
    season: str = "summer",
) -> SimulatedScene:
    """Simulates a VV + VH scene of a rural landscape with all of ``SIMULATED_CLASSES``.

    Arguments:
      height (int): H, number of rows, at least 16.
      width (int): W, number of columns, at least 16.
      seed (int): Seed of ``numpy.random.default_rng``; the same seed gives the same scene, and the
        land cover and texture do not depend on ``looks``.
      looks (float): Equivalent number of looks of the speckle (> 0), 1 for single-look intensity;
        Sentinel-1 IW GRD high resolution has about 4.4.
      pixel_size (float): Pixel size in map units (> 0). Shapes are drawn in pixels, sized for 10 m.
      crs (str): Coordinate reference system of the grid, anything rasterio understands.
      origin (tuple(float, float)): Map coordinates (x, y) of the top-left corner of the scene.
      season (str): "summer" (the class means of ``SIMULATED_CLASSES``) or "winter" (shifted by
        ``SEASON_SHIFTS_DB``); the same seed gives the same land cover, texture and speckle in both.

    Returns:
      (SimulatedScene): vv_db and vh_db as float32 H x W arrays in dB, labels as uint8 H x W. Every
        class appears: where the layout leaves one out (in very small scenes), a small square of it
        is added.
    """
    height = _check_size("height", height)
    width = _check_size("width", width)
    looks = _check_looks(looks)
    if not _is_real(pixel_size) or not (math.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel_size must be a positive number of map units, got {pixel_size!r}")
    try:
        x0, y0 = (float(v) for v in origin)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"origin must be the (x, y) map coordinates of the top-left corner, got {origin!r}") from exc
    try:
        CRS.from_user_input(crs)
    except CRSError as exc:
        raise ValueError(
            f"crs must be a coordinate reference system rasterio understands, such as 'EPSG:32633', got {crs!r}: {exc}"
        ) from exc

    # Independent streams, so that e.g. the layout is the same whatever the number of looks.
    layout_seed, texture_seed, speckle_seed = np.random.default_rng(seed).integers(0, 2**63 - 1, size=3)
    classes = seasonal_classes(season)
    labels, objects = _simulate_layout(height, width, np.random.default_rng(layout_seed))
    texture = _simulate_texture(labels, objects, classes, np.random.default_rng(texture_seed))
    vv_db, vh_db = render_backscatter(labels, classes, looks, np.random.default_rng(speckle_seed), texture_db=texture)
    return SimulatedScene(
        vv_db=vv_db,
        vh_db=vh_db,
        labels=labels,
        classes=classes,
        transform=Affine(float(pixel_size), 0.0, x0, 0.0, -float(pixel_size), y0),
        crs=crs,
        looks=looks,
    )


def render_backscatter(
    labels: np.ndarray,
    classes: Sequence[SimulatedClass],
    looks: float,
    rng: Union[np.random.Generator, int],
    texture_db: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Turns a label raster into speckled VV and VH backscatter (the radiometry of ``simulate_scene``).

    Each pixel's mean power is its class's mean in dB plus ``texture_db``, in linear power; it is
    multiplied by Gamma(shape=looks, scale=1/looks) speckle (mean 1, coefficient of variation
    1/sqrt(looks)), drawn independently for VV and VH, and converted back to dB.

    Arguments:
      labels (np.ndarray): Class values, integer H x W; every value must be one of ``classes``.
      classes (list(SimulatedClass)): The classes and their mean backscatter.
      looks (float): Equivalent number of looks (> 0).
      rng (np.random.Generator or int): The random generator for the speckle, or its seed.
      texture_db (np.ndarray or None): Offsets in dB added to both polarisations before speckle,
        float H x W; None for none (each class then has a uniform mean).

    Returns:
      (np.ndarray): VV backscatter in dB, float32 H x W.
      (np.ndarray): VH backscatter in dB, float32 H x W.
    """
    looks = _check_looks(looks)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D H x W array, got shape {labels.shape}")
    if texture_db is not None and np.shape(texture_db) != labels.shape:
        raise ValueError(f"texture_db must have the shape of labels {labels.shape}, got {np.shape(texture_db)}")
    rng = np.random.default_rng(rng)
    vv_table = np.full(256, np.nan)
    vh_table = np.full(256, np.nan)
    for c in classes:
        vv_table[c.value] = c.vv_db
        vh_table[c.value] = c.vh_db
    if labels.size and (labels.min() < 0 or labels.max() > 255 or np.isnan(vv_table[labels]).any()):
        known = ", ".join(str(c.value) for c in classes)
        unknown = sorted(set(np.unique(labels).tolist()) - {c.value for c in classes})
        raise ValueError(f"labels may only hold the class values {known}; found {unknown}")

    out = []
    for table in (vv_table, vh_table):
        mean_db = table[labels]
        if texture_db is not None:
            mean_db = mean_db + texture_db
        power = np.power(10.0, mean_db / 10.0) * rng.gamma(shape=looks, scale=1.0 / looks, size=labels.shape)
        out.append((10.0 * np.log10(np.maximum(power, _POWER_FLOOR))).astype(np.float32))
    return out[0], out[1]


def write_scene(
    scene: SimulatedScene,
    image_path: Union[str, os.PathLike],
    label_path: Union[str, os.PathLike],
    scale: str = "db",
    nodata: Optional[float] = None,
) -> Tuple[Path, Path]:
    """Writes a scene as a 2-band SAR GeoTIFF and a 1-band label GeoTIFF on the same grid.

    The image is float32, band 1 VV and band 2 VH (band descriptions "VV" and "VH"); the labels are
    uint8 with nodata 255 and a colour table of the classes. Both are tiled 256 x 256 and DEFLATE
    compressed; missing parent folders are created.

    Arguments:
      scene (SimulatedScene): The scene to write.
      image_path (str or Path): Where to write the SAR image.
      label_path (str or Path): Where to write the labels.
      scale (str): Radiometric scale of the image: "db" (10 log10 of power, as simulated), "linear"
        (power, 10 ** (dB / 10)) or "amplitude" (square root of power).
      nodata (float or None): The image's nodata value to record; None for none.

    Returns:
      (Path): The image path.
      (Path): The label path.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if nodata is not None and not _is_real(nodata):
        raise ValueError(f"nodata must be a number or None, got {nodata!r}")
    image_path, label_path = Path(image_path), Path(label_path)
    if image_path.resolve() == label_path.resolve():
        raise ValueError(f"image_path and label_path must differ, both are {str(image_path)!r}")

    bands = []
    for db in (scene.vv_db, scene.vh_db):
        db = db.astype(np.float64)
        if scale == "linear":
            db = np.power(10.0, db / 10.0)
        elif scale == "amplitude":
            db = np.power(10.0, db / 20.0)
        bands.append(db.astype(np.float32))
    height, width = scene.labels.shape
    common = dict(
        driver="GTiff",
        height=height,
        width=width,
        crs=CRS.from_user_input(scene.crs),
        transform=scene.transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )

    image_path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(image_path, "w", count=2, dtype="float32", nodata=nodata, **common) as dst:
        dst.write(np.stack(bands))
        dst.set_band_description(1, "VV")
        dst.set_band_description(2, "VH")
        dst.update_tags(scale=scale, looks=str(scene.looks), source="cwsam_core.simulate")

    label_path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(label_path, "w", count=1, dtype="uint8", nodata=LABEL_NODATA, **common) as dst:
        dst.write(scene.labels.astype(np.uint8), 1)
        dst.set_band_description(1, "class")
        dst.write_colormap(1, {c.value: _hex_to_rgba(c.color) for c in scene.classes})
        dst.update_tags(1, **{f"class_{c.value}": c.name for c in scene.classes})
    return image_path, label_path


# ----------------------------------------------------------------------------------------------------
# Land cover


def _simulate_layout(height: int, width: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Draws the land cover.

    Returns:
      (np.ndarray): Class values, uint8 H x W.
      (np.ndarray): Object ids, int32 H x W: field parcels and town blocks (each with its own
        backscatter offset), -1 elsewhere.
    """
    small = min(height, width)
    labels = np.full((height, width), CROPLAND, dtype=np.uint8)
    objects = np.full((height, width), -1, dtype=np.int32)

    # Field parcels, about 120 to 500 m a side at 10 m; about one in five is bare (ploughed, fallow).
    parcels = _partition(height, width, rng, min_side=max(4, min(12, small // 8)), max_side=max(8, min(48, small // 2)))
    bare = rng.random(len(parcels)) < 0.2
    bare[rng.integers(len(parcels))] = True
    for i, ((r0, r1, c0, c1), is_bare) in enumerate(zip(parcels, bare)):
        objects[r0:r1, c0:c1] = i
        if is_bare:
            labels[r0:r1, c0:c1] = BARE_SOIL
    n_objects = len(parcels)

    # Heath / sparse vegetation and forest stands: thresholded low-pass noise, corr. length ~ 200 m.
    sigma = max(2.0, min(20.0, small / 8))
    sparse = _smooth_noise((height, width), sigma, rng)
    sparse_mask = sparse > np.quantile(sparse, 1.0 - rng.uniform(0.04, 0.10))
    labels[sparse_mask] = BARE_SOIL
    objects[sparse_mask] = -1
    woods = _smooth_noise((height, width), sigma * rng.uniform(1.0, 1.6), rng)
    forest_mask = woods > np.quantile(woods, 1.0 - rng.uniform(0.15, 0.35))
    labels[forest_mask] = FOREST
    objects[forest_mask] = -1

    # Water: a river crossing the scene, sometimes a lake.
    water = _river_mask(height, width, rng)
    if rng.random() < 0.5:
        water |= _lake_mask(height, width, rng)
    labels[water] = WATER
    objects[water] = -1

    # Towns of rectangular blocks, on land; about one per 400 x 400 pixels, at least one.
    n_towns = max(1, int(round(height * width / 400.0**2 * rng.uniform(0.6, 1.4))))
    for _ in range(n_towns):
        n_objects = _paint_town(labels, objects, water, rng, n_objects)

    # Tiny scenes can lose a class under the others: put a small patch of each missing one back.
    for _ in range(10):
        missing = [v for v in range(len(SIMULATED_CLASSES)) if not (labels == v).any()]
        if not missing:
            break
        side = max(2, small // 8)
        for value in missing:
            r, c = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            labels[r : r + side, c : c + side] = value
            objects[r : r + side, c : c + side] = -1
    return labels, objects


def _partition(
    height: int, width: int, rng: np.random.Generator, min_side: int, max_side: int
) -> List[Tuple[int, int, int, int]]:
    """Splits the scene into a patchwork of rectangles by recursive random cuts.

    Returns:
      (list(tuple(int, int, int, int))): (row0, row1, col0, col1) of each rectangle, half-open.
    """
    done = []
    todo = [(0, height, 0, width)]
    while todo:
        r0, r1, c0, c1 = todo.pop()
        h, w = r1 - r0, c1 - c0
        longest = max(h, w)
        if longest < 2 * min_side or (longest <= max_side and rng.random() < 0.3):
            done.append((r0, r1, c0, c1))
            continue
        if h >= w:
            cut = r0 + int(rng.integers(min_side, h - min_side + 1))
            todo += [(r0, cut, c0, c1), (cut, r1, c0, c1)]
        else:
            cut = c0 + int(rng.integers(min_side, w - min_side + 1))
            todo += [(r0, r1, c0, cut), (r0, r1, cut, c1)]
    return done


def _paint_town(
    labels: np.ndarray, objects: np.ndarray, water: np.ndarray, rng: np.random.Generator, first_id: int
) -> int:
    """Paints one town: blocks on a rotated street grid, denser towards the centre, never on water.

    Each grid cell that is built (always the central one) becomes urban; its block gets its own
    object id, the street around it (1 pixel) stays urban with no id. Returns the next free id.
    """
    height, width = labels.shape
    small = min(height, width)
    radius = min(rng.uniform(18.0, 40.0), small / 4.0)
    for _ in range(20):  # a centre on dry land, away from the water where possible
        cy = rng.uniform(radius, height - radius) if height > 2 * radius else height / 2.0
        cx = rng.uniform(radius, width - radius) if width > 2 * radius else width / 2.0
        near = water[max(0, int(cy) - 6) : int(cy) + 7, max(0, int(cx) - 6) : int(cx) + 7]
        if not near.any():
            break
    block = np.clip(rng.uniform(4.0, 9.0, size=2), 2.0, max(2.0, radius / 2.0))
    street = 1.0
    pitch = block + street
    angle = rng.uniform(0.0, np.pi / 2.0)

    reach = int(math.ceil(radius * 1.5 + pitch.max()))
    r0, r1 = max(0, int(cy) - reach), min(height, int(cy) + reach + 1)
    c0, c1 = max(0, int(cx) - reach), min(width, int(cx) + reach + 1)
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    dy, dx = yy + 0.5 - cy, xx + 0.5 - cx
    cos, sin = math.cos(angle), math.sin(angle)
    u = cos * dx + sin * dy + pitch[0] / 2.0  # the central cell is centred on the town centre
    v = -sin * dx + cos * dy + pitch[1] / 2.0
    iu, iv = np.floor(u / pitch[0]).astype(np.int64), np.floor(v / pitch[1]).astype(np.int64)

    # Which cells are built: probability exp(-(distance / radius)^2), the centre always.
    n = int(math.ceil(reach / pitch.min())) + 1
    gu, gv = np.meshgrid(np.arange(-n, n + 1) * pitch[0], np.arange(-n, n + 1) * pitch[1], indexing="ij")
    built = rng.random(gu.shape) < np.exp(-(gu**2 + gv**2) / radius**2)
    built[n, n] = True
    inside = (np.abs(iu) <= n) & (np.abs(iv) <= n)
    cell_built = np.zeros(iu.shape, dtype=bool)
    cell_built[inside] = built[iu[inside] + n, iv[inside] + n]

    in_block = ((u - iu * pitch[0]) < block[0]) & ((v - iv * pitch[1]) < block[1])
    cell_id = first_id + (iu + n) * (2 * n + 1) + (iv + n)
    cell_built &= ~water[r0:r1, c0:c1]
    lab, obj = labels[r0:r1, c0:c1], objects[r0:r1, c0:c1]
    lab[cell_built] = URBAN
    obj[cell_built] = -1
    obj[cell_built & in_block] = cell_id[cell_built & in_block]
    return first_id + (2 * n + 1) ** 2


def _river_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A meandering river from one side of the scene to the opposite one, bool H x W.

    Channel width 5 to 12 pixels (50 to 120 m at 10 m) varying along the course; meander wavelength
    about 10 to 14 channel widths on top of a slow drift of the valley.
    """
    across_x = rng.random() < 0.5  # flows from left to right; otherwise top to bottom
    length, span = (width, height) if across_x else (height, width)
    t = np.arange(length, dtype=np.float64) + 0.5

    channel = min(rng.uniform(5.0, 12.0), max(2.0, span / 8.0))
    wavelength = channel * rng.uniform(10.0, 14.0)
    amplitude = channel * rng.uniform(1.0, 2.5)
    centre = rng.uniform(0.3, 0.7) * span
    centre = centre + amplitude * np.sin(2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
    long_wave = wavelength * rng.uniform(2.0, 3.0)
    centre = centre + 0.4 * amplitude * np.sin(2 * np.pi * t / long_wave + rng.uniform(0, 2 * np.pi))
    centre = centre + 0.12 * span * _smooth_noise((length,), max(4.0, length / 6.0), rng)
    centre = np.clip(centre, channel, span - channel)
    half = 0.5 * channel * (1.0 + 0.2 * _smooth_noise((length,), max(2.0, 2.0 * channel), rng))
    half = np.maximum(half, 1.0) * np.sqrt(1.0 + np.gradient(centre) ** 2)  # perpendicular width

    s = np.arange(span, dtype=np.float64)[:, None] + 0.5
    mask = np.abs(s - centre[None, :]) <= half[None, :]  # span x length
    return mask if across_x else mask.T


def _lake_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """An irregular lake, bool H x W: an ellipse-like blob with a wavy shore."""
    small = min(height, width)
    radius = rng.uniform(0.06, 0.12) * small
    cy, cx = rng.uniform(radius, height - radius), rng.uniform(radius, width - radius)
    scale = rng.uniform(0.8, 1.2)
    harmonics = [(k, rng.uniform(0.03, 0.15), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)]
    reach = int(math.ceil(radius * (scale + 0.45))) + 1  # the largest shore radius
    r0, r1 = max(0, int(cy) - reach), min(height, int(cy) + reach + 1)
    c0, c1 = max(0, int(cx) - reach), min(width, int(cx) + reach + 1)
    dy = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5 - cy
    dx = np.arange(c0, c1, dtype=np.float64)[None, :] + 0.5 - cx
    theta = np.arctan2(dy, dx)
    shore = scale + sum(a * np.cos(k * theta + phase) for k, a, phase in harmonics)
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = np.hypot(dx, dy) <= radius * shore
    return mask


# ----------------------------------------------------------------------------------------------------
# Texture


def _simulate_texture(
    labels: np.ndarray, objects: np.ndarray, classes: Sequence[SimulatedClass], rng: np.random.Generator
) -> np.ndarray:
    """Spatial texture in dB, float64 H x W, before speckle.

    Each class's texture is its ``texture_std_db`` times a unit-variance field: smooth noise, plus
    for parcels and blocks an offset per object. It is then shifted per class so that the class's
    mean linear power is exactly its table value.
    """
    shape = labels.shape
    small = min(shape)
    fine = _smooth_noise(shape, 1.5, rng)
    medium = _smooth_noise(shape, max(2.0, min(8.0, small / 16)), rng)
    coarse = _smooth_noise(shape, max(2.0, min(30.0, small / 6)), rng)
    offsets = rng.standard_normal(int(objects.max()) + 2)
    object_offset = np.where(objects >= 0, offsets[objects + 1], 0.0)
    has_object = objects >= 0

    unit = np.empty(shape, dtype=np.float64)
    for value, field in (
        (WATER, coarse),  # wind and current
        (FOREST, 0.8 * medium + 0.6 * fine),  # stand structure and gaps
        (BARE_SOIL, np.where(has_object, 0.6 * medium + 0.8 * object_offset, medium)),  # moisture, tillage
        (CROPLAND, np.where(has_object, 0.5 * medium + 0.87 * object_offset, medium)),  # crop type and stage
        (URBAN, np.where(has_object, 0.5 * fine + 0.87 * object_offset, fine - 1.0)),  # orientation; dark streets
    ):
        m = labels == value
        unit[m] = field[m]

    texture = np.zeros(shape, dtype=np.float64)
    for c in classes:
        m = labels == c.value
        if not m.any() or c.texture_std_db == 0:
            continue
        t = c.texture_std_db * unit[m]
        texture[m] = t - 10.0 * np.log10(np.mean(np.power(10.0, t / 10.0)))  # keeps the linear mean
    return texture


def _smooth_noise(shape: Tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """White noise low-pass filtered by a Gaussian of ``sigma`` pixels, zero mean, unit std.

    The filtering is a multiplication in the Fourier domain, on a padded grid so that the circular
    convolution does not wrap around. Wide 2-D kernels are drawn on a grid ``sigma // 4`` times
    coarser and interpolated (bilinear), which keeps large scenes fast and looks the same.

    Arguments:
      shape (tuple(int, ...)): (N,) or (H, W).
      sigma (float): Standard deviation of the Gaussian kernel in pixels.
      rng (np.random.Generator): The random generator.

    Returns:
      (np.ndarray): float64 array of ``shape``.
    """
    step = max(1, int(sigma // 4)) if len(shape) > 1 else 1
    if step == 1:
        field = _filtered_noise(shape, sigma, rng)
    else:
        # Coarse sample k sits at fine coordinate (k - 0.5) * step: one spare sample each side.
        field = _filtered_noise(tuple(-(-n // step) + 2 for n in shape), sigma / step, rng)
        for axis, n in enumerate(shape):
            k = (np.arange(n) + 0.5) / step + 0.5
            i0 = np.floor(k).astype(np.int64)
            w = (k - i0).reshape([n if a == axis else 1 for a in range(len(shape))])
            field = np.take(field, i0, axis=axis) * (1.0 - w) + np.take(field, i0 + 1, axis=axis) * w
    field = field - field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _filtered_noise(shape: Tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise of ``shape`` (FFT on a padded grid), not normalised."""
    pad = int(math.ceil(3 * sigma))
    padded = tuple(_fast_fft_size(n + 2 * pad) for n in shape)
    spectrum = np.fft.rfftn(rng.standard_normal(padded))
    freqs = [np.fft.fftfreq(n) for n in padded[:-1]] + [np.fft.rfftfreq(padded[-1])]
    squared = sum(f**2 for f in np.meshgrid(*freqs, indexing="ij", sparse=True))
    field = np.fft.irfftn(spectrum * np.exp(-2.0 * np.pi**2 * sigma**2 * squared), s=padded)
    return field[tuple(slice(pad, pad + n) for n in shape)]


# ----------------------------------------------------------------------------------------------------
# Helpers


def _fast_fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (sizes numpy's FFT handles fast)."""
    best = 2 * n
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < MIN_SIZE:
        raise ValueError(f"{name} must be an integer of at least {MIN_SIZE} pixels, got {value!r}")
    return int(value)


def _check_looks(looks: float) -> float:
    if not _is_real(looks) or not (math.isfinite(looks) and looks > 0):
        raise ValueError(f"looks (the equivalent number of looks) must be a finite number > 0, e.g. 4, got {looks!r}")
    return float(looks)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _hex_to_rgba(color: str) -> Tuple[int, int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255
