"""A SAR scene given as several files, e.g. Sentinel-1 VV and VH in separate GeoTIFFs, read as one raster.

Users have polarisations in separate files (RTC products: one GeoTIFF per polarisation, on the
same grid or not). ``open_scene("VV.tif,VH.tif")`` reads them as one multi-band raster on the
first file's grid, without writing a copy: the other files are resampled on the fly (GDAL's warped
VRT, bilinear) where their grid differs. Each single-band file's band is named by the polarisation in
its file name (``*_VV*``, ``*_VH*``, ...), else by its band description; unnamed bands keep the
order given. Only numpy and rasterio.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..errors import SceneError

SceneSpec = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]
_POLARISATION_IN_NAME = re.compile(r"(?<![a-z0-9])(vv|vh|hh|hv)(?![a-z0-9])", re.IGNORECASE)


def scene_paths(spec: SceneSpec) -> List[Path]:
    """The files of a scene: a list of paths, or one path, or paths joined by commas ("VV.tif,VH.tif").

    An existing file whose name holds a comma is one path (such paths can also be given in a list).
    """
    if isinstance(spec, (list, tuple)):
        return [Path(p) for p in spec]
    text = os.fspath(spec)
    if "," in text and not os.path.exists(text):
        return [Path(part.strip()) for part in text.split(",") if part.strip()]
    return [Path(text)]


def scene_name(spec: SceneSpec) -> str:
    """A short name of the scene for file names and messages: the first file's stem, polarisation removed."""
    paths = scene_paths(spec)
    stem = paths[0].name.split(".")[0]
    if len(paths) > 1:
        stem = _POLARISATION_IN_NAME.sub("", stem).strip("_-. ") or stem
    return stem


def polarisation_from_name(path: Path) -> Optional[str]:
    found = _POLARISATION_IN_NAME.findall(path.stem)
    return found[-1].upper() if len(set(f.lower() for f in found)) == 1 else None


class StackedScene:
    """Several rasters read as one, on the first one's grid (the subset of rasterio's dataset API that
    the engine uses: size, georeferencing, band descriptions and types, ``read``).

    Values come back as float32 with NaN where a file has nodata or does not reach: ``nodata`` is None.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self._opened: list = []
        try:
            for path in self.paths:
                if not path.is_file():
                    raise SceneError(f"scene file not found: {path}")
                try:
                    self._opened.append(rasterio.open(path))
                except RasterioIOError as exc:
                    raise SceneError(f"{path} is not a raster that GDAL can read ({exc})") from None
            first = self._opened[0]
            self._readers = [first] + [self._on_first_grid(src, first) for src in self._opened[1:]]
        except BaseException:
            self.close()
            raise
        self.name = ",".join(str(p) for p in self.paths)
        self.width, self.height = first.width, first.height
        self.crs, self.transform, self.bounds, self.shape = first.crs, first.transform, first.bounds, first.shape
        self.nodata = None
        self._bands: List[Tuple[int, int]] = []  # (file index, band index)
        descriptions: List[Optional[str]] = []
        dtypes: List[str] = []
        for file_index, (path, src) in enumerate(zip(self.paths, self._opened)):
            role = polarisation_from_name(path) if src.count == 1 else None
            for band in range(1, src.count + 1):
                self._bands.append((file_index, band))
                descriptions.append(role or src.descriptions[band - 1])
                dtypes.append(src.dtypes[band - 1])
        self.descriptions, self.dtypes, self.count = tuple(descriptions), tuple(dtypes), len(self._bands)

    def _on_first_grid(self, src, first):
        if src.crs == first.crs and src.transform == first.transform and src.shape == first.shape:
            return src
        if src.crs is None or first.crs is None:
            raise SceneError(f"{Path(src.name).name} and {Path(first.name).name} are on different grids and one "
                             "has no coordinate reference system: give both a CRS, or files on the same grid")
        left, bottom, right, top = transform_bounds(src.crs, first.crs, *src.bounds, densify_pts=21)
        f = first.bounds
        if left >= f.right or right <= f.left or bottom >= f.top or top <= f.bottom:
            raise SceneError(
                f"{Path(src.name).name} ({src.crs.to_string()}) does not overlap {Path(first.name).name} "
                f"({first.crs.to_string()}): the files of a scene must cover the same area")
        return WarpedVRT(src, crs=first.crs, transform=first.transform, width=first.width, height=first.height,
                         resampling=Resampling.bilinear, dtype="float32", nodata=np.nan)

    def window_transform(self, window: Window):
        return rasterio.windows.transform(window, self.transform)

    def read(self, indexes=None, window: Optional[Window] = None, out_shape=None,
             resampling: Resampling = Resampling.nearest) -> np.ndarray:
        """Bands (1-based ``indexes``, an int or a list) as float32, NaN where a file has no value."""
        single = isinstance(indexes, int)
        wanted = [indexes] if single else list(indexes or range(1, self.count + 1))
        planes = []
        for index in wanted:
            file_index, band = self._bands[index - 1]
            reader = self._readers[file_index]
            shape = None if out_shape is None else tuple(out_shape[-2:])
            data = reader.read(band, window=window, out_shape=shape, resampling=resampling).astype(np.float32)
            nodata = reader.nodata
            if nodata is not None and not np.isnan(nodata):
                data[data == np.float32(nodata)] = np.nan
            planes.append(data)
        return planes[0] if single else np.stack(planes)

    def close(self) -> None:
        for reader in getattr(self, "_readers", []):
            if isinstance(reader, WarpedVRT):
                reader.close()
        for src in self._opened:
            src.close()

    def __enter__(self) -> "StackedScene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_scene(spec: SceneSpec):
    """An open raster for one path (a rasterio dataset) or a :class:`StackedScene` for several."""
    paths = scene_paths(spec)
    if len(paths) == 1:
        if not paths[0].is_file():
            raise SceneError(f"raster not found: {paths[0]}")
        try:
            return rasterio.open(paths[0])
        except RasterioIOError as exc:
            raise SceneError(f"{paths[0]} is not a raster that GDAL can read ({exc})") from None
    return StackedScene(paths)
