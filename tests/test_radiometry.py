"""Radiometry: scales, scale detection, band matching, channels, nodata, normalisation, windowed reads."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from cwsam_core.common.card import INPUT_SCALES
from cwsam_core.errors import RadiometryError
from cwsam_core.raster.radiometry import (
    NormalizationStats, SarReader, channel_stats, convert_scale, detect_scale, match_bands, normalize,
    to_model_channels, valid_mask,
)

RNG_SEED = 7


def write_raster(path: Path, data: np.ndarray, nodata: Optional[float] = None,
                 descriptions: Optional[Sequence[Optional[str]]] = None) -> Path:
    """A small K x H x W GeoTIFF with optional nodata and band descriptions."""
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype,
                       crs="EPSG:32631", transform=from_origin(500000, 4000000, 10, 10), nodata=nodata) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            if d is not None:
                dst.set_band_description(i, d)
    return path


def linear_sigma0(shape, mean=0.05, seed=RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).exponential(mean, size=shape).astype(np.float32) + 1e-4


def expected_channels(raw: np.ndarray, source: str, target: str) -> np.ndarray:
    return to_model_channels(convert_scale(raw, source, target), target)


# --- scales -------------------------------------------------------------------------------------


def test_convert_scale_round_trips():
    power = linear_sigma0((2, 8, 8))
    for a in INPUT_SCALES:
        for b in INPUT_SCALES:
            there = convert_scale(convert_scale(power, "linear", a), a, b)
            back = convert_scale(there, b, "linear")
            assert back.dtype == np.float32
            np.testing.assert_allclose(back, power, rtol=1e-5)
    np.testing.assert_allclose(convert_scale(np.array([0.1, 1.0, 10.0]), "linear", "db"), [-10, 0, 10], atol=1e-5)
    np.testing.assert_allclose(convert_scale(np.array([3.0]), "amplitude", "linear"), [9.0])
    np.testing.assert_allclose(convert_scale(np.array([-20.0]), "db", "amplitude"), [0.1], rtol=1e-6)


def test_convert_scale_non_positive_has_no_db_value():
    out = convert_scale(np.array([0.0, -0.01, 0.5]), "linear", "db")
    assert np.isnan(out[:2]).all() and np.isfinite(out[2])
    assert np.isnan(convert_scale(np.array([0, 4], dtype=np.uint16), "amplitude", "db")[0])
    # Integers are converted in float: 2000**2 does not wrap around in uint16.
    assert convert_scale(np.array([2000], dtype=np.uint16), "amplitude", "linear")[0] == pytest.approx(4e6)
    with pytest.raises(RadiometryError, match="one of db, linear, amplitude"):
        convert_scale(np.ones(3), "decibel", "db")


def test_detect_scale():
    power = linear_sigma0((2, 64, 64))
    assert detect_scale(convert_scale(power, "linear", "db")) == "db"
    assert detect_scale(power) == "linear"
    dn = np.random.default_rng(1).uniform(100, 2000, size=(2, 64, 64))
    assert detect_scale(dn) == "amplitude"
    # A few negatives from noise subtraction do not make linear power dB; NaN is ignored.
    noisy = power.copy()
    noisy[0, :2] = -0.001
    noisy[1, :3] = np.nan
    assert detect_scale(noisy) == "linear"
    with pytest.raises(RadiometryError, match="no valid value"):
        detect_scale(np.full((2, 4, 4), np.nan))


# --- bands --------------------------------------------------------------------------------------


def test_match_bands_by_description_token_and_index():
    assert match_bands(["VH", "VV"], ["VV", "VH"]) == [2, 1]
    assert match_bands(["sigma0_vh_db", "Sigma0_VV_db"], ["VV", "VH"]) == [2, 1]
    assert match_bands(["HH", "VH polarisation", "VV"], ["VV", "VH"]) == [3, 2]
    assert match_bands([None, None], ["VV", "VH"]) == [1, 2]
    assert match_bands(["band 1", "band 2"], ["VV", "VH"]) == [1, 2]
    assert match_bands([None], ["HH"]) == [1]
    # "VVH" does not name VV: token match only.
    assert match_bands(["VVH", "x"], ["VV", "VH"]) == [1, 2]
    with pytest.raises(RadiometryError):
        match_bands(["VVH", "VHX", "z"], ["VV", "VH"])


def test_match_bands_override():
    assert match_bands(["HH", "HV", "VV"], ["VV", "VH"], override=[3, 2]) == [3, 2]
    with pytest.raises(RadiometryError, match=r"out of range 1\.\.3"):
        match_bands(["HH", "HV", "VV"], ["VV", "VH"], override=[3, 4])
    with pytest.raises(RadiometryError, match="gives 1 band"):
        match_bands(["HH", "HV", "VV"], ["VV", "VH"], override=[3])


def test_match_bands_errors_list_found_and_expected():
    with pytest.raises(RadiometryError) as err:
        match_bands(["HH", "HV", "VV"], ["VV", "VH"])
    message = str(err.value)
    assert "no band description names VH" in message
    assert "1: HH, 2: HV, 3: VV" in message and "expects VV, VH" in message and "--bands" in message

    with pytest.raises(RadiometryError, match=r"1 band\(s\) \(1: \(no description\)\).*--bands"):
        match_bands([None], ["VV", "VH"])
    # A single-band model on a multi-band raster is not guessed either.
    with pytest.raises(RadiometryError, match="expects HH"):
        match_bands([None, None], ["HH"])
    # Other polarisations are not taken in order: VV, VH bands for an HH, HV model.
    with pytest.raises(RadiometryError, match="name VH, VV instead"):
        match_bands(["VV", "VH"], ["HH", "HV"])
    with pytest.raises(RadiometryError, match="name HH instead"):
        match_bands(["HH"], ["VV"])
    # Taking bands in order would contradict a description.
    with pytest.raises(RadiometryError, match="contradict"):
        match_bands(["other", "VV"], ["VV", "VH"])
    with pytest.raises(RadiometryError, match="several bands match VV"):
        match_bands(["VV_a", "VV_b"], ["VV", "VH"])


# --- channels, masks, normalisation -------------------------------------------------------------


def test_to_model_channels():
    one = np.full((1, 2, 2), -10.0, dtype=np.float32)
    out = to_model_channels(one, "db")
    assert out.shape == (3, 2, 2) and out.dtype == np.float32 and (out == -10).all()

    db = np.stack([np.full((2, 2), -8.0), np.full((2, 2), -15.0)])
    np.testing.assert_allclose(to_model_channels(db, "db")[2], 7.0)
    np.testing.assert_allclose(to_model_channels(db, "db")[:2], db)

    lin = np.stack([np.full((2, 2), 0.2), np.array([[0.05, 0.0], [0.1, -0.1]])])
    ratio = to_model_channels(lin, "linear")[2]
    np.testing.assert_allclose(ratio[0, 0], 4.0)
    np.testing.assert_allclose(ratio[1, 0], 2.0)
    assert np.isnan(ratio[0, 1]) and np.isnan(ratio[1, 1])
    np.testing.assert_allclose(to_model_channels(np.stack([np.full((1, 1), 6.0), np.full((1, 1), 3.0)]),
                                                 "amplitude")[2], 2.0)

    three = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(to_model_channels(three, "db"), three)
    with pytest.raises(RadiometryError, match="1, 2 or 3 bands"):
        to_model_channels(np.zeros((4, 2, 2)), "db")


def test_valid_mask():
    bands = np.ones((2, 2, 3), dtype=np.float32)
    bands[0, 0, 0] = -9999
    bands[1, 0, 1] = np.nan
    bands[0, 1, 2] = np.inf
    bands[1, 1, 1] = -np.inf
    assert valid_mask(bands, -9999).tolist() == [[False, False, True], [True, False, False]]
    assert valid_mask(bands, None).tolist() == [[True, False, True], [True, False, False]]
    ints = np.array([[[0, 5], [7, 0]], [[3, 0], [1, 1]]], dtype=np.uint16)
    assert valid_mask(ints, 0).tolist() == [[False, False], [True, False]]
    assert valid_mask(ints, None).all()


def test_normalization_stats_and_normalize():
    stats = NormalizationStats.from_dict({"mean": [-12, -19, 7], "std": [4, 4.5, 3]})
    assert stats.to_dict() == {"mean": [-12.0, -19.0, 7.0], "std": [4.0, 4.5, 3.0]}
    channels = np.stack([np.full((2, 2), -8.0), np.full((2, 2), -19.0), np.full((2, 2), 1.0)])
    out = normalize(channels, stats)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 0.0, -2.0])
    with pytest.raises(RadiometryError, match="positive stds"):
        NormalizationStats(mean=[0, 0, 0], std=[1, 0, 1])
    with pytest.raises(RadiometryError, match="3 means"):
        NormalizationStats.from_dict({"mean": [0, 0], "std": [1, 1, 1]})
    with pytest.raises(RadiometryError):
        NormalizationStats.from_dict({"mean": [0, 0, 0]})
    flat = channel_stats(np.ones((3, 2, 2)), np.ones((2, 2), dtype=bool))
    assert flat.std == [pytest.approx(1e-6)] * 3


# --- SarReader ----------------------------------------------------------------------------------


@pytest.fixture
def db_raster(tmp_path) -> Path:
    """2 x 40 x 50 dB raster, bands described VH, VV (swapped), nodata -9999 in a corner."""
    power = linear_sigma0((2, 40, 50))
    data = convert_scale(power, "linear", "db")
    data[:, :3, :4] = -9999
    data[1, 10, 10] = np.nan
    return write_raster(tmp_path / "db.tif", data[::-1].copy(), nodata=-9999, descriptions=["VH", "VV"])


def test_reader_window_inside_and_past_the_edge(db_raster):
    stats = {"mean": [-13.0, -13.0, 0.0], "std": [4.0, 4.0, 3.0]}
    messages: List[str] = []
    with rasterio.open(db_raster) as ds:
        reader = SarReader(ds, ["VV", "VH"], "db", normalization=stats, warn=messages.append)
        assert reader.band_indexes == [2, 1] and reader.source_scale == "db" and reader.nodata == -9999
        assert reader.stats.to_dict() == stats and messages == []
        direct = ds.read([2, 1])

    def expected(rows, cols):
        raw = direct[:, rows, cols]
        image = normalize(expected_channels(raw, "db", "db"), reader.stats)
        valid = valid_mask(raw, -9999)
        image[:, ~valid] = 0.0
        return image, valid

    with rasterio.open(db_raster) as ds:
        reader = SarReader(ds, ["VV", "VH"], "db", normalization=stats, warn=messages.append)
        image, valid = reader.read(Window(5, 8, 16, 12))
        assert image.shape == (3, 12, 16) and image.dtype == np.float32 and valid.shape == (12, 16)
        want_image, want_valid = expected(slice(8, 20), slice(5, 21))
        np.testing.assert_allclose(image, want_image, rtol=1e-6)
        np.testing.assert_array_equal(valid, want_valid)
        assert not valid[10 - 8, 10 - 5] and (image[:, 10 - 8, 10 - 5] == 0).all()  # the NaN pixel

        # Past the right and bottom edges: 40 x 50 raster, window rows 30..46, cols 44..60.
        image, valid = reader.read(Window(44, 30, 16, 16))
        assert image.shape == (3, 16, 16)
        want_image, want_valid = expected(slice(30, 40), slice(44, 50))
        np.testing.assert_allclose(image[:, :10, :6], want_image, rtol=1e-6)
        np.testing.assert_array_equal(valid[:10, :6], want_valid)
        assert not valid[10:].any() and not valid[:, 6:].any()
        assert (image[:, 10:] == 0).all() and (image[:, :, 6:] == 0).all()

        # Past the top-left corner, where the nodata block is: invalid and zero.
        image, valid = reader.read(Window(-2, -2, 8, 8))
        assert not valid[:2].any() and not valid[:, :2].any()  # outside the raster
        assert not valid[2:5, 2:6].any()  # the nodata block, raster rows 0..2, cols 0..3
        assert valid[2:5, 6:].all() and valid[5:, 2:].all()
        assert (image[:, ~valid] == 0).all()
        # Entirely outside.
        image, valid = reader.read(Window(60, 0, 4, 4))
        assert not valid.any() and (image == 0).all()


def test_reader_stats_from_whole_raster_not_per_tile(db_raster):
    with rasterio.open(db_raster) as ds:
        reader = SarReader(ds, ["VV", "VH"], "db", warn=lambda m: None)
        before = reader.stats.to_dict()
        direct = ds.read([2, 1])
        tiles = [reader.read(Window(0, 0, 10, 10)), reader.read(Window(30, 20, 20, 20))]
        assert reader.stats.to_dict() == before
        # Same stats whichever window a fresh reader reads first.
        other = SarReader(ds, ["VV", "VH"], "db", warn=lambda m: None)
        other.read(Window(30, 20, 20, 20))
        assert other.stats.to_dict() == before
    channels = expected_channels(direct, "db", "db")
    valid = valid_mask(direct, -9999)
    values = channels[:, valid].astype(np.float64)
    np.testing.assert_allclose(reader.stats.mean, values.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(reader.stats.std, values.std(axis=1), rtol=1e-5)
    # Each tile is normalised with those global stats, not its own.
    for (image, tile_valid), window in zip(tiles, [(0, 0, 10, 10), (30, 20, 20, 20)]):
        col, row, w, h = window
        raw = direct[:, row:row + h, col:col + w]
        want = normalize(expected_channels(raw, "db", "db"), reader.stats)
        np.testing.assert_allclose(image[:, tile_valid], want[:, tile_valid], rtol=1e-5, atol=1e-6)
        # Per-tile statistics would differ from the global ones (so the check above can fail).
        tile_stats = channel_stats(expected_channels(raw, "db", "db"), valid_mask(raw, -9999))
        assert not np.allclose(tile_stats.mean, reader.stats.mean, atol=1e-3)


def test_reader_stats_from_decimated_sample(tmp_path):
    path = write_raster(tmp_path / "big.tif", convert_scale(linear_sigma0((2, 200, 300)), "linear", "db"))
    with rasterio.open(path) as ds:
        reader = SarReader(ds, ["VV", "VH"], "db", sample_pixels=5_000)
        full = SarReader(ds, ["VV", "VH"], "db", sample_pixels=10**9)
    # A 1-in-~35 sample gives nearly the same statistics as every pixel.
    np.testing.assert_allclose(reader.stats.mean, full.stats.mean, atol=0.3)
    np.testing.assert_allclose(reader.stats.std, full.stats.std, rtol=0.1)


def test_reader_detects_linear_for_db_model_and_warns(tmp_path):
    power = linear_sigma0((2, 30, 30))
    power[:, 0, 0] = 0.0  # no dB value: invalid
    path = write_raster(tmp_path / "linear.tif", power, descriptions=["Sigma0_VV", "Sigma0_VH"])
    stats = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    messages: List[str] = []
    with rasterio.open(path) as ds:
        reader = SarReader(ds, ["VV", "VH"], "db", normalization=stats, warn=messages.append)
        image, valid = reader.read(Window(0, 0, 30, 30))
    assert reader.source_scale == "linear" and reader.model_scale == "db"
    assert len(messages) == 1 and "from linear to the model's db" in messages[0]
    db = 10 * np.log10(power[:, 1:, 1:].astype(np.float64))
    np.testing.assert_allclose(image[0, 1:, 1:], db[0], rtol=1e-5)
    np.testing.assert_allclose(image[1, 1:, 1:], db[1], rtol=1e-5)
    np.testing.assert_allclose(image[2, 1:, 1:], db[0] - db[1], rtol=1e-4, atol=1e-4)
    assert not valid[0, 0] and valid.sum() == 30 * 30 - 1 and (image[:, 0, 0] == 0).all()

    # An explicit input scale is trusted: no warning.
    messages.clear()
    with rasterio.open(path) as ds:
        reader = SarReader(ds, ["VV", "VH"], "db", input_scale="linear", normalization=stats, warn=messages.append)
    assert messages == [] and reader.source_scale == "linear"
    with rasterio.open(path) as ds:
        with pytest.raises(RadiometryError, match="unknown input scale 'power'"):
            SarReader(ds, ["VV", "VH"], "db", input_scale="power", warn=messages.append)
        with pytest.raises(RadiometryError, match="unknown model input scale"):
            SarReader(ds, ["VV", "VH"], "dB", warn=messages.append)


def test_reader_refuses_other_polarisations_by_order(tmp_path):
    path = write_raster(tmp_path / "hh.tif", convert_scale(linear_sigma0((2, 8, 8)), "linear", "db"),
                        descriptions=["HH", "HV"])
    with rasterio.open(path) as ds:
        with pytest.raises(RadiometryError, match=r"name HH, HV instead.*1: HH, 2: HV.*--bands"):
            SarReader(ds, ["VV", "VH"], "db")
        assert SarReader(ds, ["VV", "VH"], "db", band_indexes=[1, 2]).band_indexes == [1, 2]


def test_reader_all_nodata_raster(tmp_path):
    path = write_raster(tmp_path / "empty.tif", np.full((2, 10, 10), -9999, dtype=np.float32), nodata=-9999)
    with rasterio.open(path) as ds:
        with pytest.raises(RadiometryError, match="all nodata"):
            SarReader(ds, ["VV", "VH"], "db", warn=lambda m: None)
    # Valid raw values with no dB value (all zero power) cannot give statistics either.
    zeros = write_raster(tmp_path / "zeros.tif", np.zeros((2, 10, 10), dtype=np.float32))
    with rasterio.open(zeros) as ds:
        with pytest.raises(RadiometryError, match="no pixel with a value"):
            SarReader(ds, ["VV", "VH"], "db", input_scale="linear")


def test_reader_uint16_amplitude_without_nodata_boundless(tmp_path):
    rng = np.random.default_rng(3)
    dn = rng.integers(100, 2000, size=(2, 25, 33)).astype(np.uint16)
    dn[1, 24, 32] = 0  # zero amplitude has no dB value
    path = write_raster(tmp_path / "dn.tif", dn)
    messages: List[str] = []
    with rasterio.open(path) as ds:
        assert ds.nodata is None
        reader = SarReader(ds, ["VV", "VH"], "db", warn=messages.append)
        assert reader.source_scale == "amplitude" and "from amplitude" in messages[0]
        image, valid = reader.read(Window(20, 15, 32, 32))
    assert image.shape == (3, 32, 32)
    raw = dn[:, 15:, 20:]
    want = normalize(expected_channels(raw, "amplitude", "db"), reader.stats)
    inside_valid = valid[:10, :13]
    assert inside_valid.sum() == 10 * 13 - 1 and not inside_valid[9, 12]
    np.testing.assert_allclose(image[:, :10, :13][:, inside_valid], want[:, inside_valid], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(convert_scale(raw[0, 0, 0], "amplitude", "db"), 20 * np.log10(float(raw[0, 0, 0])),
                               rtol=1e-6)
    assert not valid[10:].any() and not valid[:, 13:].any() and (image[:, 10:] == 0).all()


def test_reader_single_band_model(tmp_path):
    path = write_raster(tmp_path / "one.tif", convert_scale(linear_sigma0((1, 6, 6)), "linear", "db"),
                        descriptions=["HH"])
    with rasterio.open(path) as ds:
        reader = SarReader(ds, ["HH"], "db")
        image, valid = reader.read(Window(0, 0, 6, 6))
    assert valid.all()
    np.testing.assert_allclose(image[0], image[1])
    np.testing.assert_allclose(image[0], image[2])
