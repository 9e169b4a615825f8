"""FusedAttention against segment_anything's own Attention: same outputs and gradients in fp32."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention, window_partition, window_unpartition

from cwsam_core.model.build import build_cwsam
from cwsam_core.model.modeling import AdaptedBlock, FusedAttention, set_attention

TOLERANCE = dict(atol=1e-5, rtol=1e-5)

# (name, dim, heads, window (0: global), grid of tokens, position-table size): vit_b and vit_tiny block shapes.
CASES = [
    ("vit_b windowed, padded (S=512)", 768, 12, 14, 32, 14),
    ("vit_b windowed, no padding (S=448)", 768, 12, 14, 28, 14),
    ("vit_b global (S=512)", 768, 12, 0, 32, 32),
    ("vit_b global, tables of S=1024 interpolated", 768, 12, 0, 20, 64),
    ("vit_tiny windowed, padded (S=160)", 256, 4, 8, 10, 8),
    ("vit_tiny windowed, no padding (S=256)", 256, 4, 8, 16, 8),
    ("vit_tiny global (S=128)", 256, 4, 0, 8, 8),
    ("vit_tiny global, not square", 256, 4, 0, (6, 9), 8),
]


def _reference(attention: Attention, x: torch.Tensor, window: int) -> torch.Tensor:
    """segment_anything's Block around its Attention: partition, attend, unpartition."""
    if window == 0:
        return attention(x)
    windows, pad_hw = window_partition(x, window)
    return window_unpartition(attention(windows), window, pad_hw, x.shape[1:3])


def _modules(dim: int, heads: int, table: int, seed: int = 0):
    torch.manual_seed(seed)
    reference = Attention(dim, heads, qkv_bias=True, use_rel_pos=True, input_size=(table, table))
    with torch.no_grad():  # SAM zero-initialises the tables; random ones test the position terms
        reference.rel_pos_h.normal_(0, 0.5)
        reference.rel_pos_w.normal_(0, 0.5)
        reference.qkv.bias.normal_(0, 0.5)  # padded keys are the qkv bias: make it matter
    return reference


@pytest.mark.parametrize("strategy", ["auto", "bias", "folded", "explicit"])
@pytest.mark.parametrize("name,dim,heads,window,grid,table", CASES, ids=[c[0] for c in CASES])
def test_outputs_and_gradients_equal_segment_anything(name, dim, heads, window, grid, table, strategy, monkeypatch):
    monkeypatch.setattr(FusedAttention, "strategy", strategy)
    _check_against_segment_anything(dim, heads, window, grid, table)


@pytest.mark.parametrize("name,dim,heads,window,grid,table", [CASES[0], CASES[6]], ids=[CASES[0][0], CASES[6][0]])
def test_without_recomputation_in_backward_too(name, dim, heads, window, grid, table, monkeypatch):
    monkeypatch.setattr(FusedAttention, "recompute", False)
    _check_against_segment_anything(dim, heads, window, grid, table)


def _check_against_segment_anything(dim: int, heads: int, window: int, grid, table: int) -> None:
    reference = _modules(dim, heads, table)
    fused = FusedAttention.from_attention(reference, window)
    height, width = grid if isinstance(grid, tuple) else (grid, grid)
    x = torch.randn(2, height, width, dim)

    with torch.no_grad():
        torch.testing.assert_close(fused(x), _reference(reference, x, window), **TOLERANCE)

    grad_out = torch.randn(2, height, width, dim)
    results = []
    for run in (lambda t: _reference(reference, t, window), fused):
        reference.zero_grad(set_to_none=True)
        leaf = x.clone().requires_grad_(True)
        (run(leaf) * grad_out).sum().backward()
        results.append([leaf.grad] + [p.grad.clone() for p in reference.parameters()])
    names = ["input"] + [n for n, _ in reference.named_parameters()]
    for what, got, expected in zip(names, results[1], results[0]):
        scale = expected.abs().max().item()
        torch.testing.assert_close(got / scale, expected / scale, **TOLERANCE, msg=lambda m: f"{what}: {m}")


def test_the_automatic_strategy():
    """CPU: the mask for inference up to 1024 tokens, folded where gradients flow or for larger grids;
    other devices: the mask."""
    reference = _modules(256, 4, 8).requires_grad_(False)  # a frozen SAM encoder
    fused = FusedAttention.from_attention(reference, 8)
    q = torch.randn(1, 4, 1024, 64)
    with torch.no_grad():
        assert fused._strategy(q) == "bias"
        assert fused._strategy(torch.randn(1, 4, 1025, 64)) == "folded"
    assert fused._strategy(q) == "bias"  # grad mode, but nothing needs a gradient
    reference.rel_pos_h.requires_grad_(True)  # trained from scratch
    assert fused._strategy(q) == "folded"
    reference.rel_pos_h.requires_grad_(False)
    assert fused._strategy(q.requires_grad_(True)) == "folded"
    assert fused._strategy(torch.randn(1, 4, 4096, 64, device="meta", requires_grad=True)) == "bias"


def test_from_and_to_attention_share_parameters_and_names():
    reference = _modules(256, 4, 8)
    fused = FusedAttention.from_attention(reference, 8)
    assert list(fused.state_dict()) == list(reference.state_dict()) == [
        "rel_pos_h", "rel_pos_w", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]
    assert all(a is b for a, b in zip(fused.parameters(), reference.parameters()))
    back = fused.to_attention()
    assert type(back) is Attention and all(a is b for a, b in zip(back.parameters(), reference.parameters()))
    built = FusedAttention(256, 4, use_rel_pos=True, input_size=(16, 16), window_size=8)
    assert built.rel_pos_h.shape == reference.rel_pos_h.shape == (15, 64)


def test_blocks_default_to_fused_and_switch_back(monkeypatch):
    block = AdaptedBlock(64, 2, use_rel_pos=True, window_size=4, input_size=(8, 8))
    assert block.attention == "fused" and isinstance(block.attn, FusedAttention)
    monkeypatch.setenv("CWSAM_ATTENTION", "reference")
    assert AdaptedBlock(64, 2, use_rel_pos=True, window_size=4, input_size=(8, 8)).attention == "reference"
    monkeypatch.setenv("CWSAM_ATTENTION", "fast")
    with pytest.raises(ValueError, match="CWSAM_ATTENTION must be one of fused, reference"):
        AdaptedBlock(64, 2, use_rel_pos=True, window_size=4, input_size=(8, 8))


@pytest.mark.parametrize("backbone,size", [("vit_nano", 96), ("vit_tiny", 160)])
def test_whole_model_equal_with_either_attention_and_same_weights(backbone, size):
    """The adapters, the low-frequency input module and the decoder run on either attention alike,
    forward and backward, and the random initialisation does not depend on the choice."""
    torch.manual_seed(0)
    model = build_cwsam(backbone, 3, input_size=size)
    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CWSAM_ATTENTION", "reference")
        reference_built = build_cwsam(backbone, 3, input_size=size)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference_built.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():  # non-zero position tables and biases, so that every term counts
        for block in model.image_encoder.blocks:
            block.attn.rel_pos_h.normal_(0, 0.5)
            block.attn.rel_pos_w.normal_(0, 0.5)
    images = torch.randn(2, 3, size, size)
    target = torch.randint(0, 3, (2, size, size))
    outputs, gradients = {}, {}
    for kind in ("fused", "reference"):
        assert set_attention(model, kind) == len(model.image_encoder.blocks)
        model.zero_grad(set_to_none=True)
        logits = model(images)
        torch.nn.functional.cross_entropy(logits, target).backward()
        outputs[kind] = logits.detach()
        gradients[kind] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(outputs["fused"], outputs["reference"], **TOLERANCE)
    assert gradients["fused"].keys() == gradients["reference"].keys()
    # Relative to the largest gradient of the model: some gradients are zero but for rounding (the key
    # biases of the decoder's attention: softmax ignores a constant added to every logit).
    scale = max(grad.abs().max().item() for grad in gradients["reference"].values())
    for name, grad in gradients["reference"].items():
        torch.testing.assert_close(gradients["fused"][name] / scale, grad / scale, **TOLERANCE,
                                   msg=lambda m: f"{name}: {m}")


def test_encoder_gradient_checkpointing_around_the_recomputed_attention():
    """Block checkpointing (--gradient-checkpointing) nests around the attention's own recomputation."""
    torch.manual_seed(0)
    model = build_cwsam("vit_nano", 3, input_size=96)
    images, target = torch.randn(2, 3, 96, 96), torch.randint(0, 3, (2, 96, 96))
    gradients = []
    for checkpointing in (False, True):
        model.image_encoder.gradient_checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), target).backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, atol=1e-6, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def test_padding_without_a_qkv_bias():
    torch.manual_seed(0)
    reference = Attention(64, 2, qkv_bias=False, use_rel_pos=True, input_size=(4, 4))
    with torch.no_grad():
        reference.rel_pos_h.normal_(0, 0.5)
        reference.rel_pos_w.normal_(0, 0.5)
    fused = FusedAttention.from_attention(reference, 4)
    x = torch.randn(2, 6, 7, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), _reference(reference, x, 4), **TOLERANCE)
