"""Training data: labels on the image grid, class mapping, spatially separated split."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from cwsam_core.common.card import ClassInfo
from cwsam_core.common.labels import IGNORE_INDEX
from cwsam_core.errors import TrainingDataError
from cwsam_core.training.datasets import RasterLabels, block_split, random_window

CLASSES = [ClassInfo(1, "water", "#0000ff"), ClassInfo(5, "urban", "#ff0000")]


def write(path, data, crs, transform, nodata=None, dtype=None):
    data = np.asarray(data)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[-1], height=data.shape[-2], count=1,
                       dtype=dtype or data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data[None] if data.ndim == 2 else data)
    return path


def test_labels_on_the_same_grid_map_values_to_indexes(tmp_path):
    transform = from_origin(500000, 4600000, 10, 10)
    image = write(tmp_path / "image.tif", np.zeros((20, 30), np.float32), "EPSG:32633", transform)
    values = np.zeros((20, 30), np.uint8)
    values[:, 10:20] = 1
    values[:, 20:] = 5
    values[0, 0] = 9  # a value no class names: ignored
    values[1, 0] = 200  # nodata
    label_path = write(tmp_path / "labels.tif", values, "EPSG:32633", transform, nodata=200)
    with rasterio.open(image) as img:
        labels = RasterLabels(label_path, img, CLASSES, ignore_values=[0])
        out = labels.read(Window(0, 0, 30, 20))
        assert out[5, 5] == IGNORE_INDEX and out[5, 15] == 0 and out[5, 25] == 1
        assert out[0, 0] == IGNORE_INDEX and out[1, 0] == IGNORE_INDEX
        stats = labels.stats(block=7)
        assert stats.class_pixels.tolist() == [200, 200]
        assert stats.unnamed == {9: 1}  # 0 is ignored on purpose, not reported
        padded = labels.read(Window(25, 15, 10, 10))  # past the edge: ignored there
        assert padded.shape == (10, 10) and (padded[5:, :] == IGNORE_INDEX).all() and padded[0, 0] == 1
        labels.close()


def test_label_in_another_crs_and_resolution_lands_on_the_right_pixels(tmp_path):
    # Image in EPSG:4326; labels in UTM 33N at another resolution covering the image.
    image_transform = from_origin(15.0, 41.5, 0.0001, 0.0001)
    image = write(tmp_path / "image.tif", np.zeros((100, 100), np.float32), "EPSG:4326", image_transform)
    left, bottom, right, top = transform_bounds("EPSG:4326", "EPSG:32633", 15.0, 41.49, 15.01, 41.5)
    label_transform = from_origin(left - 50, top + 50, 5, 5)
    width, height = int((right - left + 100) / 5), int((top - bottom + 100) / 5)
    xs = label_transform.c + 5 * (np.arange(width) + 0.5)
    values = np.where(xs[None, :] < (left + right) / 2, 1, 5).repeat(height, axis=0).astype(np.uint8)
    label_path = write(tmp_path / "labels.tif", values, "EPSG:32633", label_transform)
    with rasterio.open(image) as img:
        labels = RasterLabels(label_path, img, CLASSES)
        out = labels.read(Window(0, 0, 100, 100))
    # West half water (index 0), east half urban (index 1); the boundary within a couple of pixels of the middle.
    assert (out[:, :45] == 0).all() and (out[:, 55:] == 1).all()
    labels.close()


def test_missing_label_file(tmp_path):
    image = write(tmp_path / "image.tif", np.zeros((4, 4), np.float32), "EPSG:4326", from_origin(0, 1, 0.1, 0.1))
    with rasterio.open(image) as img, pytest.raises(TrainingDataError, match="label raster not found"):
        RasterLabels(tmp_path / "nope.tif", img, CLASSES)


def test_block_split_is_spatially_separated_and_reproducible():
    train, val = block_split(1000, 700, 256, 0.25, seed=3)
    assert len(train) + len(val) == 4 * 3 and len(val) == 3
    assert block_split(1000, 700, 256, 0.25, seed=3) == (train, val)
    rng = np.random.default_rng(0)
    covered = np.zeros((1000, 700), bool)
    for block in val:
        covered[int(block.row_off):int(block.row_off + block.height), int(block.col_off):int(block.col_off + block.width)] = True
    for _ in range(200):
        block = train[rng.integers(len(train))]
        w = random_window(block, 128, rng)
        assert not covered[int(w.row_off):int(w.row_off) + 128, int(w.col_off):int(w.col_off) + 128].any()
    with pytest.raises(TrainingDataError, match="too small"):
        block_split(100, 100, 256, 0.2)
