"""Training on simulated SAR: learning, best-model file, resume, bad input."""

from __future__ import annotations

import pytest
import torch

from cwsam_core.common.card import ClassInfo
from cwsam_core.engine.inference import classify_file
from cwsam_core.errors import TrainingDataError
from cwsam_core.model.model_file import read_model_card
from cwsam_core.simulate import SIMULATED_CLASSES, simulate_scene, write_scene
from cwsam_core.training.config import TrainConfig
from cwsam_core.training.datasets import TrainingSource
from cwsam_core.training.loop import state_path, train

CLASSES = [ClassInfo(c.value, c.name, c.color) for c in SIMULATED_CLASSES]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    image, labels = write_scene(simulate_scene(512, 512, seed=11), folder / "sar.tif", folder / "labels.tif")
    return TrainingSource(image, labels)


def config(tmp_path, **overrides) -> TrainConfig:
    values = dict(backbone="vit_nano", classes=list(CLASSES), output=tmp_path / "model.cwsam.pt", tile_size=64,
                  epochs=3, steps_per_epoch=12, batch_size=4, lr=2e-3, warmup_steps=3, val_fraction=0.25,
                  device="cpu", seed=5)
    values.update(overrides)
    return TrainConfig(**values)


def test_training_beats_chance_and_keeps_the_best_model(tmp_path, scene):
    torch.set_num_threads(2)
    seen = []
    result = train([scene], config(tmp_path, epochs=8, steps_per_epoch=25, lr=3e-3, batch_size=8),
                   progress=seen.append)
    assert not result.cancelled and len(result.history) == 8
    chance = 1 / len(CLASSES)
    assert result.best_miou > 2 * chance, [r.val_miou for r in result.history]
    assert result.best_miou == max(r.val_miou for r in result.history)
    card = read_model_card(result.model_path)
    assert card.normalization and len(card.normalization["mean"]) == 3
    assert card.provenance["epoch"] == result.best_epoch
    assert card.provenance["validation"]["miou"] == pytest.approx(result.best_miou)
    assert (tmp_path / "model.cwsam.pt.log.csv").read_text().count("\n") == 9
    assert any("val_miou" in p for p in seen) and any("loss" in p for p in seen)
    # The trained model file classifies through the same engine as every other model.
    out = classify_file(scene.image, tmp_path / "classes.tif", result.model_path)
    assert sum(out.pixel_counts.values()) == 512 * 512


def test_resume_reaches_the_same_weights(tmp_path, scene):
    (tmp_path / "a").mkdir()
    straight = train([scene], config(tmp_path / "a", epochs=2))
    steps = []

    def kill_after_first_epoch():
        steps.append(1)
        return len(steps) > 12  # the first step of epoch 2

    (tmp_path / "b").mkdir()
    interrupted = train([scene], config(tmp_path / "b", epochs=2), should_cancel=kill_after_first_epoch)
    assert interrupted.cancelled and len(interrupted.history) == 1
    resumed = train([scene], config(tmp_path / "b", epochs=2), resume=True)
    assert len(resumed.history) == 2
    a = torch.load(state_path(straight.model_path), weights_only=True)["model"]
    b = torch.load(state_path(resumed.model_path), weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_bad_training_input(tmp_path, scene):
    with pytest.raises(TrainingDataError, match="at least two classes"):
        train([scene], config(tmp_path, classes=CLASSES[:1]))
    with pytest.raises(TrainingDataError, match="label raster not found"):
        train([TrainingSource(scene.image, tmp_path / "none.tif")], config(tmp_path))
    # Only one class has labelled pixels when every other value is ignored.
    only_water = [CLASSES[0], ClassInfo(200, "absent", "#000000")]
    with pytest.raises(TrainingDataError, match="at least two classes need labelled pixels"):
        train([scene], config(tmp_path, classes=only_water))
    with pytest.raises(TrainingDataError, match="accumulate must be at least 1"):
        train([scene], config(tmp_path, accumulate=0))
    with pytest.raises(TrainingDataError, match="no training state"):
        train([scene], config(tmp_path), resume=True)
    assert not (tmp_path / "model.cwsam.pt").exists()


def test_unusable_images_and_checkpoints_are_named(tmp_path, scene):
    import numpy as np
    import rasterio
    from model_helpers import write_sam_checkpoint

    from cwsam_core.errors import CheckpointError, RadiometryError

    image, labels = write_scene(simulate_scene(128, 128, seed=2), tmp_path / "void.tif", tmp_path / "void_labels.tif",
                                nodata=-9999.0)
    with rasterio.open(image, "r+") as dataset:
        dataset.write(np.full((2, 128, 128), -9999.0, dtype=np.float32))
    with pytest.raises(RadiometryError, match="all nodata"):
        train([TrainingSource(image, labels)], config(tmp_path, tile_size=32))
    checkpoint = write_sam_checkpoint(tmp_path / "sam_nano.pth", "vit_nano")
    with pytest.raises(CheckpointError, match="looks like a vit_nano checkpoint, but the model uses backbone vit_tiny"):
        train([scene], config(tmp_path, backbone="vit_tiny", sam_checkpoint=checkpoint, tile_size=None))
    with pytest.raises(TrainingDataError, match="either a label raster or a polygon file"):
        train([TrainingSource(scene.image)], config(tmp_path))
    assert not (tmp_path / "model.cwsam.pt").exists() and not state_path(tmp_path / "model.cwsam.pt").exists()


def test_label_values_outside_the_classes_are_ignored_and_logged(tmp_path, scene, caplog):
    # Name only water and forest: the other simulated classes are label values no class names.
    named = [CLASSES[0], CLASSES[3]]
    with caplog.at_level("WARNING", logger="cwsam"):
        result = train([scene], config(tmp_path, classes=named, epochs=1, steps_per_epoch=2))
    message = next(r.getMessage() for r in caplog.records if "not in the class list" in r.getMessage())
    for c in (CLASSES[1], CLASSES[2], CLASSES[4]):
        assert f"{c.value} (" in message
    assert read_model_card(result.model_path).classes == named


def test_several_images_are_split_by_whole_files(tmp_path):
    from cwsam_core.training.sampling import OpenedSource, split_sources

    sources = []
    for seed in range(4):
        image, labels = write_scene(simulate_scene(96, 96, seed=seed), tmp_path / f"s{seed}.tif", tmp_path / f"l{seed}.tif")
        sources.append(OpenedSource(TrainingSource(image, labels), config(tmp_path)))
    try:
        split_sources(sources, 32, 0.25, seed=0)
        held_out = [s for s in sources if s.val_blocks]
        assert len(held_out) == 1 and not held_out[0].train_blocks
        assert all(s.train_blocks and not s.val_blocks for s in sources if s is not held_out[0])
        covered = sum(b.width * b.height for b in held_out[0].val_blocks)
        assert covered == 96 * 96
    finally:
        for s in sources:
            s.close()


def test_a_validation_part_without_some_classes_is_named(tmp_path, caplog):
    import numpy as np
    import rasterio

    # Two files label only water and forest, one labels every class: holding out the full file would
    # take three classes from training, so a file of two classes is held out whatever the seed, and
    # the validation part lacks the other three.
    sources = []
    for index in range(3):
        image, labels = write_scene(simulate_scene(96, 96, seed=index), tmp_path / f"s{index}.tif",
                                    tmp_path / f"l{index}.tif")
        if index < 2:
            with rasterio.open(labels, "r+") as dataset:
                values = dataset.read(1)
                keep = np.isin(values, [CLASSES[0].value, CLASSES[3].value])
                dataset.write(np.where(keep, values, 255).astype(values.dtype), 1)
        sources.append(TrainingSource(image, labels))
    with caplog.at_level("WARNING", logger="cwsam"):
        train(sources, config(tmp_path, tile_size=32, epochs=1, steps_per_epoch=1, val_fraction=0.3, seed=5))
    warning = next(r.getMessage() for r in caplog.records if "validation part holds no labelled pixels of" in r.getMessage())
    assert all(c.name in warning for c in (CLASSES[1], CLASSES[2], CLASSES[4]))
    assert CLASSES[0].name not in warning and CLASSES[3].name not in warning
