"""Warm starts (``cwsam train --init-model``), versions of the review loop (``cwsam_core.training.retrain``) and their
refusals: one clear line each, and no version written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch

from cwsam_core.common.card import ClassInfo
from cwsam_core.common.paths import file_sha256
from cwsam_core.errors import RetrainCancelled, RetrainError
from cwsam_core.model.model_file import read_model_card, read_model_file
from cwsam_core.simulate import SIMULATED_CLASSES, simulate_scene, write_scene
from cwsam_core.training.config import TrainConfig
from cwsam_core.training.datasets import TrainingSource
from cwsam_core.training.loop import train
from cwsam_core.training.retrain import compare_maps, next_version_path, retrain, version_number

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from bench_review_loop import write_corrections  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CWSAM = Path(sys.executable).with_name("cwsam")
CLASSES = [ClassInfo(c.value, c.name, c.color) for c in SIMULATED_CLASSES]
SIZE = 128


def cwsam(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(CWSAM), *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A vit_nano parent trained a few steps on a summer scene (label raster), and a winter scene."""
    folder = tmp_path_factory.mktemp("retrain")
    image, labels = write_scene(simulate_scene(SIZE, SIZE, seed=3), folder / "summer.tif", folder / "labels.tif")
    winter = simulate_scene(SIZE, SIZE, seed=4, season="winter")
    scene, _ = write_scene(winter, folder / "winter.tif", folder / "winter_labels.tif")
    model = folder / "lc.cwsam.pt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train([TrainingSource(image, labels)], TrainConfig(
        backbone="vit_nano", classes=list(CLASSES), output=model, tile_size=64, epochs=1, steps_per_epoch=4,
        batch_size=2, warmup_steps=1, val_fraction=0.0, device="cpu"))
    torch.set_num_threads(threads)
    return {"folder": folder, "model": model, "image": image, "labels": labels, "scene": scene,
            "transform": winter.transform, "crs": winter.crs}


def corrections(parent, path: Path, values=(2, 1), offset=(0.0, 0.0)) -> Path:
    """Two 30 x 30 px squares on the winter scene, of the given class values (moved by ``offset`` metres)."""
    t = parent["transform"]
    squares = []
    for (row, col), value in zip(((20, 20), (70, 60)), values):
        x0, y0 = t * (col, row)
        x1, y1 = t * (col + 30, row + 30)
        squares.append((shapely.box(x0 + offset[0], y1 + offset[1], x1 + offset[0], y0 + offset[1]), value))
    write_corrections(path, squares, parent["crs"])
    return path


def files_in(folder: Path) -> set:
    return {p.name for p in folder.iterdir()}


def test_versions_are_numbered_beside_the_parent(tmp_path):
    assert next_version_path(tmp_path / "lc.cwsam.pt") == tmp_path / "lc.v2.cwsam.pt"
    assert next_version_path(tmp_path / "lc.v2.cwsam.pt") == tmp_path / "lc.v3.cwsam.pt"
    (tmp_path / "lc.v3.cwsam.pt").write_bytes(b"x")
    (tmp_path / "other.v9.cwsam.pt").write_bytes(b"x")
    # After an undo to v2, the next version does not replace v3.
    assert next_version_path(tmp_path / "lc.v2.cwsam.pt") == tmp_path / "lc.v4.cwsam.pt"
    assert next_version_path(tmp_path / "model.pt") == tmp_path / "model.v2.pt"
    assert version_number(tmp_path / "lc.v12.cwsam.pt") == 12 and version_number(tmp_path / "lc.cwsam.pt") == 1


def test_two_rounds_write_two_versions_with_their_lineage(parent, tmp_path):
    folder = parent["folder"]
    fixes = corrections(parent, tmp_path / "fixes.gpkg")
    before = read_model_file(parent["model"])[1]
    first = retrain(parent["model"], parent["scene"], fixes, "class", steps=3, batch_size=2, device="cpu")
    assert first.model_path == folder / "lc.v2.cwsam.pt" and first.version == 2
    second = retrain(first.model_path, parent["scene"], fixes, "class", steps=3, batch_size=2, replay=0.5,
                     device="cpu")
    assert second.model_path == folder / "lc.v3.cwsam.pt"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no work files left
    card, state = read_model_file(second.model_path)
    parent_card = read_model_card(parent["model"])
    assert card.provenance["parent"] == {"name": "lc.v2.cwsam.pt", "sha256": file_sha256(first.model_path)}
    assert [p["name"] for p in card.provenance["lineage"]] == ["lc.cwsam.pt", "lc.v2.cwsam.pt"]
    assert card.classes == parent_card.classes and card.bands == parent_card.bands
    assert card.normalization == parent_card.normalization and card.input_size == parent_card.input_size
    # The weights moved from the parent's (real training steps) and the parent file is untouched.
    assert any(not torch.equal(before[k], state[k]) for k in before)
    assert first.parent_sha256 == file_sha256(parent["model"])
    roles = [d["role"] for d in card.provenance["data"]]
    assert roles == ["training", "replay"]  # the parent's own label raster replayed
    assert card.provenance["data"][1]["labels"] == str(parent["labels"].absolute())


def test_cancel_writes_no_version(parent, tmp_path):
    fixes = corrections(parent, tmp_path / "fixes.gpkg")
    present = files_in(parent["folder"])
    with pytest.raises(RetrainCancelled, match="no version was written"):
        retrain(parent["model"], parent["scene"], fixes, "class", steps=50, batch_size=2, device="cpu",
                should_cancel=lambda: True)
    assert files_in(parent["folder"]) == present


@pytest.mark.parametrize("case", ["outside", "unknown class", "empty", "changed before", "changed while training"])
def test_bad_input_is_one_line_and_writes_nothing(parent, tmp_path, case):
    fixes = tmp_path / "fixes.gpkg"
    expected, progress = None, None
    if case == "outside":
        corrections(parent, fixes, offset=(50_000.0, 0.0))
        match = "overlaps the image"
    elif case == "unknown class":
        corrections(parent, fixes, values=(2, 9))
        match = "uses class\\(es\\) 9 that the model does not have"
    elif case == "empty":
        write_corrections(fixes, [], parent["crs"])
        match = "has no features"
    else:
        corrections(parent, fixes)
        match = "changed on disk since it was loaded"
        if case == "changed before":
            expected = "0" * 64
        else:
            copy = tmp_path / "lc.cwsam.pt"
            copy.write_bytes(parent["model"].read_bytes())
            parent = {**parent, "model": copy, "folder": tmp_path}

            def rewrite(info, path=copy):  # another program rewrites the model file while training runs
                path.write_bytes(path.read_bytes() + b"\0")
            progress = rewrite
    present = files_in(parent["folder"])
    with pytest.raises(RetrainError, match=match) as error:
        retrain(parent["model"], parent["scene"], fixes, "class", expected_sha256=expected, steps=2, batch_size=2,
                device="cpu", progress=progress)
    assert "\n" not in str(error.value)
    assert files_in(parent["folder"]) == present


def test_cli_init_model_and_info(parent, tmp_path):
    fixes = corrections(parent, tmp_path / "fixes.gpkg")
    output = tmp_path / "next.cwsam.pt"
    done = cwsam("train", "--init-model", parent["model"], "--image", parent["scene"], "--polygons", fixes,
                 "--class-field", "class", "--epochs", 1, "--steps-per-epoch", 2, "--batch-size", 2,
                 "--val-fraction", 0, "--device", "cpu", "--output", output, "--quiet")
    assert done.returncode == 0, done.stderr
    info = cwsam("info", output)
    assert info.returncode == 0, info.stderr
    sha = file_sha256(parent["model"])
    assert f"Parent model:    lc.cwsam.pt (sha256 {sha})" in info.stdout
    assert "vit_nano (input 64 x 64 px)" in info.stdout and "bare soil" in info.stdout

    bad = cwsam("train", "--init-model", parent["model"], "--image", parent["scene"], "--polygons",
                corrections(parent, tmp_path / "bad.gpkg", values=(2, 9)), "--class-field", "class",
                "--device", "cpu", "--output", tmp_path / "bad.cwsam.pt", "--quiet")
    assert bad.returncode == 2 and "that the model does not have" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad.cwsam.pt").exists()
    bad = cwsam("train", "--init-model", parent["model"], "--backbone", "vit_tiny", "--image", parent["scene"],
                "--polygons", fixes, "--class-field", "class", "--output", tmp_path / "b.cwsam.pt", "--quiet")
    assert bad.returncode == 2 and "is a vit_nano model: leave out --backbone vit_tiny" in bad.stderr
    bad = cwsam("train", "--init-model", parent["model"], "--classes", "0:a,1:b", "--image", parent["scene"],
                "--polygons", fixes, "--class-field", "class", "--output", tmp_path / "b.cwsam.pt", "--quiet")
    assert bad.returncode == 2 and "--classes comes from the model" in bad.stderr
    bad = cwsam("train", "--image", parent["scene"], "--polygons", fixes, "--class-field", "class",
                "--output", tmp_path / "b.cwsam.pt", "--quiet")
    assert bad.returncode == 2 and "--init-model" in bad.stderr


def test_compare_maps_over_the_part_classified_again(tmp_path):
    profile = dict(driver="GTiff", width=8, height=6, count=1, dtype="uint8", nodata=255, crs="EPSG:32633",
                   transform=rasterio.transform.from_origin(500000, 4600000, 10, 10))
    old = np.zeros((6, 8), dtype=np.uint8)
    old[:, 4:] = 1
    with rasterio.open(tmp_path / "before.tif", "w", **profile) as dst:
        dst.write(old[None])
    new = old[2:6, 2:8].copy()  # a view of rows 2..5, columns 2..7
    new[:, :2] = 1  # 8 of its 24 pixels change from 0 to 1
    new[0, 5] = 255  # not classified
    part = dict(profile, width=6, height=4, transform=rasterio.transform.from_origin(500020, 4599980, 10, 10))
    with rasterio.open(tmp_path / "after.tif", "w", **part) as dst:
        dst.write(new[None])
    change = compare_maps(tmp_path / "before.tif", tmp_path / "after.tif")
    assert change.pixels == 23 and change.changed == pytest.approx(8 / 23)
    assert change.before == {0: 800.0, 1: 1500.0} and change.after == {1: 2300.0}
    assert change.area_unit == "m2"


def test_a_time_budget_trains_until_it_is_spent(parent, tmp_path):
    fixes = corrections(parent, tmp_path / "fixes.gpkg")
    version = retrain(parent["model"], parent["scene"], fixes, "class", output=tmp_path / "timed.cwsam.pt",
                      time_budget=0.02, batch_size=2, device="cpu")
    provenance = read_model_card(version.model_path).provenance
    assert version.model_path.is_file() and provenance["time_budget"] == 0.02 and provenance["steps"] >= 1
    assert provenance["training_minutes"] >= 0.02 * 0.9


def test_without_its_training_data_the_model_replays_its_own_map_outside_the_corrections(parent, tmp_path):
    from cwsam_core.training.retrain import anchor_labels

    fixes = corrections(parent, tmp_path / "fixes.gpkg")
    with rasterio.open(parent["scene"]) as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", nodata=255,
                       crs=src.crs, transform=src.transform)
    class_map = tmp_path / "map.tif"
    with rasterio.open(class_map, "w", **profile) as dst:
        dst.write(np.full((1, SIZE, SIZE), 3, dtype=np.uint8))
    anchor = anchor_labels(class_map, fixes, "class", CLASSES, tmp_path / "anchor.tif", margin=4)
    with rasterio.open(anchor) as src:
        labels = src.read(1)
    # The squares (rows 20..49, columns 20..49 and rows 70..99, columns 60..89) and 4 px around them are left out.
    assert (labels[16:54, 16:54] == 255).all() and (labels[66:104, 56:94] == 255).all()
    assert labels[14, 30] == 3 and labels[30, 55] == 3 and (labels == 255).sum() == 38 * 38 * 2

    # A model whose training data are gone (copied elsewhere, its sources recorded relative to nowhere).
    orphan = tmp_path / "orphan.cwsam.pt"
    orphan.write_bytes(parent["model"].read_bytes())
    labels_path = parent["labels"]
    moved = labels_path.with_name("moved.tif")
    labels_path.rename(moved)
    try:
        version = retrain(orphan, parent["scene"], fixes, "class", steps=2, batch_size=2, replay=0.5,
                          anchor_map=class_map, device="cpu")
    finally:
        moved.rename(labels_path)
    data = read_model_card(version.model_path).provenance["data"]
    assert [d["role"] for d in data] == ["training", "replay"] and data[1]["labels"].endswith("anchor.tif")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
