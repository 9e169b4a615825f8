"""`cwsam train` and `cwsam evaluate` end to end on a simulated scene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cwsam_core.simulate import simulate_scene, write_scene

CWSAM = Path(sys.executable).with_name("cwsam")


def cwsam(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(CWSAM), *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_scene")
    return write_scene(simulate_scene(384, 384, seed=4), folder / "sar.tif", folder / "labels.tif")


def test_train_then_evaluate(tmp_path, scene):
    image, labels = scene
    model = tmp_path / "model.cwsam.pt"
    classes = "0:water:#1f78b4,1:bare soil,2:cropland,3:forest,4:urban:#d7191c"
    result = cwsam("train", "--image", image, "--labels", labels, "--backbone", "vit_nano", "--tile-size", 64,
                   "--classes", classes, "--epochs", 3, "--steps-per-epoch", 10, "--batch-size", 8, "--lr", 3e-3,
                   "--device", "cpu", "--seed", 1, "--output", model, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Best validation mIoU" in result.stdout and model.is_file()
    info = cwsam("info", model)
    assert "vit_nano (input 64 x 64 px)" in info.stdout and "water" in info.stdout

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image,label\n{image},{labels}\n")
    evaluated = cwsam("evaluate", "--model", model, "--pairs", pairs, "--device", "cpu", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert set(report) == {"miou", "overall_accuracy", "fwiou", "kappa", "pixels", "per_class"}
    assert report["pixels"] == 384 * 384
    assert [r["name"] for r in report["per_class"]] == ["water", "bare soil", "cropland", "forest", "urban"]
    assert set(report["per_class"][0]) == {"value", "name", "iou", "precision", "recall", "f1", "pixels"}
    assert 0 < report["miou"] <= 1
    table = cwsam("evaluate", "--model", model, "--image", image, "--labels", labels, "--device", "cpu")
    assert table.returncode == 0 and "mIoU" in table.stdout and "urban" in table.stdout


def test_train_errors_are_one_line(tmp_path, scene):
    image, labels = scene
    bad = cwsam("train", "--image", image, "--labels", tmp_path / "nope.tif", "--backbone", "vit_nano",
                "--classes", "0:a,1:b", "--output", tmp_path / "m.pt", "--quiet")
    assert bad.returncode == 2 and "label raster not found" in bad.stderr and "Traceback" not in bad.stderr
    bad = cwsam("train", "--image", image, "--labels", labels, "--backbone", "vit_nano", "--classes", "x",
                "--output", tmp_path / "m.pt", "--quiet")
    assert bad.returncode == 2 and "VALUE:NAME" in bad.stderr
    bad = cwsam("train", "--backbone", "vit_nano", "--output", tmp_path / "m.pt")
    assert bad.returncode == 2 and "--pairs" in bad.stderr
