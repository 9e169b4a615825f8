"""The SAR scene simulator: determinism, land cover, radiometry, speckle statistics, GeoTIFF output."""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from cwsam_core.simulate import (
    SIMULATED_CLASSES, SimulatedClass, SimulatedScene, render_backscatter, simulate_scene, write_scene,
)

SEEDS = range(5)


@lru_cache(maxsize=None)
def scene(seed: int, looks: float = 4.0, size: int = 256) -> SimulatedScene:
    # Shared between tests: treat as read-only.
    return simulate_scene(size, size, seed=seed, looks=looks)


def linear_mean_db(db: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.power(10.0, db.astype(np.float64) / 10.0))))


def test_class_table():
    assert [c.value for c in SIMULATED_CLASSES] == [0, 1, 2, 3, 4]
    assert [c.name for c in SIMULATED_CLASSES] == ["water", "bare soil", "cropland", "forest", "urban"]
    for c in SIMULATED_CLASSES:
        assert len(c.color) == 7 and c.color[0] == "#" and int(c.color[1:], 16) >= 0
        assert c.vh_db < c.vv_db < 0
        assert 0 < c.texture_std_db < 5
    # Brighter in VV from water to urban, as in C-band images.
    assert np.all(np.diff([c.vv_db for c in SIMULATED_CLASSES]) > 0)


def test_same_seed_same_scene_and_seeds_differ():
    a, b = simulate_scene(64, 80, seed=7), simulate_scene(64, 80, seed=7)
    np.testing.assert_array_equal(a.vv_db, b.vv_db)
    np.testing.assert_array_equal(a.vh_db, b.vh_db)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = simulate_scene(64, 80, seed=8)
    assert not np.array_equal(a.labels, c.labels)
    assert not np.array_equal(a.vv_db, c.vv_db)
    # The land cover does not depend on the number of looks, the speckle does.
    d = simulate_scene(64, 80, seed=7, looks=1.0)
    np.testing.assert_array_equal(a.labels, d.labels)
    assert not np.array_equal(a.vv_db, d.vv_db)


@pytest.mark.parametrize("seed", SEEDS)
def test_scene_has_every_class_and_right_arrays(seed):
    s = scene(seed)
    assert s.vv_db.shape == s.vh_db.shape == s.labels.shape == (256, 256)
    assert s.vv_db.dtype == s.vh_db.dtype == np.float32
    assert s.labels.dtype == np.uint8
    assert np.isfinite(s.vv_db).all() and np.isfinite(s.vh_db).all()
    assert set(np.unique(s.labels).tolist()) == {0, 1, 2, 3, 4}
    counts = np.bincount(s.labels.ravel(), minlength=5)
    assert counts.min() >= 100, counts  # real features, not a stray pixel
    assert s.classes == SIMULATED_CLASSES
    assert s.transform == Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)
    assert s.crs == "EPSG:32633" and s.looks == 4.0


@pytest.mark.parametrize("seed", SEEDS)
def test_river_crosses_the_scene(seed):
    water = scene(seed).labels == 0
    assert (water[:, 0].any() and water[:, -1].any()) or (water[0].any() and water[-1].any())


def test_grid_arguments():
    s = simulate_scene(32, 48, seed=1, pixel_size=20.0, crs="EPSG:3857", origin=(100.0, 200.0))
    assert s.labels.shape == (32, 48)
    assert s.transform == Affine(20.0, 0.0, 100.0, 0.0, -20.0, 200.0)
    assert s.crs == "EPSG:3857"
    assert set(np.unique(s.labels).tolist()) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("seed", SEEDS)
def test_class_means_match_the_table(seed):
    # Texture and speckle both keep the mean in linear power, so the class's linear mean is its table value.
    s = scene(seed)
    for c in s.classes:
        m = s.labels == c.value
        vv, vh = linear_mean_db(s.vv_db[m]), linear_mean_db(s.vh_db[m])
        assert abs(vv - c.vv_db) < 1.0, (c.name, vv)
        assert abs(vh - c.vh_db) < 1.0, (c.name, vh)
        assert vh < vv


@pytest.mark.parametrize("looks", [1.0, 4.0])
def test_speckle_coefficient_of_variation_uniform_region(looks):
    # A uniform region: one class without texture, through the radiometry simulate_scene uses.
    flat = [SimulatedClass(0, "flat", "#808080", vv_db=-10.0, vh_db=-16.0, texture_std_db=0.0)]
    labels = np.zeros((256, 256), dtype=np.uint8)
    vv_db, vh_db = render_backscatter(labels, flat, looks, np.random.default_rng(0))
    for db, mean_db in ((vv_db, -10.0), (vh_db, -16.0)):
        power = np.power(10.0, db.astype(np.float64) / 10.0)
        cv = power.std() / power.mean()
        assert cv == pytest.approx(1.0 / np.sqrt(looks), rel=0.15)
        assert linear_mean_db(db) == pytest.approx(mean_db, abs=0.1)
    assert np.corrcoef(vv_db.ravel(), vh_db.ravel())[0, 1] == pytest.approx(0.0, abs=0.02)  # independent


@pytest.mark.parametrize("looks", [1.0, 4.0])
def test_speckle_coefficient_of_variation_in_scene(looks):
    # Same seed, same land cover and texture: the ratio to a nearly speckle-free scene is the speckle.
    speckled, clean = scene(3, looks), scene(3, 1e4)
    ratio = np.power(10.0, (speckled.vv_db.astype(np.float64) - clean.vv_db) / 10.0)
    assert ratio.std() / ratio.mean() == pytest.approx(1.0 / np.sqrt(looks), rel=0.15)
    assert ratio.mean() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("scale", ["db", "linear", "amplitude"])
def test_write_scene_round_trip(tmp_path, scale):
    s = scene(0)
    nodata = -9999.0 if scale == "db" else None
    image_path, label_path = tmp_path / "a" / "b" / "s1.tif", tmp_path / "c" / "labels.tif"
    image, labels = write_scene(s, image_path, label_path, scale=scale, nodata=nodata)
    assert (image, labels) == (image_path, label_path)

    with rasterio.open(image) as src:
        assert src.count == 2
        assert src.descriptions == ("VV", "VH")
        assert src.dtypes == ("float32", "float32")
        assert src.crs == CRS.from_string("EPSG:32633")
        assert src.transform == s.transform
        assert (src.height, src.width) == (256, 256)
        assert src.block_shapes == [(256, 256), (256, 256)]
        assert src.compression is not None and src.compression.value.lower() == "deflate"
        assert src.nodata == nodata
        vv, vh = src.read(1), src.read(2)
    if scale == "db":
        np.testing.assert_array_equal(vv, s.vv_db)
        np.testing.assert_array_equal(vh, s.vh_db)
    elif scale == "linear":
        np.testing.assert_allclose(vv, 10.0 ** (s.vv_db.astype(np.float64) / 10.0), rtol=1e-5)
        np.testing.assert_allclose(vh, 10.0 ** (s.vh_db.astype(np.float64) / 10.0), rtol=1e-5)
    else:
        np.testing.assert_allclose(vv**2, 10.0 ** (s.vv_db.astype(np.float64) / 10.0), rtol=1e-5)
        np.testing.assert_allclose(vh, np.sqrt(10.0 ** (s.vh_db.astype(np.float64) / 10.0)), rtol=1e-5)

    with rasterio.open(labels) as src:
        assert src.count == 1 and src.dtypes == ("uint8",)
        assert src.nodata == 255
        assert src.crs == CRS.from_string("EPSG:32633") and src.transform == s.transform
        np.testing.assert_array_equal(src.read(1), s.labels)


def test_write_small_scene(tmp_path):
    # Smaller than one 256 x 256 tile.
    s = simulate_scene(16, 24, seed=2)
    image, labels = write_scene(s, tmp_path / "s1.tif", str(tmp_path / "labels.tif"))
    with rasterio.open(image) as src:
        np.testing.assert_array_equal(src.read(), np.stack([s.vv_db, s.vh_db]))
    with rasterio.open(labels) as src:
        np.testing.assert_array_equal(src.read(1), s.labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(height=15, width=64), "height must be an integer of at least 16"),
        (dict(height=64, width=0), "width must be an integer of at least 16"),
        (dict(height=64.0, width=64), "height must be an integer"),
        (dict(height=64, width=64, looks=0), "looks .* must be a finite number > 0"),
        (dict(height=64, width=64, looks=-2.0), "looks .* must be a finite number > 0"),
        (dict(height=64, width=64, looks=float("nan")), "looks"),
        (dict(height=64, width=64, pixel_size=0.0), "pixel_size must be a positive number"),
        (dict(height=64, width=64, crs="not a crs"), "crs must be"),
        (dict(height=64, width=64, origin=(1.0,)), "origin must be"),
    ],
)
def test_bad_scene_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_scene(**kwargs)


@pytest.mark.parametrize("scale", ["dB", "power", "intensity", ""])
def test_bad_scale(tmp_path, scale):
    with pytest.raises(ValueError, match=r"scale must be one of db, linear, amplitude"):
        write_scene(scene(0), tmp_path / "s1.tif", tmp_path / "labels.tif", scale=scale)
    assert not (tmp_path / "s1.tif").exists()


def test_bad_render_arguments():
    flat = [SimulatedClass(0, "flat", "#808080", -10.0, -16.0, 0.0)]
    with pytest.raises(ValueError, match="looks"):
        render_backscatter(np.zeros((4, 4), np.uint8), flat, 0.0, 0)
    with pytest.raises(ValueError, match=r"class values 0; found \[3\]"):
        render_backscatter(np.full((4, 4), 3, np.uint8), flat, 1.0, 0)


def test_needs_only_numpy_and_rasterio():
    code = (
        "import sys, cwsam_core.simulate as s; s.simulate_scene(32, 32); "
        "bad = [m for m in ('torch', 'scipy', 'segment_anything', 'qgis') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_winter_shifts_the_backscatter_of_the_same_landscape():
    from cwsam_core.simulate import SEASON_SHIFTS_DB

    summer, winter = scene(2), simulate_scene(256, 256, seed=2, season="winter")
    assert np.array_equal(summer.labels, winter.labels)  # same land cover, texture and speckle draws
    for c in SIMULATED_CLASSES:
        m = summer.labels == c.value
        vv, vh = SEASON_SHIFTS_DB["winter"].get(c.value, (0.0, 0.0))
        # Same speckle and texture: every pixel of the class moves by the class's shift.
        assert np.allclose(winter.vv_db[m] - summer.vv_db[m], vv, atol=1e-3)
        assert np.allclose(winter.vh_db[m] - summer.vh_db[m], vh, atol=1e-3)
    assert winter.classes[1].vv_db == summer.classes[1].vv_db + 3.5  # wet bare soil
    with pytest.raises(ValueError, match="season must be one of summer, winter"):
        simulate_scene(32, 32, season="spring")
