"""Sentinel-1 products as users have them: VV and VH in separate files, on the same grid or not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject
from test_inference import PerPixelModel, card_for, read, write_sar

from cwsam_core.engine.inference import classify_file, classify_raster
from cwsam_core.errors import ClassificationError
from cwsam_core.model.build import build_cwsam
from cwsam_core.model.model_file import save_model_file
from cwsam_core.raster.scene import StackedScene, open_scene, scene_name, scene_paths
from cwsam_core.training.config import TrainConfig
from cwsam_core.training.datasets import TrainingSource
from cwsam_core.training.loop import train

CWSAM = Path(sys.executable).with_name("cwsam")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_model_file(tmp_path_factory.mktemp("scene_model") / "nano.cwsam.pt",
                           build_cwsam("vit_nano", 3, input_size=64), card_for(64))


def split(stacked: Path, folder: Path, prefix: str = "S1A_20240101") -> tuple:
    """One single-band file per polarisation on the stacked file's grid, named like RTC products."""
    paths = []
    with rasterio.open(stacked) as src:
        for band, pol in ((1, "VV"), (2, "VH")):
            path = folder / f"{prefix}_{pol}.tif"
            profile = dict(src.profile, count=1)
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(band), 1)  # no band description: the role comes from the name
            paths.append(path)
    return tuple(paths)


def shifted_copy(path: Path, out: Path, pad: int = 7) -> Path:
    """The same pixels on a larger grid that starts ``pad`` pixels further up and left (nodata around)."""
    with rasterio.open(path) as src:
        data = src.read(1)
        t = src.transform
        grid = np.full((data.shape[0] + 2 * pad, data.shape[1] + 2 * pad), -9999.0, dtype=np.float32)
        grid[pad:-pad, pad:-pad] = data
        profile = dict(src.profile, width=grid.shape[1], height=grid.shape[0], nodata=-9999.0,
                       transform=from_origin(t.c - pad * t.a, t.f + pad * -t.e, t.a, -t.e))
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(grid, 1)
    return out


def test_scene_paths_and_names(tmp_path):
    assert scene_paths("a_VV.tif,b_VH.tif") == [Path("a_VV.tif"), Path("b_VH.tif")]
    odd = tmp_path / "scene,2024.tif"
    odd.write_bytes(b"")
    assert scene_paths(str(odd)) == [odd]  # an existing file whose name has a comma is one path
    assert scene_name("S1A_20240101_VV.tif,S1A_20240101_VH.tif") == "S1A_20240101"


def test_separate_files_on_another_grid_classify_like_the_stacked_file(tmp_path, model):
    stacked = write_sar(tmp_path / "stacked.tif", 90, 110, seed=3)
    vv, vh = split(stacked, tmp_path)
    vh_elsewhere = shifted_copy(vh, tmp_path / "S1A_20240101_VH_larger.tif")
    # A per-pixel model: its map depends on the values alone, so any difference would be the reading's.
    reference = classify_raster(stacked, tmp_path / "ref.tif", PerPixelModel(32), card_for(32))
    assert len(np.unique(read(reference.output))) >= 2
    result = classify_raster(f"{vv},{vh_elsewhere}", tmp_path / "pair.tif", PerPixelModel(32), card_for(32))
    assert np.array_equal(read(reference.output), read(result.output))
    with rasterio.open(result.output) as out, rasterio.open(stacked) as src:
        assert out.transform == src.transform and out.shape == src.shape  # on the first file's grid
    record = result.record.read_text()
    assert "S1A_20240101_VH_larger.tif" in record and '"files"' in record
    # Given in the other order, the larger VH grid is the scene's: the roles still come from the names,
    # and where both files have values the map is the same.
    swapped = read(classify_raster(f"{vh_elsewhere},{vv}", tmp_path / "swapped.tif", PerPixelModel(32),
                                   card_for(32)).output)
    assert swapped.shape == (90 + 14, 110 + 14) and (swapped[:7] == 255).all()
    assert np.array_equal(swapped[7:-7, 7:-7], read(reference.output))


def test_separate_files_in_another_crs(tmp_path, model):
    stacked = write_sar(tmp_path / "stacked.tif", 96, 96, seed=4)
    vv, vh = split(stacked, tmp_path)
    with rasterio.open(vh) as src:
        dst_crs = "EPSG:4326"
        from rasterio.warp import calculate_default_transform
        transform, width, height = calculate_default_transform(src.crs, dst_crs, src.width, src.height, *src.bounds)
        data = np.full((height, width), np.nan, dtype=np.float32)
        reproject(src.read(1), data, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                  dst_crs=dst_crs, resampling=Resampling.bilinear, dst_nodata=np.nan)
        profile = dict(src.profile, crs=dst_crs, transform=transform, width=width, height=height, nodata=np.nan)
    geographic = tmp_path / "S1A_20240101_VH_4326.tif"
    with rasterio.open(geographic, "w", **profile) as dst:
        dst.write(data, 1)
    with open_scene([vv, geographic]) as scene:
        assert isinstance(scene, StackedScene) and scene.descriptions == ("VV", "VH")
        assert scene.crs.to_string() == "EPSG:32633" and scene.shape == (96, 96)
    reference = read(classify_raster(stacked, tmp_path / "ref.tif", PerPixelModel(32), card_for(32)).output)
    paired = read(classify_raster([vv, geographic], tmp_path / "pair.tif", PerPixelModel(32), card_for(32)).output)
    assert len(np.unique(reference)) >= 2
    inside = slice(4, -4)  # the edges of a twice-resampled band reach nodata
    # VH was resampled twice (to EPSG:4326 and back, bilinear), which smooths its noise: most pixels agree.
    assert (reference[inside, inside] == paired[inside, inside]).mean() > 0.8


def test_bad_scene_files_are_one_line(tmp_path, model):
    stacked = write_sar(tmp_path / "stacked.tif", 64, 64)
    vv, vh = split(stacked, tmp_path)
    far = write_sar(tmp_path / "far_VH.tif", 64, 64, descriptions=("VH",), crs="EPSG:32610",
                    transform=from_origin(100000, 100000, 10, 10))

    def cli(*args):
        return subprocess.run([str(CWSAM), "classify", *map(str, args), "--model", str(model), "--quiet"],
                              capture_output=True, text=True, timeout=300)

    bad = cli(f"{vv},{far}", "--output", tmp_path / "a.tif")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "far_VH.tif (EPSG:32610) does not overlap" in bad.stderr
    missing = cli(f"{vv},{tmp_path / 'nope_VH.tif'}", "--output", tmp_path / "b.tif")
    assert missing.returncode == 2 and "input raster not found" in missing.stderr and "nope_VH.tif" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("a.", "b."))) == []
    # An output that is one of the scene's files is refused like any input.
    same = cli(f"{vv},{vh}", "--output", vh)
    assert same.returncode == 2 and "would overwrite the SAR raster" in same.stderr
    with pytest.raises(ClassificationError, match="does not overlap"):
        classify_file([vv, far], tmp_path / "c.tif", model)


def test_training_from_separate_files(tmp_path):
    from cwsam_core.common.card import ClassInfo
    from cwsam_core.model.model_file import read_model_card
    from cwsam_core.simulate import SIMULATED_CLASSES, simulate_scene, write_scene

    image, labels = write_scene(simulate_scene(128, 128, seed=9), tmp_path / "sar.tif", tmp_path / "labels.tif")
    vv, vh = split(image, tmp_path, prefix="scene")
    config = TrainConfig(backbone="vit_nano", classes=[ClassInfo(c.value, c.name, c.color) for c in SIMULATED_CLASSES],
                         output=tmp_path / "m.cwsam.pt", tile_size=32, epochs=1, steps_per_epoch=2, batch_size=2,
                         device="cpu")
    train([TrainingSource(f"{vh},{vv}", labels)], config)
    card = read_model_card(config.output)
    # The bands are named by the files' polarisations, in the order given.
    assert card.bands == ["VH", "VV"] and card.input_scale == "db"
    assert "," in card.provenance["data"][0]["image_sha256"]
