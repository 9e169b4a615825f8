"""The CWSAM model: shapes, freezing, learning, SAM checkpoint loading."""

from __future__ import annotations

import pytest
import torch
from model_helpers import write_sam_checkpoint
from torch.nn import functional as F

from cwsam_core.errors import CheckpointError
from cwsam_core.model.build import BACKBONES, build_bare_sam, build_cwsam, load_sam_weights
from cwsam_core.model.modeling import low_pass
from cwsam_core.model.trainable import parameter_counts


@pytest.fixture(scope="module")
def nano_sam_checkpoint(tmp_path_factory):
    return write_sam_checkpoint(tmp_path_factory.mktemp("sam") / "sam_vit_nano.pth", "vit_nano")


@pytest.mark.parametrize("num_classes,input_size", [(1, 64), (3, 128), (7, 96), (12, 160)])
def test_output_shapes(num_classes, input_size):
    model = build_cwsam("vit_nano", num_classes, input_size=input_size)
    logits = model(torch.randn(2, 3, input_size, input_size))
    assert logits.shape == (2, num_classes, input_size, input_size)
    assert torch.isfinite(logits).all()


def test_batch_items_are_independent():
    # The authors' code kept only the first sample of a batch; ours must treat each one alone.
    torch.manual_seed(0)
    model = build_cwsam("vit_nano", 4).eval()
    images = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        batched = model(images)
        single = torch.cat([model(images[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[1])


def test_wrong_input_size_is_a_clear_error():
    model = build_cwsam("vit_nano", 2, input_size=64)
    with pytest.raises(ValueError, match="expected images of 64 x 64"):
        model(torch.randn(1, 3, 128, 128))
    with pytest.raises(ValueError, match="multiple of 16"):
        build_cwsam("vit_nano", 2, input_size=100)
    with pytest.raises(ValueError, match="unknown backbone 'vit_x'"):
        build_cwsam("vit_x", 2)


def _gradients_after_backward(model):
    images = torch.randn(2, 3, model.input_size, model.input_size)
    target = torch.randint(0, model.num_classes, (2, model.input_size, model.input_size))
    F.cross_entropy(model(images), target).backward()
    return {name: p for name, p in model.named_parameters()}


def test_pretrained_encoder_is_frozen_and_everything_else_gets_gradients(nano_sam_checkpoint):
    model = build_cwsam("vit_nano", 3, sam_checkpoint=nano_sam_checkpoint)
    params = _gradients_after_backward(model)
    frozen = [n for n, p in params.items() if not p.requires_grad]
    trainable = [n for n, p in params.items() if p.requires_grad]
    assert all(p.grad is None for n, p in params.items() if not p.requires_grad), "a frozen parameter got a gradient"
    missing = [n for n in trainable if params[n].grad is None or not params[n].grad.abs().sum() > 0]
    assert missing == [], f"trainable parameters without gradient: {missing}"
    # What trains is exactly CWSAM's additions, the decoder parts in use and the no-mask embedding.
    assert "image_encoder.blocks.0.attn.qkv.weight" in frozen
    assert "image_encoder.patch_embed.proj.weight" in frozen
    assert "image_encoder.neck.0.weight" in frozen
    assert "mask_decoder.iou_prediction_head.layers.0.weight" in frozen
    assert "mask_decoder.output_hypernetworks_mlps.1.layers.0.weight" in frozen
    for name in trainable:
        assert (
            ".attn_adapter." in name or ".mlp_adapter." in name or ".input_module." in name
            or name.startswith("mask_decoder.") or name == "no_mask_embed.weight"
        ), name
    assert "image_encoder.blocks.1.mlp_adapter.up.weight" in trainable
    assert "mask_decoder.class_head.3.weight" in trainable
    assert "mask_decoder.transformer.layers.0.self_attn.q_proj.weight" in trainable


def test_scratch_backbone_trains_its_whole_encoder():
    model = build_cwsam("vit_nano", 3)
    params = _gradients_after_backward(model)
    assert params["image_encoder.blocks.0.attn.qkv.weight"].requires_grad
    assert params["image_encoder.blocks.0.attn.qkv.weight"].grad is not None
    unused = [n for n, p in params.items() if not p.requires_grad]
    assert unused and all(n.startswith(("mask_decoder.iou_prediction_head", "mask_decoder.output_hypernetworks_mlps."))
                          for n in unused)
    assert all(p.grad is not None for p in params.values() if p.requires_grad)


def test_optimizer_steps_lower_the_loss():
    torch.manual_seed(0)
    model = build_cwsam("vit_nano", 3, input_size=64)
    images = torch.randn(2, 3, 64, 64)
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    target = ((cols >= 32).long() + (rows >= 40).long()).expand(2, 64, 64)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_low_pass_keeps_low_and_removes_high_frequencies():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    slow = 2.0 + torch.cos(2 * torch.pi * x / 64)  # 1 cycle per image: kept
    fast = torch.cos(torch.pi * x)  # Nyquist: removed
    out = low_pass((slow + fast).expand(1, 3, 64, 64))
    torch.testing.assert_close(out[0, 0], slow, atol=1e-4, rtol=1e-4)


def test_encoder_equals_sam_when_additions_are_zero(nano_sam_checkpoint):
    """With adapters and prompts switched off, the adapted encoder computes exactly SAM's encoder."""
    torch.manual_seed(0)
    sam = build_bare_sam("vit_nano")
    sam.load_state_dict(torch.load(nano_sam_checkpoint, weights_only=True))
    model = build_cwsam("vit_nano", 2, sam_checkpoint=nano_sam_checkpoint)
    with torch.no_grad():
        for block in model.image_encoder.blocks:
            block.attn_adapter.up.weight.zero_(); block.attn_adapter.up.bias.zero_()
            block.mlp_adapter.up.weight.zero_(); block.mlp_adapter.up.bias.zero_()
        model.image_encoder.input_module.shared_proj.weight.zero_()
        model.image_encoder.input_module.shared_proj.bias.zero_()
        images = torch.randn(2, 3, 128, 128)
        torch.testing.assert_close(model.image_encoder(images), sam.image_encoder(images))


def test_sam_checkpoint_loads_with_nothing_missing(nano_sam_checkpoint):
    model = build_cwsam("vit_nano", 4)
    report = load_sam_weights(model, nano_sam_checkpoint)
    assert report.missing == [] and report.unexpected == []
    sam_state = torch.load(nano_sam_checkpoint, weights_only=True)
    encoder_decoder = [k for k in sam_state if k.startswith(("image_encoder.", "mask_decoder."))]
    assert set(encoder_decoder) <= set(report.loaded)
    assert {"pe_layer.positional_encoding_gaussian_matrix", "no_mask_embed.weight"} <= set(report.loaded)
    torch.testing.assert_close(model.no_mask_embed.weight, sam_state["prompt_encoder.no_mask_embed.weight"])
    assert all(k.startswith("prompt_encoder.") for k in report.ignored)
    assert all(any(m in k for m in ("adapter", "input_module", "class_head", "refinement", "pixel_expert")) for k in report.new)
    assert model.sam_checkpoint_identity["name"] == "sam_vit_nano.pth"


def test_sam_checkpoint_at_another_input_size_is_interpolated(nano_sam_checkpoint):
    model = build_cwsam("vit_nano", 2, sam_checkpoint=nano_sam_checkpoint, input_size=64)
    sam_state = torch.load(nano_sam_checkpoint, weights_only=True)
    assert sam_state["image_encoder.pos_embed"].shape[1:3] == (8, 8)
    assert model.image_encoder.pos_embed.shape[1:3] == (4, 4)
    global_block = BACKBONES["vit_nano"].global_attn_indexes[0]
    assert model.image_encoder.blocks[global_block].attn.rel_pos_h.shape[0] == 2 * 4 - 1
    # The interpolated embedding keeps the checkpoint's mean (a bicubic resize of a smooth field).
    assert model.image_encoder.pos_embed.mean().item() == pytest.approx(sam_state["image_encoder.pos_embed"].mean().item(), abs=1e-2)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_checkpoint_of_another_backbone_names_it(tmp_path, nano_sam_checkpoint):
    with pytest.raises(CheckpointError, match="looks like a vit_nano checkpoint.*uses backbone vit_tiny"):
        build_cwsam("vit_tiny", 2, sam_checkpoint=nano_sam_checkpoint)


def test_file_that_is_not_a_sam_checkpoint(tmp_path):
    not_sam = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(3)}, not_sam)
    with pytest.raises(CheckpointError, match="is not a SAM checkpoint"):
        build_cwsam("vit_nano", 2, sam_checkpoint=not_sam)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        build_cwsam("vit_nano", 2, sam_checkpoint=text)
    with pytest.raises(CheckpointError, match="not found"):
        build_cwsam("vit_nano", 2, sam_checkpoint=tmp_path / "missing.pth")


def test_vit_b_official_layout_loads_and_counts(tmp_path):
    """SAM vit_b from segment_anything's own builder, saved and loaded into CWSAM vit_b."""
    from segment_anything import sam_model_registry

    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    model = build_cwsam("vit_b", 5)
    report = load_sam_weights(model, path)
    assert report.missing == [] and report.unexpected == []
    assert len(report.new) > 0
    trainable, total = parameter_counts(model)
    assert (trainable, total) == (11_189_296, 101_412_244)
    assert trainable / total <= 0.12


def _low_pass_reference(images, keep_fraction=0.25):
    """The authors' formulation: complex FFT, fftshift, central square, inverse, |real|."""
    height, width = images.shape[-2:]
    half = int((height * width * keep_fraction) ** 0.5 / 2)
    spectrum = torch.fft.fftshift(torch.fft.fft2(images, norm="forward"), dim=(-2, -1))
    mask = torch.zeros(height, width)
    mask[height // 2 - half : height // 2 + half, width // 2 - half : width // 2 + half] = 1
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1)), norm="forward").real.abs()


@pytest.mark.parametrize("shape", [(64, 64), (128, 96), (48, 80)])
def test_low_pass_equals_the_authors_formulation(shape):
    torch.manual_seed(0)
    images = torch.randn(2, 3, *shape)
    torch.testing.assert_close(low_pass(images), _low_pass_reference(images), atol=1e-5, rtol=1e-4)
