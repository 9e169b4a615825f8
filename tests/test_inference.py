"""Classifying whole rasters: tiling, blending, output format, nodata, cancel/failure, bad input, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from cwsam_core.common.card import ClassInfo, ModelCard
from cwsam_core.engine.inference import blend_window, classify_file, classify_raster, tile_offsets
from cwsam_core.errors import ClassificationCancelled, ClassificationError, RadiometryError
from cwsam_core.model.build import build_cwsam
from cwsam_core.model.model_file import save_model_file

CLASSES = [ClassInfo(0, "water", "#1f5fff"), ClassInfo(1, "land", "#2e9e3f"), ClassInfo(7, "urban", "#c73b3b")]
NORMALIZATION = {"mean": [-14.0, -21.0, 7.0], "std": [5.0, 5.0, 3.0]}
CRS = "EPSG:32633"
TRANSFORM = from_origin(500000, 4600000, 10, 10)


def write_sar(path: Path, height: int, width: int, seed: int = 0, descriptions=("VV", "VH"), nodata=None,
              crs=CRS, transform=TRANSFORM) -> Path:
    """A 2-band dB raster with smooth structure (so classes form regions) plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    vv = -14 + 8 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + rng.normal(0, 1.5, (height, width))
    vh = vv - 7 + rng.normal(0, 1.0, (height, width))
    data = np.stack([vv, vh]).astype(np.float32)[: len(descriptions)]
    profile = dict(driver="GTiff", width=width, height=height, count=len(descriptions), dtype="float32")
    if crs:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, name in enumerate(descriptions, start=1):
            dst.set_band_description(index, name)
    return path


class PerPixelModel(nn.Module):
    """Logits from each pixel alone (a 1x1 convolution): tiling cannot change its answer."""

    def __init__(self, input_size: int, num_classes: int = 3) -> None:
        super().__init__()
        self.input_size = input_size
        self.conv = nn.Conv2d(3, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[-2.0, 0.5, 0.1], [0.3, 0.2, -0.4], [2.0, -0.5, 0.2]])[:, :, None, None])
            self.conv.bias.copy_(torch.tensor([0.0, 0.4, -0.3]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)


def card_for(input_size: int, **overrides) -> ModelCard:
    values = dict(backbone="vit_nano", input_size=input_size, classes=list(CLASSES), bands=["VV", "VH"],
                  input_scale="db", normalization=dict(NORMALIZATION))
    values.update(overrides)
    return ModelCard(**values)


@pytest.fixture(scope="module")
def nano_model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_cwsam("vit_nano", 3, input_size=64)
    return save_model_file(tmp_path_factory.mktemp("model") / "nano.cwsam.pt", model, card_for(64))


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_tile_grid_and_window():
    assert tile_offsets(50, 64, 48) == [0]
    assert tile_offsets(64, 64, 48) == [0]
    assert tile_offsets(170, 64, 48) == [0, 48, 96, 106]
    window = blend_window(64)
    assert window.shape == (64, 64) and window.min() > 0
    assert window[32, 32] > 0.99 and window[0, 0] < 0.01


@pytest.mark.parametrize("height,width", [(40, 50), (64, 64), (150, 170)])
def test_rasters_of_any_size_classify(tmp_path, nano_model_file, height, width):
    image = write_sar(tmp_path / "sar.tif", height, width)
    result = classify_file(image, tmp_path / "classes.tif", nano_model_file, batch_size=3)
    classes = read(result.output)
    assert classes.shape == (height, width)
    assert set(np.unique(classes)) <= {0, 1, 7}
    assert sum(result.pixel_counts.values()) == height * width


def test_tiled_equals_one_piece_for_a_per_pixel_model(tmp_path, monkeypatch):
    import cwsam_core.engine.inference

    monkeypatch.setattr(cwsam_core.engine.inference, "FLUSH_COLUMNS", 50)  # rows are written in several column chunks
    image = write_sar(tmp_path / "sar.tif", 150, 170, seed=3)
    tiled = classify_raster(image, tmp_path / "tiled.tif", PerPixelModel(32), card_for(32),
                            confidence_path=tmp_path / "tiled_conf.tif", overlap=0.25, batch_size=5)
    whole = classify_raster(image, tmp_path / "whole.tif", PerPixelModel(176), card_for(176),
                            confidence_path=tmp_path / "whole_conf.tif")
    a, b = read(tiled.output), read(whole.output)
    assert len(np.unique(a)) == 3, "the test raster should produce every class"
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(read(tiled.confidence), read(whole.confidence))


def test_output_georeferencing_colours_names_and_style(tmp_path, nano_model_file, qgis_app):
    image = write_sar(tmp_path / "sar.tif", 300, 280)
    result = classify_file(image, tmp_path / "classes.tif", nano_model_file, confidence_path=tmp_path / "conf.tif")
    with rasterio.open(image) as src, rasterio.open(result.output) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height, out.count, out.dtypes[0]) == (280, 300, 1, "uint8")
        assert out.nodata == 255
        assert out.profile["compress"].lower() == "deflate" and out.profile.get("tiled")
        colours = out.colormap(1)
        assert colours[0][:3] == (0x1F, 0x5F, 0xFF) and colours[7][:3] == (0xC7, 0x3B, 0x3B)
    # GDAL itself reads the category names (Debian's bindings, in their own process: rasterio's and
    # Debian's GDAL builds are kept apart). The dataset must outlive its band object, and GDAL 3.6's
    # GTiff loads the .aux.xml lazily on the first georeferencing/metadata query, as gdalinfo makes.
    probe = ("from osgeo import gdal; import sys; ds = gdal.Open(sys.argv[1]); band = ds.GetRasterBand(1); "
             "band.GetNoDataValue(); print('|'.join(band.GetCategoryNames()))")
    names = subprocess.run(["/usr/bin/python3", "-c", probe, str(result.output)], capture_output=True, text=True,
                           check=True).stdout.strip().split("|")
    assert names[0] == "water" and names[1] == "land" and names[7] == "urban"

    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer

    layer = QgsRasterLayer(str(result.output), "classes")
    assert layer.isValid()
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer), "the .qml sidecar styles the layer"
    assert [(c.value, c.label) for c in renderer.classes()] == [(0, "water"), (1, "land"), (7, "urban")]

    confidence = read(result.confidence)
    assert confidence.max() <= 100 and confidence.min() >= 34  # max of 3 probabilities >= 1/3
    record = json.loads(result.record.read_text())
    assert record["input"]["sha256"] and record["parameters"]["tile_size"] == 64
    assert sum(record["pixels_per_class"].values()) == 300 * 280
    assert record["area_unit"] == "m2"
    assert sum(record["area_per_class"].values()) == pytest.approx(300 * 280 * 100.0)


def test_nan_and_nodata_come_out_as_nodata(tmp_path, nano_model_file):
    image = write_sar(tmp_path / "sar.tif", 130, 140, nodata=-9999.0)
    with rasterio.open(image, "r+") as dst:
        data = dst.read()
        data[:, 10:20, 10:30] = -9999.0
        data[0, 50:60, 70:90] = np.nan
        data[1, 100:130, :] = -9999.0  # a whole band of rows, across tiles
        dst.write(data)
    result = classify_file(image, tmp_path / "classes.tif", nano_model_file)
    classes = read(result.output)
    assert (classes[10:20, 10:30] == 255).all()
    assert (classes[50:60, 70:90] == 255).all()
    assert (classes[100:130] == 255).all()
    assert (classes[:10] != 255).all()
    assert sum(result.pixel_counts.values()) == int((classes != 255).sum())


def test_cancel_and_failure_leave_nothing(tmp_path, nano_model_file):
    image = write_sar(tmp_path / "sar.tif", 150, 170)
    out = tmp_path / "out"
    out.mkdir()
    calls = []
    with pytest.raises(ClassificationCancelled):
        classify_file(image, out / "classes.tif", nano_model_file, confidence_path=out / "conf.tif",
                      batch_size=1, should_cancel=lambda: len(calls) > 2, progress=lambda f, m: calls.append(f))
    assert list(out.iterdir()) == []

    class Broken(PerPixelModel):
        def forward(self, images):
            raise RuntimeError("out of memory (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        classify_raster(image, out / "classes.tif", Broken(32), card_for(32), confidence_path=out / "conf.tif")
    assert list(out.iterdir()) == []


def test_bad_inputs_give_clear_errors(tmp_path, nano_model_file):
    good = write_sar(tmp_path / "sar.tif", 70, 70)
    out = tmp_path / "classes.tif"
    with pytest.raises(ClassificationError, match="input raster not found"):
        classify_file(tmp_path / "missing.tif", out, nano_model_file)
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(ClassificationError, match="not a raster that GDAL can read"):
        classify_file(text, out, nano_model_file)
    one_band = write_sar(tmp_path / "vv.tif", 70, 70, descriptions=("VV",))
    with pytest.raises(RadiometryError, match="VH"):
        classify_file(one_band, out, nano_model_file)
    hh_model = tmp_path / "hh.cwsam.pt"
    save_model_file(hh_model, build_cwsam("vit_nano", 3, input_size=64), card_for(64, bands=["HH", "HV"]))
    with pytest.raises(RadiometryError, match="HH"):
        classify_file(good, out, hh_model)
    with pytest.raises(ClassificationError, match="folder does not exist"):
        classify_file(good, tmp_path / "nowhere" / "classes.tif", nano_model_file)
    with pytest.raises(ClassificationError, match="is a folder"):
        classify_file(good, tmp_path, nano_model_file)
    with pytest.raises(ClassificationError, match="multiple of 16"):
        classify_file(good, out, nano_model_file, tile_size=100)
    assert not out.exists()


def test_raster_without_crs_classifies_with_a_warning(tmp_path, nano_model_file):
    plain = tmp_path / "radar_geometry.tif"
    write_sar(plain, 90, 80, crs=None)
    result = classify_file(plain, tmp_path / "classes.tif", nano_model_file)
    assert any("no coordinate reference system" in w for w in result.warnings)
    with rasterio.open(result.output) as out:
        assert out.crs is None and (out.width, out.height) == (80, 90)
    assert result.area_unit == "pixels"


def test_other_tile_size_rebuilds_the_model(tmp_path, nano_model_file):
    image = write_sar(tmp_path / "sar.tif", 100, 100)
    result = classify_file(image, tmp_path / "classes.tif", nano_model_file, tile_size=32)
    assert json.loads(result.record.read_text())["parameters"]["tile_size"] == 32
    assert read(result.output).shape == (100, 100)


def test_real_sentinel1_chip_classifies(tmp_path, shared_data, nano_model_file):
    chips = sorted((shared_data / "sen1floods11_s1hand" / "S1Hand").glob("*.tif"))
    assert chips, "the Sentinel-1 folder has no chips"
    chip = chips[0]
    result = classify_file(chip, tmp_path / "chip_classes.tif", nano_model_file, batch_size=8)
    with rasterio.open(chip) as src, rasterio.open(result.output) as out:
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
        assert src.crs.to_epsg() == 4326
    assert result.area_unit == "m2" and sum(result.areas.values()) > 0
    assert sum(result.pixel_counts.values()) > 0


CWSAM = Path(sys.executable).with_name("cwsam")


def test_cli_classify(tmp_path, nano_model_file):
    image = write_sar(tmp_path / "sar.tif", 100, 120)
    out = tmp_path / "classes.tif"
    result = subprocess.run([str(CWSAM), "classify", str(image), "--model", str(nano_model_file), "--output", str(out),
                             "--confidence", str(tmp_path / "conf.tif"), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and (tmp_path / "conf.tif").is_file() and out.with_suffix(".qml").is_file()
    assert "water" in result.stdout and "area (m2)" in result.stdout
    bad = subprocess.run([str(CWSAM), "classify", str(tmp_path / "nope.tif"), "--model", str(nano_model_file),
                          "--output", str(tmp_path / "x.tif")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("cwsam classify: error: input raster not found")
    assert "Traceback" not in bad.stderr


def test_bounds_classify_a_window_on_the_raster_grid(tmp_path):
    image = write_sar(tmp_path / "sar.tif", 150, 170, seed=5)
    whole = classify_raster(image, tmp_path / "whole.tif", PerPixelModel(32), card_for(32))
    # Pixels are 10 m: x 500203..500611 touches columns 20..61, y 4599405..4599700 rows 30..59.
    bounds = (500203.0, 4599405.0, 500611.0, 4599700.0)
    part = classify_raster(image, tmp_path / "part.tif", PerPixelModel(32), card_for(32), bounds=bounds)
    with rasterio.open(part.output) as out, rasterio.open(image) as src:
        assert (out.width, out.height) == (42, 30)
        assert out.crs == src.crs
        assert out.transform == src.window_transform(rasterio.windows.Window(20, 30, 42, 30))
    np.testing.assert_array_equal(read(part.output), read(whole.output)[30:60, 20:62])
    assert sum(part.pixel_counts.values()) == 42 * 30
    record = json.loads(part.record.read_text())
    assert record["parameters"]["window"] == {"col_off": 20, "row_off": 30, "width": 42, "height": 30}
    # Bounds on pixel edges take exactly those pixels; bounds past the raster are clipped to it.
    edges = classify_raster(image, tmp_path / "edges.tif", PerPixelModel(32), card_for(32),
                            bounds=(500100.0, 4598000.0, 500300.0, 4600500.0))
    with rasterio.open(edges.output) as out:
        assert (out.width, out.height) == (20, 150)
    with pytest.raises(ClassificationError, match="does not overlap the raster"):
        classify_raster(image, tmp_path / "none.tif", PerPixelModel(32), card_for(32),
                        bounds=(600000.0, 4599000.0, 600100.0, 4599100.0))
    assert not (tmp_path / "none.tif").exists()


def test_test_time_flips_average_four_mirrored_passes(tmp_path, nano_model_file):
    from cwsam_core.engine.torch_runner import predict_probabilities

    class ColumnRamp(nn.Module):
        """Class 1 grows to the right: mirroring changes its answer, so the flips must average it out."""

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            ramp = torch.linspace(-1, 1, images.shape[-1]).expand_as(images[:, :1])
            return torch.cat([torch.zeros_like(ramp), ramp], dim=1)

    images = torch.randn(2, 3, 16, 16)
    plain = predict_probabilities(ColumnRamp(), images)
    flipped = predict_probabilities(ColumnRamp(), images, flips=True)
    assert not torch.allclose(plain, flipped)
    torch.testing.assert_close(flipped, torch.full_like(flipped, 0.5))  # a ramp and its mirror cancel
    # A per-pixel model is unchanged by mirroring: the same map, and the run record says flips were used.
    image = write_sar(tmp_path / "sar.tif", 70, 90)
    a = classify_raster(image, tmp_path / "a.tif", PerPixelModel(32), card_for(32))
    b = classify_raster(image, tmp_path / "b.tif", PerPixelModel(32), card_for(32), test_time_flips=True)
    assert np.array_equal(read(a.output), read(b.output))
    assert json.loads(b.record.read_text())["parameters"]["test_time_flips"] is True
    cli = subprocess.run([str(CWSAM), "classify", str(image), "--model", str(nano_model_file), "--output",
                          str(tmp_path / "c.tif"), "--flips", "--quiet"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert json.loads((tmp_path / "c.run.json").read_text())["parameters"]["test_time_flips"] is True
