"""Models trained with the authors' CWSAM code: imported exactly (`cwsam import-authors`), then classified.

The authors' model is rebuilt in `authors_reference.py` from their code's description, separately from
the engine; these tests check that an imported model computes what theirs computes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from authors_reference import (
    FUSAR_LOSS_WEIGHT, KEYS_FILE, VIT_B, VIT_NANO, AuthorsModel, Dims, authors_input, authors_shapes, authors_state,
    fit_tables, write_authors_files, write_grey8,
)

from cwsam_core import cli
from cwsam_core.model.authors import AUTHORS_NORMALIZATION, FUSAR_MAP_CLASSES
from cwsam_core.model.build import build_model
from cwsam_core.model.model_file import load_model_file, read_model_card

FUSAR = [(c.value, c.name, c.color) for c in FUSAR_MAP_CLASSES]


def run_cli(capsys, *argv) -> tuple:
    """(exit status, stdout, stderr) of ``cwsam ARGV`` run in this process."""
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_their_state_dict_has_every_key_of_the_list():
    listed = [line.strip() for line in KEYS_FILE.read_text().splitlines() if line.strip()]
    shared = Path(__file__).resolve().parents[2] / "shared" / "docs" / "authors-checkpoint-keys.txt"
    if shared.is_file():
        assert shared.read_text().split() == listed  # our copy is the project's list
    shapes = authors_shapes(VIT_B)
    assert len(listed) == 480 and set(shapes) == set(listed)
    assert shapes["criterionBCE.weight"] == (5,) and shapes["mask_decoder.cls_upscaling.3.weight"] == (160, 64, 7, 7)
    assert shapes["image_encoder.blocks.2.attn.rel_pos_h"] == (127, 64)  # global block at 1024
    assert shapes["image_encoder.blocks.0.attn.rel_pos_h"] == (27, 64)  # windowed block
    assert shapes["image_encoder.prompt_generator.embedding_generator.weight"] == (24, 768)


# --- vit_b: every key of their checkpoint, their shapes ------------------------------------------------


@pytest.fixture(scope="module")
def vit_b_state():
    return authors_state(VIT_B, seed=0)  # drawn once for the module's tests


@pytest.fixture(scope="module")
def vit_b_import(tmp_path_factory, vit_b_state):
    """Their vit_b checkpoint (all 480 keys, random seeded values) and SAM's, imported with the CLI."""
    folder = tmp_path_factory.mktemp("vit_b")
    checkpoint, sam = write_authors_files(folder, VIT_B, state=vit_b_state)
    output = folder / "fusar.cwsam.pt"
    status = cli.main(["import-authors", str(checkpoint), "--sam-checkpoint", str(sam), "--output", str(output)])
    assert status == 0
    return checkpoint, sam, output


def test_vit_b_import_keeps_what_sam_lacks_and_names_sam(vit_b_import, vit_b_state):
    checkpoint, sam, output = vit_b_import
    card = read_model_card(output)
    assert card.backbone == "vit_b" and card.input_size == 1024 and card.refine_channels == 0
    assert [(c.value, c.name, c.color) for c in card.classes] == FUSAR
    assert card.bands == ["band 1"] and card.input_scale == "amplitude" and card.training_input_scale == "amplitude"
    assert card.normalization == AUTHORS_NORMALIZATION
    assert card.embedding_layout == "authors" and card.input_clip is None
    assert card.sam_checkpoint["name"] == sam.name  # the official SAM file, not theirs
    assert card.provenance["loss_weight"] == FUSAR_LOSS_WEIGHT
    stored = torch.load(output, weights_only=True)["state_dict"]
    assert "image_encoder.blocks.0.attn.qkv.weight" not in stored and "image_encoder.pos_embed" not in stored
    assert not any("Depth_Adapter" in k or "criterion" in k for k in stored)
    assert {"image_encoder.input_module.embedding_proj.weight", "mask_decoder.class_head.3.weight",
            "no_mask_embed.weight", "pe_layer.positional_encoding_gaussian_matrix"} <= set(stored)
    assert torch.equal(stored["pe_layer.positional_encoding_gaussian_matrix"],
                       vit_b_state["pe_layer.positional_encoding_gaussian_matrix"])


def test_vit_b_forward_equals_their_code(vit_b_import, vit_b_state):
    """At S = 256 (their 1024 tables fitted alike in both paths), a batch of two."""
    _, sam, output = vit_b_import
    size = 256
    model, card = load_model_file(output, sam, input_size=size)
    theirs = vit_b_state
    reference = AuthorsModel(fit_tables(theirs, VIT_B, size, card.position_tables), VIT_B, size)
    torch.manual_seed(3)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours = model(images)
    expected = reference(images)
    assert ours.shape == expected.shape == (2, 5, size, size)
    assert float(expected.abs().max()) > 0.1  # not a trivial output
    assert float((ours - expected).abs().max()) < 1e-5
    # Their embedding reshape matters: without it (or with our layout) the outputs are far apart.
    plain = AuthorsModel(fit_tables(theirs, VIT_B, size, card.position_tables), VIT_B, size, embedding_quirk=False)
    assert float((plain(images) - expected).abs().max()) > 1e-2
    model.image_encoder.input_module.embedding_layout = "ours"
    with torch.no_grad():
        assert float((model(images) - expected).abs().max()) > 1e-2


@pytest.mark.slow
def test_vit_b_forward_equals_their_code_at_1024(vit_b_import, vit_b_state):
    _, sam, output = vit_b_import
    model, _ = load_model_file(output, sam)
    reference = AuthorsModel(vit_b_state, VIT_B, 1024)
    torch.manual_seed(4)
    images = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        ours = model(images)
    assert float((ours - reference(images)).abs().max()) < 1e-5


# --- the command on small models: wrapping, classify, bad input ---------------------------------------


@pytest.fixture(scope="module")
def nano_files(tmp_path_factory):
    return write_authors_files(tmp_path_factory.mktemp("nano"), VIT_NANO, seed=0)


@pytest.mark.parametrize("wrap", [
    lambda s: {f"module.{k}": v for k, v in s.items()},  # saved from a DistributedDataParallel wrapper
    lambda s: {"model": s, "epoch": 200},  # under a "model" key
    lambda s: {"model": {f"module.{k}": v for k, v in s.items()}},
], ids=["module-prefix", "model-key", "both"])
def test_wrapped_checkpoints_import_alike(tmp_path, capsys, nano_files, wrap):
    plain = tmp_path / "plain.cwsam.pt"
    status, _, err = run_cli(capsys, "import-authors", nano_files[0], "--sam-checkpoint", nano_files[1], "--output", plain)
    assert status == 0, err
    wrapped, _ = write_authors_files(tmp_path, VIT_NANO, seed=0, wrap=wrap)
    output = tmp_path / "wrapped.cwsam.pt"
    status, out, err = run_cli(capsys, "import-authors", wrapped, "--sam-checkpoint", nano_files[1], "--output", output)
    assert status == 0, err
    assert "5 classes (building, vegetation, water, road, background)" in out
    a, b = torch.load(plain, weights_only=True)["state_dict"], torch.load(output, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_import_then_classify_gives_their_classes_on_an_8bit_geotiff(tmp_path, capsys, nano_files):
    checkpoint, sam = nano_files
    model_path = tmp_path / "fusar.cwsam.pt"
    status, out, err = run_cli(capsys, "import-authors", checkpoint, "--sam-checkpoint", sam, "--output", model_path)
    assert status == 0 and err == "" and str(model_path) in out
    raster = write_grey8(tmp_path / "gf3.tif", VIT_NANO.image)  # one tile: the authors' own setting
    output = tmp_path / "classes.tif"
    status, out, err = run_cli(capsys, "classify", raster, "--model", model_path, "--sam-checkpoint", sam,
                               "--output", output, "--device", "cpu", "--quiet")
    assert status == 0, err
    assert "warning" not in err  # an 8-bit raster is read as the model's amplitude, no conversion
    with rasterio.open(output) as dst:
        classes = dst.read(1)
        colormap = dst.colormap(1)
    for value, name, color in FUSAR:  # styled with the FUSAR-Map palette and names
        assert "#{:02x}{:02x}{:02x}".format(*colormap[value][:3]) == color
        assert name in output.with_suffix(".qml").read_text()
    assert "building" in Path(str(output) + ".aux.xml").read_text()
    record = json.loads(output.with_suffix(".run.json").read_text())
    assert record["parameters"]["input_scale"] == "amplitude" and record["parameters"]["band_indexes"] == [1]
    # The same classes as their code on the same tile: RGB copy, /255, ImageNet mean and std.
    with rasterio.open(raster) as src:
        grey = src.read(1)
    expected = AuthorsModel(authors_state(VIT_NANO, seed=0), VIT_NANO, VIT_NANO.image)(authors_input(grey))
    expected = expected.argmax(dim=1)[0].numpy()
    assert len(np.unique(expected)) > 1
    assert (classes == expected).mean() > 0.999


def test_classes_from_a_config_or_the_command_line(tmp_path, capsys):
    ten = Dims(**{**VIT_NANO.__dict__, "classes": 10})
    checkpoint, sam = write_authors_files(tmp_path, ten, seed=5)
    output = tmp_path / "map2.cwsam.pt"
    status, _, err = run_cli(capsys, "import-authors", checkpoint, "--sam-checkpoint", sam, "--output", output)
    assert status == 2 and "has 10 classes, not FUSAR-Map's 5" in err and not output.exists()
    names = ["water", "woodland", "vegetation", "bare soil", "industry", "residence", "road", "paddy", "planting",
             "human-built"]
    palette = [[0, 0, 255], [0, 139, 0], [0, 255, 0], [139, 0, 0], [255, 0, 0], [205, 173, 0], [83, 134, 139],
               [0, 139, 139], [139, 105, 20], [189, 183, 107]]
    config = tmp_path / "map2.yaml"
    config.write_text(
        "train_dataset:\n  dataset:\n    name: paired-image-folders\n    args:\n"
        f"      classes: {json.dumps(names)}\n      ignore_bg: false\n      palette: {json.dumps(palette)}\n"
        "model:\n  name: sam\n  args:\n    num_classes: 10\n    inp_size: 128\n"
        "    loss_weight: [0.4, 1.6, 0.4, 1.6, 1.0, 0.5, 1.5, 1.7, 1.4, 0.9]\n")
    status, _, err = run_cli(capsys, "import-authors", checkpoint, "--sam-checkpoint", sam, "--config", config,
                             "--output", output)
    assert status == 0, err
    card = read_model_card(output)
    assert [c.name for c in card.classes] == names and card.classes[3].color == "#8b0000"
    assert card.provenance["config"] == "map2.yaml" and card.provenance["ignore_bg"] is False
    status, _, err = run_cli(capsys, "import-authors", checkpoint, "--sam-checkpoint", sam, "--classes",
                             ",".join(f"c{i}" for i in range(10)), "--output", tmp_path / "named.cwsam.pt")
    assert status == 0, err
    assert [c.value for c in read_model_card(tmp_path / "named.cwsam.pt").classes] == list(range(10))


class _Payload:
    """Stands for any pickled object: torch.load(weights_only=True) refuses to build it."""

    def __reduce__(self):
        return (print, ("this would have run",))


def _bad_inputs(tmp_path: Path, nano_files) -> dict:
    checkpoint, sam = nano_files
    other_backbone = tmp_path / "wide"
    other_backbone.mkdir()
    odd = Dims(**{**VIT_NANO.__dict__, "embed": 96})  # width 96: no registered backbone
    odd_checkpoint, _ = write_authors_files(other_backbone, VIT_NANO, seed=0)
    torch.save(authors_state(odd, seed=0), odd_checkpoint)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    _, tiny_sam = write_authors_files(tiny, Dims(embed=256, depth=6, heads=4, global_blocks=(2, 5), window=8, image=128,
                                                 prompt=64, decoder_mlp=256, decoder_heads=4, iou_hidden=64), seed=0)
    other_sam = tmp_path / "other" / "sam_vit_nano.pth"
    other_sam.parent.mkdir()
    write_authors_files(other_sam.parent, VIT_NANO, seed=7)  # another model, and another SAM encoder
    pickled = tmp_path / "pickled.pth"
    torch.save({"state": authors_state(VIT_NANO, seed=0), "payload": _Payload()}, pickled)
    return {
        "another backbone": ([odd_checkpoint, "--sam-checkpoint", sam],
                             "no registered backbone has an encoder of width 96"),
        "another backbone than SAM's": ([checkpoint, "--sam-checkpoint", tiny_sam],
                                        "does not match the one the model was trained with: it is vit_tiny"),
        "another class count": ([checkpoint, "--sam-checkpoint", sam, "--classes", "building,vegetation,water,road"],
                                "has 5 classes but --classes lists 4"),
        "another SAM": ([checkpoint, "--sam-checkpoint", other_sam],
                        "does not match the one the model was trained with: 37 frozen encoder tensors differ"),
        "pickled code": ([pickled, "--sam-checkpoint", sam], "contains pickled Python objects"),
        "SAM given twice": ([checkpoint, "--sam-checkpoint", checkpoint], "not an official SAM checkpoint"),
    }


def test_bad_input_one_clear_line_and_nothing_written(tmp_path, capsys, nano_files):
    for case, (argv, expected) in _bad_inputs(tmp_path, nano_files).items():
        output = tmp_path / "out" / "model.cwsam.pt"
        output.parent.mkdir(exist_ok=True)
        status, out, err = run_cli(capsys, "import-authors", *argv, "--output", output)
        assert status == 2, case
        assert expected in err, (case, err)
        assert len(err.strip().splitlines()) == 1 and out == "", case
        assert list(output.parent.iterdir()) == [], case  # nothing written, no temporary file left


def test_input_module_layouts_differ_only_in_the_embedding_order():
    torch.manual_seed(0)
    ours = build_model("vit_nano", 3, refine_channels=0, pixel_expert=False).eval()
    theirs = build_model("vit_nano", 3, refine_channels=0, embedding_layout="authors", pixel_expert=False).eval()
    theirs.load_state_dict(ours.state_dict())
    images = torch.randn(1, 3, 128, 128)
    patches = ours.image_encoder.patch_embed(images)  # 1 x 8 x 8 x 64
    module = theirs.image_encoder.input_module
    mixed = patches.reshape(1, 64, 64).permute(0, 2, 1).reshape(1, 8, 8, 64)  # their reshape, by hand
    expected = ours.image_encoder.input_module.features(images, mixed)
    torch.testing.assert_close(module.features(images, patches), expected)
    with pytest.raises(ValueError, match="embedding layout"):
        build_model("vit_nano", 3, embedding_layout="theirs")
