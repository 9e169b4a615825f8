"""Many scenes at once: a folder of outputs, a scene list, skips, failures that do not stop the batch,
torchrun processes sharing the scenes, and Cloud-Optimised GeoTIFF output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from test_inference import PerPixelModel, card_for, read, write_sar

from cwsam_core.engine.inference import classify_raster
from cwsam_core.model.build import build_cwsam
from cwsam_core.model.model_file import save_model_file

CWSAM = Path(sys.executable).with_name("cwsam")


def cwsam(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(CWSAM), *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_model_file(tmp_path_factory.mktemp("batch_model") / "nano.cwsam.pt",
                           build_cwsam("vit_nano", 3, input_size=64), card_for(64))


@pytest.fixture()
def scenes(tmp_path) -> list:
    return [write_sar(tmp_path / f"scene{i}.tif", 70, 80, seed=i) for i in range(3)]


def test_a_batch_keeps_going_past_a_corrupt_scene(tmp_path, model, scenes):
    corrupt = tmp_path / "scene1.tif"
    corrupt.write_bytes(b"II*\x00 not really a tiff")
    out = tmp_path / "out"
    out.mkdir()
    result = cwsam("classify", *scenes, "--model", model, "--output-dir", out, "--with-confidence", "--quiet")
    assert result.returncode == 1, result.stderr
    assert sorted(p.name for p in out.glob("*.tif")) == ["scene0_classes.tif", "scene0_confidence.tif",
                                                          "scene2_classes.tif", "scene2_confidence.tif"]
    assert "2 classified, 0 skipped, 1 failed" in result.stdout
    assert "failed: " + str(corrupt) in result.stderr and "is not a raster that GDAL can read" in result.stderr
    assert not any(".partial" in p.name for p in out.iterdir())
    # A second run skips what exists; --overwrite replaces it.
    again = cwsam("classify", scenes[0], scenes[2], "--model", model, "--output-dir", out, "--quiet")
    assert again.returncode == 0 and "0 classified, 2 skipped, 0 failed" in again.stdout
    before = (out / "scene0_classes.run.json").stat().st_mtime_ns
    forced = cwsam("classify", scenes[0], "--model", model, "--output-dir", out, "--overwrite", "--quiet")
    assert forced.returncode == 0 and (out / "scene0_classes.run.json").stat().st_mtime_ns != before


def test_a_scene_list_and_its_errors(tmp_path, model, scenes):
    out = tmp_path / "out"
    out.mkdir()
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# scenes\n{scenes[0].name}\n\n{scenes[2]}\n")
    result = cwsam("classify", "--list", listing, "--model", model, "--output-dir", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.tif")) == ["scene0_classes.tif", "scene2_classes.tif"]
    listing.write_text(f"{scenes[0].name}\nmissing.tif\n")
    bad = cwsam("classify", "--list", listing, "--model", model, "--output-dir", tmp_path / "out", "--quiet")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "scenes.txt, line 2: file not found" in bad.stderr
    for args, message in (
        (["--output-dir", "/proc"], "cannot write in the output folder /proc"),
        (["--output-dir", tmp_path / "absent"], "output folder does not exist"),
        (["--output", tmp_path / "one.tif"], "3 scenes: give --output-dir"),
        ([], "give --output FILE (one scene) or --output-dir FOLDER"),
    ):
        refused = cwsam("classify", *scenes, "--model", model, *args, "--quiet")
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "one.tif").exists() and not (tmp_path / "absent").exists()


def test_two_torchrun_processes_share_the_scenes(tmp_path, model):
    scenes = [write_sar(tmp_path / f"s{i}.tif", 48, 48, seed=i) for i in range(4)]
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "cwsam_core.cli", "classify", *map(str, scenes), "--model", str(model), "--output-dir", str(out),
         "--device", "cpu", "--threads", "1", "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.run.json"))]
    assert len(records) == 4
    ranks = sorted(r["process"]["rank"] for r in records)
    assert ranks == [0, 0, 1, 1] and all(r["process"]["world_size"] == 2 for r in records)
    # Each scene was classified exactly once: one "Classes written" line per scene over both processes.
    for scene in scenes:
        assert result.stdout.count(f"{scene}: Classes written") == 1


def test_cloud_optimised_output_validates(tmp_path, model):
    from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate

    image = write_sar(tmp_path / "sar.tif", 600, 640, seed=2)
    result = classify_raster(image, tmp_path / "classes.tif", PerPixelModel(64), card_for(64),
                             confidence_path=tmp_path / "confidence.tif", cog=True)
    plain = classify_raster(image, tmp_path / "plain.tif", PerPixelModel(64), card_for(64))
    for path in (result.output, result.confidence):
        warnings, errors, _ = validate(str(path), full_check=True)
        assert errors == [], errors
    with rasterio.open(result.output) as cog:
        assert cog.overviews(1) and cog.colormap(1)[0][:3] == (0x1f, 0x5f, 0xff)  # water, #1f5fff
        assert cog.crs.to_string() == "EPSG:32633"
    assert np.array_equal(read(result.output), read(plain.output))
    assert json.loads(result.record.read_text())["cloud_optimised"] is True
    small = write_sar(tmp_path / "small.tif", 100, 90)
    cli = cwsam("classify", small, "--model", model, "--output", tmp_path / "cli.tif", "--cog", "--quiet")
    assert cli.returncode == 0, cli.stderr
    assert validate(str(tmp_path / "cli.tif"))[1] == []


def test_polygons_beside_the_class_maps(tmp_path, model, scenes):
    import pyogrio

    out = tmp_path / "out"
    out.mkdir()
    single = cwsam("classify", scenes[0], "--model", model, "--output", tmp_path / "one.tif",
                   "--vector", tmp_path / "one.gpkg", "--with-confidence", "--min-area", 500, "--quiet")
    assert single.returncode == 0, single.stderr
    import shapely

    meta, _, geometry, fields = pyogrio.raw.read(tmp_path / "one.gpkg")
    columns = dict(zip(meta["fields"], fields))
    assert len(geometry) > 0 and {"class", "class_name", "area_m2", "confidence"} <= set(columns)
    assert shapely.is_valid(shapely.from_wkb(geometry)).all() and meta["crs"] == "EPSG:32633"
    assert not np.isnan(columns["confidence"].astype(float)).any()
    batch = cwsam("classify", scenes[0], scenes[2], "--model", model, "--output-dir", out, "--with-vectors",
                  "--quiet")
    assert batch.returncode == 0, batch.stderr
    assert sorted(p.name for p in out.glob("*.gpkg")) == ["scene0_polygons.gpkg", "scene2_polygons.gpkg"]
    refused = cwsam("classify", scenes[1], "--model", model, "--output", tmp_path / "two.tif", "--vector", model,
                    "--quiet")
    assert refused.returncode == 2 and "would overwrite the model file" in refused.stderr
    assert not (tmp_path / "two.tif").exists()
