"""Quick-look PNGs: real GeoTIFFs in, a PNG whose panels show the SAR image and the class colours."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import rasterio
from matplotlib.image import imread
from rasterio.transform import from_origin

from cwsam_core.common.card import ClassInfo
from cwsam_core.errors import QuicklookError
from cwsam_core.raster.output import hex_to_rgba
from cwsam_core.raster.quicklook import NODATA_RGB, write_quicklook

CLASSES = [ClassInfo(0, "water", "#1f78b4"), ClassInfo(3, "forest", "#1b7837"), ClassInfo(7, "urban", "#d7191c")]
CRS = "EPSG:32633"


def write_sar(path: Path, height: int, width: int, pixel: float = 10.0) -> Path:
    """VV, VH in dB: bright (urban-like) left third, dark (water-like) right third, NaN corner."""
    rng = np.random.default_rng(0)
    vv = np.full((height, width), -10.0) + rng.normal(0, 1.0, (height, width))
    vv[:, : width // 3] += 8.0
    vv[:, 2 * width // 3 :] -= 10.0
    vh = vv - 7.0
    vv[:4, :4] = np.nan
    with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=2, dtype="float32",
                       crs=CRS, transform=from_origin(500000, 4600000, pixel, pixel)) as dst:
        dst.write(np.stack([vv, vh]).astype(np.float32))
        dst.set_band_description(1, "VV")
        dst.set_band_description(2, "VH")
    return path


def write_classes(path: Path, values: np.ndarray, pixel: float = 10.0) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=values.shape[0], width=values.shape[1], count=1,
                       dtype="uint8", nodata=255, crs=CRS, transform=from_origin(500000, 4600000, pixel, pixel)) as dst:
        dst.write(values.astype(np.uint8), 1)
    return path


def class_values(height: int, width: int) -> np.ndarray:
    values = np.full((height, width), 3, dtype=np.uint8)  # forest
    values[:, : width // 4] = 0  # water
    values[: height // 2, width // 2 :] = 7  # urban
    values[height - height // 8 :, :] = 255  # nodata
    return values


def panel_colours(png: np.ndarray, box) -> np.ndarray:
    """N x 3 uint8 RGB of the panel's pixels, one pixel in from its edges."""
    left, top, right, bottom = box
    return np.round(png[top + 1 : bottom - 1, left + 1 : right - 1, :3] * 255).astype(np.uint8).reshape(-1, 3)


def colour_shares(colours: np.ndarray) -> dict:
    found, counts = np.unique(colours, axis=0, return_counts=True)
    return {tuple(int(v) for v in c): n / len(colours) for c, n in zip(found, counts)}


def expected_shares(values: np.ndarray) -> dict:
    grey = tuple(int(round(v * 255)) for v in NODATA_RGB)
    shares = {grey: float(np.mean(values == 255))}
    for c in CLASSES:
        shares[hex_to_rgba(c.color)[:3]] = float(np.mean(values == c.value))
    return shares


def test_quicklook_panels_show_the_classes_and_the_sar_image(tmp_path):
    height, width = 96, 160
    sar = write_sar(tmp_path / "sar.tif", height, width)
    values = class_values(height, width)
    classes = write_classes(tmp_path / "classes.tif", values)
    reference_values = np.roll(values, width // 8, axis=1)
    reference = write_classes(tmp_path / "reference.tif", reference_values)

    result = write_quicklook(sar, classes, tmp_path / "look.png", CLASSES, reference_path=reference, panel_size=128)
    assert result.path.is_file() and not list(tmp_path.glob(".*partial"))
    png = imread(result.path)
    assert (png.shape[1], png.shape[0]) == result.size
    assert set(result.panels) == {"sar", "classes", "reference"}
    assert result.sar_bands == ["VV dB", "VH dB", "VV-VH dB"]
    for left, top, right, bottom in result.panels.values():
        assert 0 <= left < right <= result.size[0] and 0 <= top < bottom <= result.size[1]
        assert max(right - left, bottom - top) == 128  # the longer side is the panel size
        assert (right - left) / (bottom - top) == pytest.approx(width / height, rel=0.02)
    assert result.panels["classes"][0] >= result.panels["sar"][2]  # side by side, not overlapping

    for name, shown in (("classes", values), ("reference", reference_values)):
        shares = colour_shares(panel_colours(png, result.panels[name]))
        wanted = expected_shares(shown)
        assert set(shares) <= set(wanted), f"{name} panel has colours no class has"
        for colour, share in wanted.items():
            assert shares.get(colour, 0.0) == pytest.approx(share, abs=0.03), (name, colour)

    # SAR panel: R is VV: the bright left third is redder than the dark right third; the NaN corner is grey.
    left, top, right, bottom = result.panels["sar"]
    sar_panel = png[top:bottom, left:right, :3]
    third = sar_panel.shape[1] // 3
    assert sar_panel[:, : third - 2, 0].mean() > sar_panel[:, 2 * third + 2 :, 0].mean() + 0.5
    assert np.allclose(sar_panel[1, 1], NODATA_RGB, atol=0.01)


def test_large_rasters_are_decimated_and_a_coarser_reference_is_read_onto_the_image_grid(tmp_path):
    height, width = 600, 900
    sar = write_sar(tmp_path / "sar.tif", height, width)
    values = class_values(height, width)
    classes = write_classes(tmp_path / "classes.tif", values)
    coarse = class_values(height // 3, width // 3)  # same extent, 30 m pixels
    reference = write_classes(tmp_path / "reference.tif", coarse, pixel=30.0)
    result = write_quicklook(sar, classes, tmp_path / "big.png", CLASSES, reference_path=reference, panel_size=90,
                             title="decimated")
    png = imread(result.path)
    assert (png.shape[1], png.shape[0]) == result.size
    assert result.panels["classes"][2] - result.panels["classes"][0] == 90
    for name in ("classes", "reference"):
        shares = colour_shares(panel_colours(png, result.panels[name]))
        wanted = expected_shares(values)
        assert set(shares) <= set(wanted)
        for colour, share in wanted.items():
            assert shares.get(colour, 0.0) == pytest.approx(share, abs=0.04), (name, colour)


def test_a_reference_covering_part_of_the_image_leaves_the_rest_grey(tmp_path):
    sar = write_sar(tmp_path / "sar.tif", 60, 60)
    classes = write_classes(tmp_path / "classes.tif", class_values(60, 60))
    # 20 m pixels over the western half only, no nodata value: outside must not read as class 0.
    with rasterio.open(tmp_path / "half.tif", "w", driver="GTiff", height=30, width=15, count=1, dtype="uint8",
                       crs=CRS, transform=from_origin(500000, 4600000, 20.0, 20.0)) as dst:
        dst.write(np.full((1, 30, 15), 7, dtype=np.uint8))
    result = write_quicklook(sar, classes, tmp_path / "half.png", CLASSES, reference_path=tmp_path / "half.tif",
                             panel_size=60)
    left, top, right, bottom = result.panels["reference"]
    panel = np.round(imread(result.path)[top:bottom, left:right, :3] * 255).astype(np.uint8)
    urban, grey = hex_to_rgba(CLASSES[2].color)[:3], tuple(int(round(v * 255)) for v in NODATA_RGB)
    assert (panel[2:-2, 2:28] == urban).all() and (panel[2:-2, 32:-2] == grey).all()


def test_bad_inputs_give_one_clear_error_and_no_png(tmp_path):
    sar = write_sar(tmp_path / "sar.tif", 32, 32)
    classes = write_classes(tmp_path / "classes.tif", class_values(32, 32))
    with pytest.raises(QuicklookError, match="class raster not found"):
        write_quicklook(sar, tmp_path / "nope.tif", tmp_path / "a.png", CLASSES)
    with pytest.raises(QuicklookError, match="quick-look folder does not exist"):
        write_quicklook(sar, classes, tmp_path / "missing" / "a.png", CLASSES)
    (tmp_path / "text.tif").write_text("not a raster")
    with pytest.raises(QuicklookError, match="is not a raster that GDAL can read"):
        write_quicklook(tmp_path / "text.tif", classes, tmp_path / "a.png", CLASSES)
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*partial"))


def test_matplotlib_is_imported_only_inside_write_quicklook():
    # The library must import (in QGIS, on a server) without matplotlib being loaded or needing a display.
    import cwsam_core.raster.quicklook as module

    tree = ast.parse(Path(module.__file__).read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top_level for a in n.names] + [n.module or "" for n in top_level if isinstance(n, ast.ImportFrom)]
    assert not any(name.startswith("matplotlib") for name in names)
    inside = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("matplotlib")]
    assert {n.module for n in inside} == {"matplotlib.backends.backend_agg", "matplotlib.figure", "matplotlib.patches"}
