"""The per-pixel Gaussian classifier that joins the logits of models trained from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import write_sam_checkpoint

from cwsam_core.common.card import ModelCard
from cwsam_core.common.classes import parse_classes
from cwsam_core.common.labels import IGNORE_INDEX
from cwsam_core.errors import ModelFileError
from cwsam_core.model.build import build_cwsam, build_model
from cwsam_core.model.model_file import load_model_file, read_model_card, save_model_file
from cwsam_core.model.modeling.pixel_expert import DEFAULT_WEIGHT, LOG_POSTERIOR_FLOOR, PixelGaussianExpert
from cwsam_core.simulate import simulate_scene, write_scene
from cwsam_core.training.config import TrainConfig
from cwsam_core.training.datasets import TrainingSource
from cwsam_core.training.loop import train


def two_class_images(seed: int = 0):
    """Two classes with different means and covariances of 3 channels, labels in halves of each image."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((4, 32, 32), dtype=np.int64)
    labels[:, :, 16:] = 1
    images = rng.normal(0.0, 1.0, (4, 3, 32, 32))
    images[:, :, :, 16:] = images[:, :, :, 16:] * np.array([2.0, 0.5, 1.0])[None, :, None, None] + 1.5
    return torch.from_numpy(images).float(), torch.from_numpy(labels)


def reference_log_posterior(expert: PixelGaussianExpert, images: torch.Tensor) -> np.ndarray:
    """Quadratic discriminant with equal priors, written independently in numpy from the fitted parameters."""
    x = expert.features(images).permute(0, 2, 3, 1).double().numpy()
    scores = []
    for k in range(expert.means.shape[0]):
        d = x - expert.means[k].double().numpy()
        precision = expert.precisions[k].double().numpy()
        scores.append(-0.5 * (np.einsum("bhwi,ij,bhwj->bhw", d, precision, d) + float(expert.log_dets[k])))
    scores = np.stack(scores, axis=1)
    scores -= scores.max(axis=1, keepdims=True)
    return np.maximum(scores - np.log(np.exp(scores).sum(axis=1, keepdims=True)), LOG_POSTERIOR_FLOOR)


def test_fitted_expert_is_the_gaussian_ml_classifier():
    images, labels = two_class_images()
    expert = PixelGaussianExpert(2)
    counts = expert.fit(images, labels)
    assert counts.tolist() == [2048, 2048] and expert.fitted.tolist() == [1.0, 1.0]
    # The class means of the channels are what the data were drawn with.
    assert expert.means[1, :3].numpy() == pytest.approx([1.5, 1.5, 1.5], abs=0.2)
    test_images, test_labels = two_class_images(seed=1)
    got = expert(test_images).numpy()
    np.testing.assert_allclose(got, reference_log_posterior(expert, test_images), atol=2e-3)
    accuracy = (got.argmax(axis=1) == test_labels.numpy()).mean()
    assert accuracy > 0.9


def test_unfitted_classes_are_neutral_and_a_class_with_few_pixels_gets_the_pooled_covariance():
    images, labels = two_class_images()
    labels = labels.clone()
    # Class 1 keeps 4 x 4 pixels of one image: fewer than 10 per feature (6 features), so the pooled covariance.
    labels[:, :, 20:] = IGNORE_INDEX
    labels[1:, :, 16:20] = IGNORE_INDEX
    labels[0, 4:, 16:20] = IGNORE_INDEX
    expert = PixelGaussianExpert(3)
    assert not expert.is_fitted
    flat = expert(images)
    assert torch.equal(flat, torch.full_like(flat, flat[0, 0, 0, 0].item()))  # unfitted: the same for every class
    counts = expert.fit(images, labels)
    assert counts.tolist() == [2048, 16, 0]
    assert expert.fitted.tolist() == [1.0, 1.0, 0.0]
    own = expert.precisions[0]
    assert not torch.allclose(expert.precisions[1], own)  # pooled (from both classes) differs from class 0's
    out = expert(images)
    # The class without pixels gets the uniform share of the two fitted ones, everywhere.
    assert torch.allclose(out[:, 2], torch.full_like(out[:, 2], -np.log(2.0)))


def test_refitting_keeps_the_classes_the_new_labels_lack():
    images, labels = two_class_images()
    expert = PixelGaussianExpert(2)
    expert.fit(images, labels)
    before = expert.means[1].clone()
    only_zero = torch.where(labels == 0, labels, torch.full_like(labels, IGNORE_INDEX))
    expert.fit(images + 1.0, only_zero)
    assert torch.equal(expert.means[1], before)
    assert expert.means[0, :3].numpy() == pytest.approx([1.0, 1.0, 1.0], abs=0.2)


def test_the_expert_joins_only_in_eval_mode_and_only_for_models_trained_from_scratch(tmp_path):
    model = build_model("vit_nano", 2, 32)
    assert model.pixel_expert is not None
    images, labels = two_class_images()
    model.pixel_expert.fit(images, labels)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    model.train()
    trained_logits = model(x)
    model.eval()
    with torch.no_grad():
        fused = model(x)
        alone = trained_logits.detach()
    # New models weigh the log posterior by DEFAULT_WEIGHT (an overconfident network otherwise outweighs it).
    assert model.pixel_expert.weight == DEFAULT_WEIGHT > 1
    assert torch.allclose(fused - alone, DEFAULT_WEIGHT * model.pixel_expert(x), atol=1e-4)
    # SAM-based models and the authors' keep the published method.
    sam = write_sam_checkpoint(tmp_path / "sam_vit_nano.pth", "vit_nano")
    assert build_cwsam("vit_nano", 2, sam).pixel_expert is None
    assert build_model("vit_nano", 2, embedding_layout="authors", pixel_expert=False).pixel_expert is None


def test_training_fits_the_expert_and_the_model_file_keeps_it(tmp_path):
    scene = simulate_scene(96, 96, seed=3)
    image, labels = write_scene(scene, tmp_path / "sar.tif", tmp_path / "labels.tif")
    classes = parse_classes("0:water,1:bare soil,2:cropland,3:forest,4:urban")
    config = TrainConfig(backbone="vit_nano", classes=classes, output=tmp_path / "m.cwsam.pt", tile_size=32,
                         epochs=1, steps_per_epoch=2, batch_size=2, val_fraction=0.0, device="cpu")
    train([TrainingSource(image, labels)], config)
    card = read_model_card(config.output)
    assert card.pixel_expert and card.pixel_expert_weight == DEFAULT_WEIGHT
    assert f"(weight {DEFAULT_WEIGHT:g})" in card.describe()
    model, _ = load_model_file(config.output)
    assert model.pixel_expert.weight == DEFAULT_WEIGHT
    # Every class with labelled pixels in the scene (balanced windows find the rare ones) is fitted.
    present = set(np.unique(scene.labels).tolist())
    fitted = {classes[i].value for i, f in enumerate(model.pixel_expert.fitted.tolist()) if f}
    assert fitted == present
    # A file written before the expert existed (card without the field) loads without one.
    old = ModelCard.from_dict({k: v for k, v in card.to_dict().items() if k != "pixel_expert"})
    assert not old.pixel_expert
    bare = build_model("vit_nano", len(classes), 32, pixel_expert=False)
    save_model_file(tmp_path / "old.cwsam.pt", bare, old)
    assert load_model_file(tmp_path / "old.cwsam.pt")[0].pixel_expert is None
    # A file written before the weight existed keeps the weight it was made with: 1.
    unweighted = ModelCard.from_dict({k: v for k, v in card.to_dict().items() if k != "pixel_expert_weight"})
    assert unweighted.pixel_expert_weight == 1.0
    model.pixel_expert.weight = 1.0  # what save_model_file records is the model's own weight
    save_model_file(tmp_path / "unweighted.cwsam.pt", model, unweighted)
    assert load_model_file(tmp_path / "unweighted.cwsam.pt")[0].pixel_expert.weight == 1.0
    with pytest.raises(ModelFileError, match="pixel expert weight must be a positive number"):
        ModelCard.from_dict({**card.to_dict(), "pixel_expert_weight": 0})


def test_a_model_with_a_fitted_expert_exports_to_onnx_with_the_same_logits(tmp_path):
    pytest.importorskip("onnxruntime")
    from cwsam_core.engine.onnx_export import export_onnx

    model = build_model("vit_nano", 2, 32)
    images, labels = two_class_images()
    model.pixel_expert.fit(images, labels)
    card = ModelCard(backbone="vit_nano", input_size=32, classes=parse_classes("0:land,1:water"),
                     normalization={"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})
    save_model_file(tmp_path / "m.cwsam.pt", model, card)
    # The export compares ONNX Runtime's logits with PyTorch's before writing (within 1e-4 of the largest).
    result = export_onnx(tmp_path / "m.cwsam.pt", tmp_path / "m.onnx")
    assert result.export["max_abs_logit_difference"] < 1e-3
    assert result.card.pixel_expert
