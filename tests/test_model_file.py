"""Model files: round trips, SAM identity, refusal of pickled code, the authors' checkpoints, `cwsam info`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_helpers import write_sam_checkpoint

from cwsam_core.common.card import ClassInfo, ModelCard
from cwsam_core.errors import ModelFileError
from cwsam_core.model.build import build_cwsam, build_model, load_authors_checkpoint
from cwsam_core.model.checkpoint import AUTHORS_KEY_MAP
from cwsam_core.model.model_file import load_model_file, read_model_card, save_model_file

CLASSES = [ClassInfo(0, "water", "#1f5fff"), ClassInfo(1, "vegetation", "#2e9e3f"), ClassInfo(5, "urban", "#c73b3b")]


def make_card(**overrides) -> ModelCard:
    values = dict(backbone="vit_nano", input_size=128, classes=list(CLASSES), bands=["VV", "VH"], input_scale="db",
                  normalization={"mean": [-12.0, -19.0, 7.0], "std": [4.0, 4.5, 3.0]}, provenance={"epochs": 3})
    values.update(overrides)
    return ModelCard(**values)


@pytest.fixture(scope="module")
def sam_checkpoint(tmp_path_factory):
    return write_sam_checkpoint(tmp_path_factory.mktemp("sam") / "sam_vit_nano.pth", "vit_nano", seed=1)


def _perturb(model):
    # Stand in for training: change every trainable tensor, so a round trip that dropped one would show.
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)


def test_self_contained_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_cwsam("vit_nano", 3).eval()
    _perturb(model)
    path = save_model_file(tmp_path / "scratch.cwsam.pt", model, make_card())
    loaded, card = load_model_file(path)
    assert card.self_contained and card.sam_checkpoint is None
    assert [c.name for c in card.classes] == ["water", "vegetation", "urban"]
    assert card.normalization["std"] == [4.0, 4.5, 3.0]
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))


def test_fine_tuned_file_stores_only_trained_tensors_and_checks_sam(tmp_path, sam_checkpoint):
    torch.manual_seed(0)
    model = build_cwsam("vit_nano", 3, sam_checkpoint=sam_checkpoint).eval()
    _perturb(model)
    path = save_model_file(tmp_path / "tuned.cwsam.pt", model, make_card())
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert "image_encoder.blocks.0.attn.qkv.weight" not in stored
    assert "image_encoder.blocks.0.attn_adapter.down.weight" in stored
    assert "mask_decoder.class_head.3.weight" in stored
    # The trained tensors, and the decoder's positional encoding (an imported model's is not SAM's).
    assert set(stored) == {n for n, p in model.named_parameters() if p.requires_grad} | {
        "pe_layer.positional_encoding_gaussian_matrix"}
    card = read_model_card(path)
    assert card.sam_checkpoint["name"] == "sam_vit_nano.pth" and len(card.sam_checkpoint["sha256"]) == 64

    loaded, _ = load_model_file(path, sam_checkpoint=sam_checkpoint)
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    assert not loaded.image_encoder.blocks[0].attn.qkv.weight.requires_grad

    with pytest.raises(ModelFileError, match="needs the SAM checkpoint sam_vit_nano.pth"):
        load_model_file(path)
    other = write_sam_checkpoint(tmp_path / "sam_other.pth", "vit_nano", seed=2)
    with pytest.raises(ModelFileError, match="is not the one this model was trained with"):
        load_model_file(path, sam_checkpoint=other)


def test_float16_file_is_half_the_size_and_loads_as_float32_within_rounding(tmp_path):
    torch.manual_seed(0)
    model = build_cwsam("vit_nano", 3).eval()
    _perturb(model)
    full = save_model_file(tmp_path / "full.cwsam.pt", model, make_card())
    half = save_model_file(tmp_path / "half.cwsam.pt", model, make_card(), float16=True)
    stored = torch.load(half, weights_only=True)
    assert stored["tensor_dtype"] == "float16"
    assert {v.dtype for v in stored["state_dict"].values()} == {torch.float16}
    assert 0.45 < half.stat().st_size / full.stat().st_size < 0.55

    loaded, card = load_model_file(half)
    assert card.normalization["std"] == [4.0, 4.5, 3.0]
    for key, value in loaded.state_dict().items():
        original = model.state_dict()[key]
        assert value.dtype == torch.float32
        # float16 keeps 11 significant bits: each value within half a unit in the last place.
        assert torch.allclose(value, original, rtol=2.0**-11, atol=2.0**-24), key
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        reference, outputs = model(images), loaded(images)
    assert not torch.equal(reference, outputs)  # the weights did go through float16
    scale = reference.abs().max()
    assert (outputs - reference).abs().max() < 2e-3 * scale
    assert (outputs.argmax(1) != reference.argmax(1)).float().mean() < 1e-3


def test_float16_refuses_values_out_of_its_range(tmp_path):
    model = build_cwsam("vit_nano", 3)
    with torch.no_grad():
        model.mask_decoder.class_head[3].weight[0, 0] = 1e5
    with pytest.raises(ModelFileError, match=r"class_head\.3\.weight holds values up to 100000.*save this model in float32"):
        save_model_file(tmp_path / "big.cwsam.pt", model, make_card(), float16=True)
    assert list(tmp_path.iterdir()) == []


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_file_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    payload = _RunsCode()
    payload.marker = str(marker)
    crafted = tmp_path / "evil.cwsam.pt"
    torch.save({"format": "cwsam-model", "format_version": 1, "card": payload, "state_dict": {}}, crafted)
    with pytest.raises(ModelFileError, match="pickled Python objects.*refusing to load"):
        load_model_file(crafted)
    assert not marker.exists(), "loading ran code from the file"


def test_other_files_are_not_model_files(tmp_path, sam_checkpoint):
    with pytest.raises(ModelFileError, match="is not a CWSAM model file"):
        load_model_file(sam_checkpoint)
    with pytest.raises(ModelFileError, match="not found"):
        load_model_file(tmp_path / "nothing.pt")
    future = tmp_path / "future.cwsam.pt"
    torch.save({"format": "cwsam-model", "format_version": 99, "card": {}, "state_dict": {}}, future)
    with pytest.raises(ModelFileError, match="format 99"):
        load_model_file(future)


def test_card_validation():
    with pytest.raises(ModelFileError, match="input scale"):
        make_card(input_scale="decibel")
    with pytest.raises(ModelFileError, match="unique"):
        make_card(classes=[ClassInfo(1, "a", "#000000"), ClassInfo(1, "b", "#ffffff")])
    with pytest.raises(ModelFileError, match="lists 3 classes but the model has 2"):
        save_model_file("/tmp/never.pt", build_cwsam("vit_nano", 2), make_card())


def _to_authors_layout(state):
    """Our keys -> the authors' (the inverse of AUTHORS_KEY_MAP), plus their unused third adapter."""
    inverse = {
        "attn_adapter.down.": "Space_Adapter.D_fc1.", "attn_adapter.up.": "Space_Adapter.D_fc2.",
        "mlp_adapter.down.": "MLP_Adapter.D_fc1.", "mlp_adapter.up.": "MLP_Adapter.D_fc2.",
        "input_module.shared_proj.": "prompt_generator.shared_mlp.",
        "input_module.embedding_proj.": "prompt_generator.embedding_generator.",
        "input_module.patch_conv.": "prompt_generator.prompt_generator.proj.",
        "mask_decoder.class_head.": "mask_decoder.cls_upscaling.",
    }
    out = {}
    for key, value in state.items():
        for ours, theirs in inverse.items():
            key = key.replace(ours, theirs)
        if ".input_module.block_mlps." in key:
            index, rest = key.split(".input_module.block_mlps.")[1].split(".", 1)
            key = f"image_encoder.prompt_generator.lightweight_mlp_{index}.0.{rest}"
        out[key] = value
        if "Space_Adapter" in key:
            out[key.replace("Space_Adapter", "Depth_Adapter")] = torch.randn_like(value)
    return out


def test_authors_checkpoint_layout_loads_with_nothing_missing(tmp_path):
    torch.manual_seed(0)
    # The authors' model: no refinement, their embedding layout.
    model = build_model("vit_nano", 5, refine_channels=0, embedding_layout="authors", pixel_expert=False).eval()
    authors = _to_authors_layout(model.state_dict())
    authors["criterionBCE.weight"] = torch.tensor([1.5, 1, 0.5, 1.9, 0.1])  # their loss's class weights
    assert any(k.startswith("image_encoder.prompt_generator.lightweight_mlp_1.0.") for k in authors)
    assert len(AUTHORS_KEY_MAP) == 9
    path = tmp_path / "model_epoch_best.pth"
    torch.save({f"module.{k}": v for k, v in authors.items()}, path)  # as saved from a DDP wrapper
    loaded, report = load_authors_checkpoint(path)
    assert loaded.num_classes == 5 and loaded.backbone == "vit_nano" and loaded.embedding_layout == "authors"
    assert report.missing == [] and report.new == [] and report.unexpected == []
    assert report.ignored and all(".Depth_Adapter." in k or k == "criterionBCE.weight" for k in report.ignored)
    assert "criterionBCE.weight" in report.ignored
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(images), loaded.eval()(images))
    # Its frozen weights come from their file, which no model file can name: saving it is refused.
    with pytest.raises(ModelFileError, match="import-authors"):
        save_model_file(tmp_path / "never.cwsam.pt", loaded, make_card(classes=[ClassInfo(i, f"c{i}", "#000000")
                                                                              for i in range(5)]))
    assert not (tmp_path / "never.cwsam.pt").exists()


def test_cli_info_prints_the_model_card(tmp_path):
    path = save_model_file(tmp_path / "card.cwsam.pt", build_cwsam("vit_nano", 3), make_card(gsd=10.0))
    cwsam = Path(sys.executable).with_name("cwsam")
    result = subprocess.run([str(cwsam), "info", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "vit_nano (input 128 x 128 px)" in out
    assert "self-contained" in out
    assert "VV, VH" in out and "db" in out
    assert "#c73b3b  urban" in out
    assert "epochs: 3" in out
    bad = subprocess.run([str(cwsam), "info", str(tmp_path / "nope.pt")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "model file not found" in bad.stderr


def test_model_card_text_gives_one_line_per_training_file():
    data = [{"image": f"scenes/s{i}.tif", "labels": f"scenes/s{i}_labels.tif", "role": role,
             "image_sha256": f"{i}" * 64, "labels_sha256": "f" * 64}
            for i, role in ((1, "training"), (2, "validation"))]
    text = make_card(provenance={"data": data, "validation": {"miou": 0.123456789, "iou": [0.5, 0.25]},
                                 "epochs": 3}).describe()
    assert "  data: 2 file pairs" in text
    assert "    training: scenes/s1.tif + scenes/s1_labels.tif (sha256 image 111111111111, labels ffffffffffff)" in text
    assert "    validation: scenes/s2.tif + scenes/s2_labels.tif" in text
    assert "  validation: miou 0.1235, iou [0.5, 0.25]" in text
    assert "{'" not in text and "1" * 13 not in text  # no Python reprs, checksums cut short


def test_saved_files_follow_the_umask_and_leave_no_temporary(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = save_model_file(tmp_path / "shared.cwsam.pt", build_cwsam("vit_nano", 3), make_card())
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["shared.cwsam.pt"]
