"""Nothing the user gave is ever overwritten: an output that is an input, or another output, is refused
before any work with one line, and the input stays byte-identical."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_inference import card_for

from cwsam_core.common.paths import check_outputs, class_raster_files, same_file
from cwsam_core.errors import OutputConflictError
from cwsam_core.model.build import build_cwsam
from cwsam_core.model.model_file import save_model_file
from cwsam_core.simulate import simulate_scene, write_scene

CWSAM = Path(sys.executable).with_name("cwsam")


def cwsam(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(CWSAM), *map(str, args)], capture_output=True, text=True, timeout=300)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guard")
    image, labels = write_scene(simulate_scene(96, 96, seed=3), folder / "scene.tif", folder / "labels.tif")
    torch.manual_seed(0)
    model = save_model_file(folder / "nano.cwsam.pt", build_cwsam("vit_nano", 3, input_size=64), card_for(64))
    return folder, image, labels, model


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_classify_refuses_to_overwrite_its_inputs(files, tmp_path):
    folder, image, _, model = files
    before = {p: digest(p) for p in (image, model)}
    link = tmp_path / "link.tif"
    link.symlink_to(image)
    (tmp_path / "sub").mkdir()
    for output in (image, link, tmp_path / "sub" / ".." / "link.tif", folder / "." / "scene.tif"):
        assert_refused(cwsam("classify", image, "--model", model, "--output", output, "--device", "cpu", "--quiet"),
                       "would overwrite the SAR raster", "choose another output file name")
    assert_refused(cwsam("classify", image, "--model", model, "--output", model, "--quiet"),
                   "would overwrite the model file")
    # The input given through a link, the output as the real file: still the same file.
    assert_refused(cwsam("classify", link, "--model", model, "--output", image, "--quiet"), "would overwrite")
    # The confidence output given as a sidecar of the class map (its .qml).
    qml_named = tmp_path / "scene.qml"
    qml_named.write_text("<qgis/>")
    assert_refused(cwsam("classify", image, "--model", model, "--output", tmp_path / "scene.tif",
                         "--confidence", qml_named, "--quiet"), "the confidence output", "is the same file as")
    # The confidence raster is the input.
    assert_refused(cwsam("classify", image, "--model", model, "--output", tmp_path / "c.tif", "--confidence", image,
                         "--quiet"), "the confidence output", "would overwrite the SAR raster")
    assert {p: digest(p) for p in (image, model)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.tif", "scene.qml", "sub"]


def test_classify_refuses_one_file_for_two_outputs(files, tmp_path):
    _, image, _, model = files
    out = tmp_path / "classes.tif"
    assert_refused(cwsam("classify", image, "--model", model, "--output", out, "--confidence", out, "--quiet"),
                   "the confidence output", "is the same file as the output")
    assert_refused(cwsam("classify", image, "--model", model, "--output", out, "--confidence",
                         tmp_path / "classes.run.json", "--quiet"), "is the same file as the output")
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_to_overwrite_its_inputs(files, tmp_path):
    _, image, labels, _ = files
    before = {p: digest(p) for p in (image, labels)}
    common = ["--backbone", "vit_nano", "--classes", "0:water,1:soil,2:crop,3:forest,4:urban", "--quiet"]
    assert_refused(cwsam("train", "--image", image, "--labels", labels, "--output", labels, *common),
                   "the model file", "would overwrite the label raster")
    assert_refused(cwsam("train", "--image", image, "--labels", labels, "--output", image, *common),
                   "would overwrite the training image")
    # The training state written beside the model file (<output>.state.pt) would be the labels.
    os.link(labels, tmp_path / "m.pt.state.pt")
    assert_refused(cwsam("train", "--image", image, "--labels", labels, "--output", tmp_path / "m.pt", *common),
                   "would overwrite the label raster")
    assert {p: digest(p) for p in (image, labels)} == before
    assert not (tmp_path / "m.pt").exists()


def test_info_on_a_raster_says_it_is_not_a_model_file(files):
    _, image, _, _ = files
    result = cwsam("info", image)
    assert_refused(result, "is not a model file: it is a TIFF/GeoTIFF raster")
    assert "pickled" not in result.stderr


def test_check_outputs_rules(tmp_path):
    a = tmp_path / "a.tif"
    a.write_bytes(b"x")
    assert same_file(a, tmp_path / "x" / ".." / "a.tif")
    assert not same_file(a, tmp_path / "b.tif")
    check_outputs([("SAR raster", [a])], [("output", class_raster_files(tmp_path / "b.tif"))])
    with pytest.raises(OutputConflictError, match="would overwrite the SAR raster"):
        check_outputs([("SAR raster", [a])], [("output", class_raster_files(tmp_path / "a.tif"))])
    with pytest.raises(OutputConflictError, match=r"output .*b\.tif \(with its \.qml\) is the same file"):
        check_outputs([], [("confidence", [tmp_path / "b.qml"]), ("output", class_raster_files(tmp_path / "b.tif"))])
