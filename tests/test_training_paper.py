"""The paper recipe (`cwsam train --recipe paper`): the authors' schedule, loss normalisation and class weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from cwsam_core import cli
from cwsam_core.common.card import ClassInfo
from cwsam_core.common.labels import IGNORE_INDEX
from cwsam_core.model.model_file import read_model_card
from cwsam_core.simulate import simulate_scene, write_scene
from cwsam_core.training.config import PAPER_LR_MIN, RunClock, TrainConfig
from cwsam_core.training.loop import paper_class_weights
from cwsam_core.training.losses import SegmentationLoss

FUSAR = ["building", "vegetation", "water", "road", "background"]


def test_pixel_normalised_loss_is_their_soft_target_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8, 8)
    target = torch.randint(0, 5, (2, 8, 8))
    target[0, :3] = IGNORE_INDEX  # unlabelled: an all-zero one-hot in their code, still counted in the mean
    weights = torch.tensor([1.5, 1, 0.5, 1.9, 0.1])
    one_hot = F.one_hot(target.clamp(max=4), 5).permute(0, 3, 1, 2).float() * (target != IGNORE_INDEX)[:, None]
    theirs = torch.nn.CrossEntropyLoss(weight=weights)(logits, one_hot)  # their criterionBCE, soft targets
    ours = SegmentationLoss(weights, normalization="pixels")(logits, target)
    torch.testing.assert_close(ours, theirs)
    # The default divides by the labelled pixels' weights instead.
    assert not torch.allclose(SegmentationLoss(weights)(logits, target), theirs)
    with pytest.raises(ValueError, match="normalization"):
        SegmentationLoss(normalization="mean")


def test_their_class_weights_where_they_set_them():
    classes = [ClassInfo(i, name, "#000000") for i, name in enumerate(FUSAR)]
    assert paper_class_weights(classes) == [1.5, 1.0, 0.5, 1.9, 0.1]
    shuffled = [ClassInfo(7, "Water", "#000000"), ClassInfo(1, "road", "#000000"), ClassInfo(2, "building", "#000000"),
                ClassInfo(3, "background", "#000000"), ClassInfo(4, "vegetation", "#000000")]
    assert paper_class_weights(shuffled) == [0.5, 1.9, 1.5, 0.1, 1.0]  # by name, in the model's order
    assert paper_class_weights(classes[:4]) is None  # other classes: equal weights, as their code without them


def test_paper_schedule_is_their_cosine_annealing_per_epoch():
    epochs, steps = 7, 3
    config = TrainConfig(backbone="vit_nano", classes=[], output="x", epochs=epochs, steps_per_epoch=steps, lr=2e-4,
                         recipe="paper", warmup_steps=0)
    clock = RunClock(config)
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=2e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=PAPER_LR_MIN)
    for epoch in range(epochs):
        for _ in range(steps):
            assert 2e-4 * clock.factor() == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
            clock.steps += 1
        optimizer.step()
        scheduler.step()  # once per epoch, as their train.py does
    assert 2e-4 * clock.factor() == pytest.approx(PAPER_LR_MIN)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    return write_scene(simulate_scene(192, 192, seed=3), folder / "sar.tif", folder / "labels.tif")


def test_cli_trains_with_the_paper_recipe(tmp_path, capsys, scene):
    image, labels = scene
    output = tmp_path / "paper.cwsam.pt"
    status = cli.main(["train", "--image", str(image), "--labels", str(labels), "--backbone", "vit_nano",
                       "--tile-size", "64", "--recipe", "paper", "--epochs", "2", "--batch-size", "4",
                       "--val-fraction", "0.25", "--device", "cpu", "--quiet", "--output", str(output)])
    assert status == 0, capsys.readouterr().err
    provenance = read_model_card(output).provenance
    assert provenance["recipe"] == "paper" and provenance["epochs"] == 2
    assert provenance["lr"] == 2e-4 and provenance["class_weights"] is None  # not FUSAR-Map's classes
    assert provenance["balanced_sampling"] == 0.0
    # One epoch is one pass over the training blocks: their area in 64 x 64 tiles, 4 per step.
    train_area = 192 * 192 * 0.75  # a quarter of the image is held out for validation, at least
    assert provenance["steps_per_epoch"] <= math.ceil(train_area / 64 ** 2 / 4) + 1
    assert provenance["steps"] == 2 * provenance["steps_per_epoch"]
    log = (tmp_path / "paper.cwsam.pt.log.csv").read_text().splitlines()
    rates = [float(line.split(",")[4]) for line in log[1:]]
    assert rates == pytest.approx([2e-4, PAPER_LR_MIN + (2e-4 - PAPER_LR_MIN) / 2])  # cosine over 2 epochs


def test_paper_recipe_refuses_a_training_time(tmp_path, capsys, scene):
    image, labels = scene
    status = cli.main(["train", "--image", str(image), "--labels", str(labels), "--backbone", "vit_nano",
                       "--recipe", "paper", "--time-budget", "1", "--quiet", "--output", str(tmp_path / "m.cwsam.pt")])
    err = capsys.readouterr().err
    assert status == 2 and "paper recipe follows the authors' schedule by epochs" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m.cwsam.pt").exists()
