"""Inputs that would give a meaningless result are refused before any work, in one line naming the problem:
evaluation with nothing to score, a class name given twice, zero threads; an overlap that multiplies the work
is said with its cost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from plugin_helpers import CLASSES, write_labels, write_model, write_sar

from cwsam_core.cli import main
from cwsam_core.common.classes import parse_classes
from cwsam_core.engine.inference import classify_file
from cwsam_core.errors import ClassificationError, ClassSpecError


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "nano.cwsam.pt")


def rewrite_labels(path: Path, values: np.ndarray, **profile) -> Path:
    with rasterio.open(path) as src:
        meta = src.profile
    meta.update(profile)
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(values.astype(meta["dtype"])[None])
    return path


def evaluate(capsys, model, image, labels):
    status = main(["evaluate", "--model", str(model), "--image", str(image), "--labels", str(labels), "--json"])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_evaluation_with_nothing_to_score_fails_in_one_line(tmp_path, capsys, model):
    image = write_sar(tmp_path / "sar.tif")
    labels = write_labels(tmp_path / "labels.tif", image)
    status, out, err = evaluate(capsys, model, image, labels)  # the labels as made: scored
    assert status == 0 and json.loads(out)["pixels"] == 80 * 96

    rewrite_labels(labels, np.zeros((80, 96)))  # every pixel nodata (0)
    status, out, err = evaluate(capsys, model, image, labels)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert "labels.tif: no labelled pixel on the grid of sar.tif" in err and "nothing to score" in err

    rewrite_labels(labels, np.full((80, 96), 7))  # values that no class of the model names
    status, out, err = evaluate(capsys, model, image, labels)
    assert status == 2 and err.count("\n") == 1
    assert "labels.tif: none of its values is one of the classes (values found: 7; the classes: " in err
    assert ", ".join(f"{c.value}:{c.name}" for c in CLASSES) in err

    far = write_sar(tmp_path / "far.tif", origin=(900000.0, 5600000.0))  # the same CRS, 1000 km away
    elsewhere = write_labels(tmp_path / "elsewhere.tif", far)
    status, out, err = evaluate(capsys, model, image, elsewhere)
    assert status == 2 and err.count("\n") == 1
    assert "elsewhere.tif does not overlap sar.tif (their extents do not meet)" in err and "nothing to score" in err


@pytest.mark.parametrize("spec", ["0:water,1:water", "0:Water,1:water:#00ff00", "1:forest,2:urban,3:FOREST"])
def test_a_class_name_given_twice_is_refused(spec):
    with pytest.raises(ClassSpecError, match="each class needs a name of its own; .* is given to more than one"):
        parse_classes(spec)
    assert [c.name for c in parse_classes("0:water,1:forest")] == ["water", "forest"]


def test_zero_threads_is_refused_before_any_work(tmp_path, capsys, model):
    image = write_sar(tmp_path / "sar.tif")
    with pytest.raises(ClassificationError, match="threads must be at least 1, got 0"):
        classify_file(image, tmp_path / "classes.tif", model, device="cpu", threads=0)
    status = main(["classify", str(image), "--model", str(model), "--output", str(tmp_path / "c.tif"),
                   "--threads", "0", "--quiet"])
    assert status == 2 and "threads must be at least 1, got 0" in capsys.readouterr().err
    assert not list(tmp_path.glob("c*"))


def test_an_overlap_that_multiplies_the_work_is_said_with_its_cost(tmp_path, model):
    image = write_sar(tmp_path / "sar.tif")
    usual = classify_file(image, tmp_path / "usual.tif", model, device="cpu", overlap=0.5)
    assert not [w for w in usual.warnings if "overlap" in w]
    heavy = classify_file(image, tmp_path / "heavy.tif", model, device="cpu", overlap=0.9)
    said = [w for w in heavy.warnings if "overlap 0.9" in w]
    # 64 px tiles: stride 6 instead of the default's 48, (48 / 6) ** 2 = 64 times the work.
    assert len(said) == 1 and "about 64 times as often as the default 0.25" in said[0], heavy.warnings
    record = json.loads((tmp_path / "heavy.run.json").read_text())
    assert any("overlap 0.9" in w for w in record["warnings"])


@pytest.mark.parametrize("bands, said", [
    ("1,1", "--bands uses band 1 for several model bands: each model band needs a band of its own"),
    ("2,1", "--bands 2,1 would read band 2 (VH) as VV, band 1 (VV) as VH, against the raster's band names"),
])
def test_bands_used_twice_or_against_their_names_are_refused(tmp_path, capsys, model, bands, said):
    image = write_sar(tmp_path / "sar.tif")  # bands described VV, VH; the model expects VV, VH
    status = main(["classify", str(image), "--model", str(model), "--output", str(tmp_path / "c.tif"),
                   "--bands", bands, "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and said in err and err.count("\n") == 1
    assert not list(tmp_path.glob("c*"))
    if bands == "2,1":
        return  # training takes the bands in the order given and names the model's bands after them: VH, VV
    labels = write_labels(tmp_path / "labels.tif", image)
    status = main(["train", "--image", str(image), "--labels", str(labels), "--backbone", "vit_nano",
                   "--bands", bands, "--output", str(tmp_path / "m.cwsam.pt"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert status == 2 and said in err
    assert not list(tmp_path.glob("m.*"))


def write_values(path: Path, values: np.ndarray, dtype: str) -> Path:
    """A 2-band (VV, VH) raster of ``values`` (2 x H x W) in ``dtype``, on write_sar's grid."""
    image = write_sar(path.with_name("grid.tif"))
    with rasterio.open(image) as src:
        profile = src.profile
    profile.update(dtype=dtype)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(dtype))
        dst.set_band_description(1, "VV")
        dst.set_band_description(2, "VH")
    return path


def test_values_no_sar_product_has_are_refused(tmp_path, capsys, model):
    db = np.stack([rasterio.open(write_sar(tmp_path / "db.tif")).read(i) for i in (1, 2)])
    cases = {
        # dB x 100 as integers (-4175..799 in the sweep): read as dB, it would be 83 % water
        "scaled.tif": (np.round(db * 100), "int16", "runs from", "which backscatter in dB cannot"),
        "constant.tif": (np.full(db.shape, -12.5), "float32", "band 1 holds the value -12.5 wherever it has data",
                         "a constant image is not SAR backscatter"),
    }
    for name, (values, dtype, first, second) in cases.items():
        image = write_values(tmp_path / name, values, dtype)
        status = main(["classify", str(image), "--model", str(model), "--output", str(tmp_path / "c.tif"),
                       "--quiet"])
        err = capsys.readouterr().err
        assert status == 2 and first in err and second in err and err.count("\n") == 1, err
        assert not (tmp_path / "c.tif").exists()
    # The same values in real dB pass.
    image = write_values(tmp_path / "real.tif", db, "float32")
    assert main(["classify", str(image), "--model", str(model), "--output", str(tmp_path / "c.tif"), "--quiet"]) == 0


def test_training_into_a_folder_it_cannot_write_stops_before_training(tmp_path, capsys):
    image = write_sar(tmp_path / "sar.tif")
    labels = write_labels(tmp_path / "labels.tif", image)
    missing = tmp_path / "no-such-folder" / "m.cwsam.pt"
    status = main(["train", "--image", str(image), "--labels", str(labels), "--backbone", "vit_nano",
                   "--output", str(missing), "--epochs", "1"])
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "error:" in line]  # (after the progress bar's lines)
    assert status == 2 and said == [f"cwsam train: error: model file folder does not exist: {missing.parent}"]
    # A folder without write permission (root writes anywhere: then the permission part cannot be shown).
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    status = main(["train", "--image", str(image), "--labels", str(labels), "--backbone", "vit_nano",
                   "--output", str(locked / "m.cwsam.pt"), "--epochs", "1"])
    err = capsys.readouterr().err
    if os.geteuid() != 0:
        assert status == 2 and "cannot write the model file in" in err and "permission denied" in err
    assert not list(locked.iterdir()) or os.geteuid() == 0


def test_an_impossible_tile_size_is_refused_before_any_work(tmp_path, capsys, model):
    from cwsam_core.engine.runners import MAX_TILE_SIZE, available_memory, tile_size_problem

    image = write_sar(tmp_path / "sar.tif")
    labels = write_labels(tmp_path / "labels.tif", image)
    said = f"tile size 1000000 px is beyond what any backbone can run (at most {MAX_TILE_SIZE} px"
    for command in (["classify", str(image), "--model", str(model), "--output", str(tmp_path / "c.tif"), "--quiet"],
                    ["export", str(model), "--output", str(tmp_path / "m.onnx")],
                    ["train", "--image", str(image), "--labels", str(labels), "--backbone", "vit_nano",
                     "--output", str(tmp_path / "m.cwsam.pt")]):
        status = main([*command, "--tile-size", "1000000"])
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert status == 2 and len(errors) == 1 and said in errors[0], (command[0], errors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "sar.tif"]
    # Under the cap, the memory one tile needs is weighed against the memory available.
    free = available_memory()
    if free is not None and 4 * 8192 ** 2 * 7 > free:
        assert "more than the" in tile_size_problem(8192)
    assert tile_size_problem(256) is None and "multiple of 16" in tile_size_problem(250)


def test_evaluate_takes_bands_like_classify(tmp_path, capsys, model):
    image = write_sar(tmp_path / "sar.tif")
    labels = write_labels(tmp_path / "labels.tif", image)
    with rasterio.open(image) as src:
        vv, vh = src.read(1), src.read(2)
        profile = src.profile
    profile.update(count=3)
    three = tmp_path / "three.tif"  # VH, an extra band, VV; no band descriptions
    with rasterio.open(three, "w", **profile) as dst:
        dst.write(np.stack([vh, np.zeros_like(vv) - 15, vv]))
    status, out, err = evaluate(capsys, model, three, labels)
    assert status == 2 and "--bands" in err
    status = main(["evaluate", "--model", str(model), "--image", str(three), "--labels", str(labels),
                   "--bands", "3,1", "--json"])
    scored = json.loads(capsys.readouterr().out)
    status_same, out_same, _ = evaluate(capsys, model, image, labels)
    assert status == 0 and status_same == 0 and scored["miou"] == pytest.approx(json.loads(out_same)["miou"])


def test_each_engine_warning_is_printed_once(tmp_path, capsys, model):
    image = tmp_path / "plain.tif"  # 8-bit, no CRS: two warnings
    with rasterio.open(image, "w", driver="GTiff", width=64, height=64, count=2, dtype="uint8") as dst:
        dst.write(np.random.default_rng(0).integers(1, 255, (2, 64, 64)).astype("uint8"))
    assert main(["classify", str(image), "--model", str(model), "--output", str(tmp_path / "c.tif"), "--quiet"]) == 0
    err = capsys.readouterr().err
    crs = [line for line in err.splitlines() if "has no coordinate reference system" in line]
    scale = [line for line in err.splitlines() if "look like amplitude scale" in line]
    assert len(crs) == 1 and len(scale) == 1 and crs[0].startswith("warning: plain has no coordinate")
    record = json.loads((tmp_path / "c.run.json").read_text())
    assert len(record["warnings"]) == 2  # and both are kept in the run record


def test_a_sam_checkpoint_a_self_contained_model_does_not_use_is_said(tmp_path, capsys, model):
    image = write_sar(tmp_path / "sar.tif")
    sam = tmp_path / "sam_vit_b_01ec64.pth"
    sam.write_bytes(b"unused")
    assert main(["classify", str(image), "--model", str(model), "--sam-checkpoint", str(sam),
                 "--output", str(tmp_path / "c.tif"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert ("warning: --sam-checkpoint is not used: nano.cwsam.pt is a vit_nano model trained from scratch and "
            "holds every weight") in err
    assert main(["classify", str(image), "--model", str(model), "--output", str(tmp_path / "d.tif"), "--quiet"]) == 0
    assert "--sam-checkpoint" not in capsys.readouterr().err


def test_training_labels_that_miss_the_image_are_refused_in_one_line(tmp_path, capsys):
    image = write_sar(tmp_path / "sar.tif")
    far = write_sar(tmp_path / "far.tif", origin=(900000.0, 5600000.0), crs="EPSG:32634")  # another CRS, elsewhere
    labels = write_labels(tmp_path / "far_labels.tif", far)
    status = main(["train", "--image", str(image), "--labels", str(labels), "--backbone", "vit_nano",
                   "--classes", ",".join(f"{c.value}:{c.name}" for c in CLASSES), "--output",
                   str(tmp_path / "m.cwsam.pt"), "--epochs", "1"])
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line or "warning:" in line]
    assert status == 2 and err == [
        "cwsam train: error: far_labels.tif does not overlap sar.tif (their extents do not meet): give labels of that "
        "image: nothing to train on"]
    assert not list(tmp_path.glob("m.*"))


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_an_interrupt_while_polygons_are_written_leaves_the_previous_set_whole(tmp_path, capsys, model, monkeypatch,
                                                                                stop):
    from cwsam_core.cli import classify as classify_command

    image = write_sar(tmp_path / "sar.tif")
    out, vector = tmp_path / "classes.tif", tmp_path / "polygons.gpkg"
    args = ["classify", str(image), "--model", str(model), "--output", str(out), "--with-confidence",
            "--vector", str(vector), "--quiet"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(("classes", "polygons"))}
    assert {"classes.tif", "classes_confidence.tif", "classes.run.json", "polygons.gpkg"} <= set(before)

    def vectorize_then_stop(*a, **k):
        vector.write_bytes(b"half a GeoPackage")  # as if the writer had begun
        raise stop("stopped while writing polygons")

    monkeypatch.setattr(classify_command, "vectorize_file", vectorize_then_stop)
    if stop is KeyboardInterrupt:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == ("cwsam classify: error: interrupted; the previous outputs of the scene "
                                                "are as they were")
    else:
        with pytest.raises(RuntimeError):
            main(args)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(("classes", "polygons"))}
    assert after == before  # the whole previous set, byte for byte, and nothing else
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".previous", ".partial"))]


DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


def test_a_file_cwsam_did_not_write_is_never_replaced_without_overwrite(tmp_path, capsys, model):
    import shutil

    image = write_sar(tmp_path / "sar.tif")
    reference, labels = tmp_path / "out.tif", tmp_path / "my_labels.gpkg"
    shutil.copy(DEMO / "reference.tif", reference)
    shutil.copy(DEMO / "labels.gpkg", labels)
    kept = {p: p.read_bytes() for p in (reference, labels)}

    def refused(args, option, path):
        status = main(args)
        err = capsys.readouterr().err
        assert status == 2 and f"{path} exists and is not" in err and f"{option} does not replace it" in err, err
        assert "--overwrite" in err and all(p.read_bytes() == b for p, b in kept.items())

    classify = ["classify", str(image), "--model", str(model), "--quiet"]
    refused([*classify, "--output", str(reference)], "--output", reference)
    refused([*classify, "--output", str(tmp_path / "c.tif"), "--vector", str(labels)], "--vector", labels)
    assert not (tmp_path / "c.tif").exists()
    refused(["vectorize", str(DEMO / "reference.tif"), "--output", str(labels)], "--output", labels)
    refused(["train", "--image", str(image), "--labels", str(write_labels(tmp_path / "l.tif", image)),
             "--backbone", "vit_nano", "--output", str(reference)], "--output", reference)
    refused(["export", str(model), "--output", str(reference)], "--output", reference)
    # A map, confidence and polygons that cwsam classify wrote there are replaced by a new run...
    ours = [*classify, "--output", str(tmp_path / "c.tif"), "--with-confidence", "--vector", str(tmp_path / "p.gpkg")]
    assert main(ours) == 0 and main(ours) == 0
    # ... and with --overwrite any file is.
    assert main([*classify, "--output", str(reference), "--overwrite"]) == 0
    assert reference.read_bytes() != kept[reference]
