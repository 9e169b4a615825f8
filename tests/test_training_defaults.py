"""Training defaults that work on the images users have: bands and scales from the data, small images,
a validation part that can select, a time budget, class-balanced windows; and one line for bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from cwsam_core.common.card import ClassInfo
from cwsam_core.engine.inference import classify_file
from cwsam_core.errors import TrainingDataError
from cwsam_core.model.model_file import read_model_card
from cwsam_core.simulate import SIMULATED_CLASSES, simulate_scene, write_scene
from cwsam_core.training.config import LR_FROM_SCRATCH, TrainConfig
from cwsam_core.training.datasets import TrainingSource
from cwsam_core.training.loop import state_path, train
from cwsam_core.training.sampling import OpenedSource, _pick_window, split_sources

CLASSES = [ClassInfo(c.value, c.name, c.color) for c in SIMULATED_CLASSES]
CWSAM = Path(sys.executable).with_name("cwsam")


def cwsam(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(CWSAM), *map(str, args)], capture_output=True, text=True, timeout=600)


def config(tmp_path, **overrides) -> TrainConfig:
    values = dict(backbone="vit_nano", classes=list(CLASSES), output=tmp_path / "model.cwsam.pt", epochs=2,
                  steps_per_epoch=3, batch_size=2, warmup_steps=2, device="cpu", seed=1)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    image, labels = write_scene(simulate_scene(128, 128, seed=7), folder / "sar.tif", folder / "labels.tif")
    return TrainingSource(image, labels)


def write_pauli(folder: Path, name: str, seed: int) -> tuple:
    """An 8-bit 3-band composite without band descriptions (like a Pauli PNG) and its labels (0 ignored),
    with the dark class at 0 in two channels: zeros that a dB model would turn into nodata."""
    rng = np.random.default_rng(seed)
    labels = np.ones((96, 96), dtype=np.uint8)
    labels[:, 48:] = 2
    labels[40:56, :] = 3
    labels[:4] = 0
    means = {1: (120, 60, 200), 2: (0, 0, 90), 3: (230, 160, 40)}
    image = np.zeros((3, 96, 96), dtype=np.uint8)
    for value, mean in means.items():
        mask = labels == value
        for band in range(3):
            image[band][mask] = np.clip(rng.normal(mean[band], 12, mask.sum()), 0, 255).astype(np.uint8) * (mean[band] > 0)
    image[:, labels == 0] = 128
    paths = folder / f"{name}.tif", folder / f"{name}_label.tif"
    for path, data in zip(paths, (image, labels[None])):
        with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=len(data), dtype="uint8") as dst:
            dst.write(data)
    return paths


def test_an_8bit_composite_trains_with_the_defaults_and_classifies(tmp_path):
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        for index in range(3):
            writer.writerow([p.name for p in write_pauli(tmp_path, f"tile{index}", index)])
    model = tmp_path / "pauli.cwsam.pt"
    result = cwsam("train", "--pairs", pairs, "--classes", "1:bright,2:dark,3:yellow", "--ignore-value", 0,
                   "--backbone", "vit_nano", "--tile-size", 32, "--epochs", 2, "--steps-per-epoch", 4,
                   "--device", "cpu", "--output", model, "--quiet")
    assert result.returncode == 0, result.stderr
    card = read_model_card(model)
    assert card.bands == ["band 1", "band 2", "band 3"]
    # 8-bit values are read as they are (amplitude, no conversion) and never log-transformed.
    assert card.input_scale == "amplitude" and card.training_input_scale == "amplitude"
    assert card.provenance["lr"] == LR_FROM_SCRATCH and card.refine_channels > 0
    classified = classify_file(tmp_path / "tile0.tif", tmp_path / "classes.tif", model)
    # Zeros are values, not nodata: every pixel of the composite is classified.
    assert sum(classified.pixel_counts.values()) == 96 * 96
    assert not any("scale" in w for w in classified.warnings)
    info = cwsam("info", model)
    assert "amplitude (trained on amplitude data)" in info.stdout


def test_band_choice_and_scales_in_train(tmp_path, small_scene):
    out = tmp_path / "m.cwsam.pt"
    common = ["--image", small_scene.image, "--labels", small_scene.labels, "--backbone", "vit_nano",
              "--tile-size", 32, "--device", "cpu", "--output", out, "--quiet"]
    bad = cwsam("train", *common, "--bands", "3")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "bands 3: sar.tif has 2 band(s) (1: VV, 2: VH)" in bad.stderr and not out.exists()
    good = cwsam("train", *common, "--bands", "2", "--epochs", 1, "--steps-per-epoch", 2)
    assert good.returncode == 0, good.stderr
    card = read_model_card(out)
    assert card.bands == ["VH"] and card.input_scale == "db"
    # A scale that contradicts the data: trained as asked, with a warning naming both.
    contradicted = cwsam("train", *common, "--bands", "1", "--input-scale", "amplitude", "--model-scale", "amplitude",
                         "--epochs", 1, "--steps-per-epoch", 1, "--output", tmp_path / "amp.cwsam.pt")
    assert contradicted.returncode == 0, contradicted.stderr
    assert "the input scale is set to amplitude, but the raster's values look like db scale" in contradicted.stderr
    # A time budget below one step: one line, nothing written.
    short = cwsam("train", *common, "--time-budget", "0.00001", "--output", tmp_path / "short.cwsam.pt")
    assert short.returncode == 2 and "shorter than one training step" in short.stderr, short.stderr
    assert len(short.stderr.strip().splitlines()) == 1
    assert not any(p.name.startswith("short") for p in tmp_path.iterdir())


def test_one_small_image_trains_with_a_validation_part(tmp_path):
    # 256 x 256 px with tiles of 128: blocks of two tiles would leave only one block.
    image, labels = write_scene(simulate_scene(256, 256, seed=3), tmp_path / "sar.tif", tmp_path / "labels.tif")
    result = train([TrainingSource(image, labels)], config(tmp_path, tile_size=128))
    assert result.best_epoch > 0 and not np.isnan(result.best_miou)
    source = OpenedSource(TrainingSource(image, labels), config(tmp_path, tile_size=128))
    try:
        split_sources([source], 128, 0.2, seed=0)
        assert source.block_size == 128 and len(source.val_blocks) == 1 and len(source.train_blocks) == 3
        # Training windows may overlap the validation block, but never its labels.
        rng = np.random.default_rng(0)
        block = source.val_blocks[0]
        for _ in range(20):
            _, window = _pick_window([source], 128, rng, 0.5)
            masked = source.validation_mask(window)
            rows = np.arange(window.row_off, window.row_off + 128)[:, None]
            cols = np.arange(window.col_off, window.col_off + 128)[None, :]
            inside = ((rows >= block.row_off) & (rows < block.row_off + block.height)
                      & (cols >= block.col_off) & (cols < block.col_off + block.width))
            assert np.array_equal(masked, inside)
    finally:
        source.close()


def test_labels_in_one_spot_train_without_validation_and_say_so(tmp_path, caplog):
    image, labels = write_scene(simulate_scene(64, 64, seed=2), tmp_path / "sar.tif", tmp_path / "labels.tif")
    with rasterio.open(labels, "r+") as dataset:
        values = dataset.read(1)
        spot = np.full_like(values, 255)
        spot[:8, :8] = values[:8, :8]
        spot[0, 0], spot[0, 1] = CLASSES[0].value, CLASSES[1].value
        dataset.write(spot, 1)
    with caplog.at_level("WARNING", logger="cwsam"):
        result = train([TrainingSource(image, labels)], config(tmp_path, tile_size=64))
    assert "training without validation" in caplog.text
    assert result.best_epoch == -1 and result.model_path.is_file()


def test_a_score_that_does_not_move_keeps_the_last_epoch(tmp_path, small_scene, caplog):
    # A learning rate too small to change anything: the same validation mIoU in every epoch.
    with caplog.at_level("WARNING", logger="cwsam"):
        result = train([small_scene], config(tmp_path, tile_size=32, epochs=3, lr=1e-12, val_fraction=0.25))
    scores = [r.val_miou for r in result.history]
    assert max(scores) - min(scores) < 1e-9
    assert result.best_epoch == 3 and read_model_card(result.model_path).provenance["epoch"] == 3
    assert "stayed at" in caplog.text and "could not choose an epoch" in caplog.text


def test_a_time_budget_trains_until_it_is_spent(tmp_path, small_scene):
    seen = []
    result = train([small_scene], config(tmp_path, tile_size=32, time_budget=0.12, epochs=1, steps_per_epoch=2),
                   progress=seen.append)
    state = torch.load(state_path(result.model_path), weights_only=True)
    # More steps than epochs x steps would give, the run ends at the budget, and the bar reaches the end.
    assert state["steps"] > 2 and len(result.history) >= 2
    assert 0.12 * 60 <= state["seconds"] < 40
    assert seen[-1]["fraction"] == 1.0


def test_balanced_windows_find_a_rare_class(tmp_path):
    image, labels = write_scene(simulate_scene(256, 256, seed=5), tmp_path / "sar.tif", tmp_path / "labels.tif")
    with rasterio.open(labels, "r+") as dataset:
        values = dataset.read(1)
        values[values == CLASSES[4].value] = CLASSES[2].value
        values[200:204, 10:14] = CLASSES[4].value  # 16 px of the rare class
        dataset.write(values, 1)
    source = OpenedSource(TrainingSource(image, labels), config(tmp_path, tile_size=32))
    try:
        split_sources([source], 32, 0.0, seed=0)

        def share_with_rare(balanced: float) -> float:
            rng = np.random.default_rng(0)
            hits = 0
            for _ in range(200):
                _, window = _pick_window([source], 32, rng, balanced)
                hits += bool((source.labels.read(window) == 4).any())
            return hits / 200

        assert share_with_rare(1.0) > 0.15 > share_with_rare(0.0)
    finally:
        source.close()


def test_bad_settings_are_refused_before_any_work(tmp_path, small_scene):
    for overrides, message in (({"time_budget": 0}, "more than 0 minutes"), ({"lr": -1.0}, "learning rate"),
                               ({"balanced_sampling": 2.0}, "balanced-sampling"), ({"model_scale": "log"}, "model scale")):
        with pytest.raises(TrainingDataError, match=message):
            train([small_scene], config(tmp_path, **overrides))
    assert list(tmp_path.iterdir()) == []


def test_real_polsf_pairs_train_with_the_defaults(tmp_path, shared_data):
    """The command of the issue: Pauli PNGs without band descriptions, defaults otherwise."""
    folder = shared_data / "polsf_sf_airsar"
    pairs = tmp_path / "polsf.csv"
    with open(folder / "manifest.csv", newline="") as handle, open(pairs, "w") as out:
        out.write("image,label\n")
        for row in list(csv.DictReader(handle))[:3]:
            out.write(f"{folder / row['image_file']},{folder / row['label_file']}\n")
    torch.manual_seed(0)
    model = tmp_path / "m.cwsam.pt"
    result = cwsam("train", "--pairs", pairs, "--classes", "1:bare soil,2:mountain,3:water,4:urban,5:vegetation",
                   "--ignore-value", 0, "--backbone", "vit_tiny", "--epochs", 1, "--steps-per-epoch", 1,
                   "--batch-size", 1, "--device", "cpu", "--output", model, "--quiet")
    assert result.returncode == 0, result.stderr
    card = read_model_card(model)
    assert card.input_scale == "amplitude" and len(card.bands) == 3


def test_the_issue_command_on_one_512_px_image_with_256_px_tiles(tmp_path):
    """It stopped with 'too small to hold out a validation part'; now blocks of one tile are held out."""
    image, labels = write_scene(simulate_scene(512, 512, seed=8), tmp_path / "s.tif", tmp_path / "l.tif")
    result = cwsam("train", "--image", image, "--labels", labels, "--backbone", "vit_nano", "--tile-size", 256,
                   "--epochs", 1, "--steps-per-epoch", 1, "--batch-size", 1, "--device", "cpu",
                   "--output", tmp_path / "m.cwsam.pt", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Best validation mIoU" in result.stdout
