"""ONNX export and classification with ONNX Runtime: same maps as PyTorch, no torch needed, clear errors.

The vit_tiny tests use the bundled demo model (trained, S = 256) on the demo scene, so class margins are
real ones; vit_b is a randomly initialised official-layout SAM checkpoint fine-tuned nowhere, at S = 256.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import rasterio
import torch
from model_helpers import write_sam_checkpoint
from test_inference import CLASSES, card_for, write_sar

from cwsam_core.cli import main as cwsam_main
from cwsam_core.engine.inference import classify_file
from cwsam_core.engine.onnx_export import export_onnx
from cwsam_core.engine.onnx_runner import OnnxRunner, execution_providers
from cwsam_core.errors import ClassificationError, ExportError, ModelFileError
from cwsam_core.model.build import build_cwsam
from cwsam_core.model.model_file import load_model_file, read_model_card, save_model_file
from cwsam_core.model.onnx_card import read_onnx_export

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "resources" / "demo" / "model.cwsam.pt"
DEMO_SCENE = REPO / "resources" / "demo" / "scene.tif"
DEMO_REFERENCE = REPO / "resources" / "demo" / "reference.tif"
# Makes ``import torch`` (and of what needs it) fail in the process that runs it first, as without PyTorch.
NO_TORCH = textwrap.dedent("""
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "segment_anything"):
                raise ImportError(f"No module named {name!r} (blocked: no PyTorch here)")
            return None

    sys.meta_path.insert(0, NoTorch())
""")
# The cwsam command as ``python -m cwsam_core.cli`` in a process without torch.
TORCH_BLOCKED = NO_TORCH + textwrap.dedent("""
    import runpy
    sys.argv = ["cwsam", *sys.argv[1:]]
    try:
        runpy.run_module("cwsam_core.cli", run_name="__main__")
    finally:
        assert not any(m.split(".")[0] == "torch" for m in sys.modules), "torch was imported"
""")


def run_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TORCH_BLOCKED, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def read_classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


@pytest.fixture(scope="module")
def demo_exports(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("onnx")
    return {"float32": export_onnx(DEMO_MODEL, folder / "demo.onnx"),
            "int8": export_onnx(DEMO_MODEL, folder / "demo_int8.onnx", int8=True)}


@pytest.fixture(scope="module")
def torch_map(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("torch") / "classes.tif"
    classify_file(DEMO_SCENE, output, DEMO_MODEL, device="cpu", threads=2)
    return output


def test_export_card_and_logits(demo_exports):
    result = demo_exports["float32"]
    card, export = read_onnx_export(result.path)
    source = read_model_card(DEMO_MODEL)
    assert [c.__dict__ for c in card.classes] == [c.__dict__ for c in source.classes]  # names, values, colours
    assert (card.bands, card.input_scale, card.normalization, card.tile_overlap) == \
        (source.bands, source.input_scale, source.normalization, source.tile_overlap)
    assert card.tile_size == export["tile_size"] == 256 and export["precision"] == "float32"
    assert card.provenance == source.provenance
    from cwsam_core.common.paths import file_sha256

    assert export["source_sha256"] == file_sha256(DEMO_MODEL) and export["source"] == DEMO_MODEL.name
    metadata = {p.key: p.value for p in onnx.load(str(result.path), load_external_data=False).metadata_props}
    assert metadata["cwsam.tile_size"] == "256" and metadata["cwsam.source_sha256"] == export["source_sha256"]
    # The logits of ONNX Runtime against PyTorch's unchanged model (fused attention, FFT low-pass).
    model, _ = load_model_file(DEMO_MODEL)
    images = np.random.default_rng(5).normal(0, 1.5, (3, 3, 256, 256)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": images})[0]
    assert logits.shape == expected.shape
    assert np.abs(logits - expected).max() < 1e-4
    assert export["max_abs_logit_difference"] < 1e-4
    assert demo_exports["int8"].bytes < 0.5 * result.bytes


def test_onnx_classification_matches_pytorch(demo_exports, torch_map, tmp_path):
    reference = read_classes(torch_map)
    agreement = {}
    for precision, export in demo_exports.items():
        output = tmp_path / f"{precision}.tif"
        result = classify_file(DEMO_SCENE, output, export.path, device="cpu", threads=2, confidence_path=tmp_path /
                               f"{precision}_confidence.tif")
        classes = read_classes(output)
        assert classes.shape == reference.shape
        agreement[precision] = float((classes == reference).mean())
        record = json.loads(result.record.read_text())
        assert record["engine"]["name"] == "onnxruntime"
        assert record["engine"]["provider"] == "CPUExecutionProvider" and record["device"] == "cpu"
        assert record["engine"]["precision"] == precision
        assert "torch" not in record["software"] and record["software"]["onnxruntime"] == ort.__version__
        assert record["model"]["format"] == "onnx"
        assert record["model"]["exported_from"]["source_sha256"] == demo_exports["float32"].export["source_sha256"]
        assert output.with_suffix(".qml").is_file() and output.with_name(output.name + ".aux.xml").is_file()
    print(f"vit_tiny demo: ONNX Runtime fp32 agrees with PyTorch on {agreement['float32']:.4%} of pixels, "
          f"int8 on {agreement['int8']:.4%}")
    assert agreement["float32"] >= 0.999
    assert len(np.unique(reference)) >= 3  # a map with several classes, not a trivial agreement


def test_evaluate_takes_an_onnx_export(demo_exports):
    from cwsam_core.training.evaluation import evaluate

    onnx_metrics, card = evaluate(demo_exports["float32"].path, [(DEMO_SCENE, DEMO_REFERENCE)], device="cpu")
    torch_metrics, _ = evaluate(DEMO_MODEL, [(DEMO_SCENE, DEMO_REFERENCE)], device="cpu")
    assert card.classes == read_model_card(DEMO_MODEL).classes
    assert onnx_metrics.pixels == torch_metrics.pixels > 0
    assert abs(onnx_metrics.miou - torch_metrics.miou) < 1e-3 and onnx_metrics.miou > 0.5


def test_classification_runs_without_torch(demo_exports, torch_map, tmp_path):
    output = tmp_path / "classes.tif"
    result = run_without_torch("classify", DEMO_SCENE, "--model", demo_exports["float32"].path, "--output", output,
                               "--with-confidence", "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"Classes written to {output} on cpu" in result.stdout
    assert (read_classes(output) == read_classes(torch_map)).mean() >= 0.999
    assert (tmp_path / "classes_confidence.tif").is_file()
    assert json.loads(output.with_suffix(".run.json").read_text())["engine"]["name"] == "onnxruntime"
    info = run_without_torch("info", demo_exports["int8"].path)
    assert info.returncode == 0, info.stderr
    assert "CWSAM ONNX export" in info.stdout and "int8" in info.stdout and "water" in info.stdout
    # Evaluation with an ONNX model is part of the light install too.
    scored = run_without_torch("evaluate", "--model", demo_exports["float32"].path, "--image", DEMO_SCENE,
                               "--labels", DEMO_REFERENCE, "--json")
    assert scored.returncode == 0, scored.stderr
    assert 0.5 < json.loads(scored.stdout)["miou"] <= 1.0
    # A .cwsam.pt model needs torch: one line that says so, exit 2.
    refused = run_without_torch("classify", DEMO_SCENE, "--model", DEMO_MODEL, "--output", tmp_path / "pt.tif")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "needs the full install with PyTorch" in refused.stderr and not (tmp_path / "pt.tif").exists()
    # Export and training need it too: one line each, that says how to get it.
    for command in (["export", DEMO_MODEL, "--output", tmp_path / "m.onnx"],
                    ["train", "--image", DEMO_SCENE, "--labels", DEMO_REFERENCE, "--backbone", "vit_tiny",
                     "--output", tmp_path / "m.cwsam.pt"]):
        refused = run_without_torch(*command)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "needs the full install with PyTorch" in refused.stderr and "make setup" in refused.stderr
    assert not list(tmp_path.glob("m.*"))


def test_bad_onnx_files_one_line_each(demo_exports, tmp_path):
    scene = write_sar(tmp_path / "sar.tif", 64, 64)
    # An ONNX model that is not a CWSAM export.
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "plain",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    plain = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(graph), str(plain))
    # A truncated export, and one whose bytes were overwritten.
    data = demo_exports["float32"].path.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff" * 4096)
    cases = {
        plain: "not a CWSAM export",
        truncated: "not a readable ONNX file (corrupt or truncated",
        garbage: "not a readable ONNX file (corrupt or truncated",
    }
    for model, expected in cases.items():
        result = run_without_torch("classify", scene, "--model", model, "--output", tmp_path / "out.tif")
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert not (tmp_path / "out.tif").exists()
        info = run_without_torch("info", model)
        assert info.returncode == 2 and expected in info.stderr
    wrong_tile = run_without_torch("classify", scene, "--model", demo_exports["float32"].path, "--output",
                                   tmp_path / "out.tif", "--tile-size", "128")
    assert wrong_tile.returncode == 2 and wrong_tile.stderr.count("\n") == 1
    assert "exported for 256 px tiles" in wrong_tile.stderr and "for 128 px tiles, export" in wrong_tile.stderr
    assert not (tmp_path / "out.tif").exists()
    with pytest.raises(ClassificationError, match="exported for 256 px tiles"):
        OnnxRunner(demo_exports["float32"].path, tile_size=512)
    # A corrupt graph with an intact header: ONNX Runtime refuses it, in one line.
    model = onnx.load(str(demo_exports["float32"].path))
    model.graph.node[3].op_type = "NoSuchOperator"
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(ModelFileError, match="cannot be loaded by ONNX Runtime"):
        OnnxRunner(broken)


def test_export_guards_its_output(tmp_path, capsys):
    model = tmp_path / "model.cwsam.pt"
    model.write_bytes(DEMO_MODEL.read_bytes())
    cases = [
        (["--output", str(model)], "choose another output file name"),  # the model itself (by its name)
        (["--output", str(tmp_path / "model.cwsam.onnx.pt")], "give an output name ending in .onnx"),
        (["--output", str(tmp_path / "missing" / "m.onnx")], "output folder does not exist"),
    ]
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    cases.append((["--output", str(link)], "would overwrite the model file"))
    for options, expected in cases:
        assert cwsam_main(["export", str(model), *options]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    assert model.read_bytes() == DEMO_MODEL.read_bytes()
    with pytest.raises(ExportError, match="multiple of 16"):
        export_onnx(model, tmp_path / "m.onnx", tile_size=100)
    assert not list(tmp_path.glob("*.onnx*")) or list(tmp_path.glob("*.onnx")) == [link]
    assert cwsam_main(["export", str(model), "--output", str(tmp_path / "m.onnx"), "--tile-size", "128"]) == 0
    assert "ONNX export written to" in capsys.readouterr().out
    assert read_onnx_export(tmp_path / "m.onnx")[1]["tile_size"] == 128
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_execution_providers_follow_the_device_setting():
    gpu_build = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers("auto", gpu_build) == gpu_build  # CUDA first, the CPU as ONNX Runtime's fallback
    assert execution_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert execution_providers("cpu", gpu_build) == ["CPUExecutionProvider"]
    assert execution_providers("cuda:1", gpu_build) == [("CUDAExecutionProvider", {"device_id": 1}),
                                                        "CPUExecutionProvider"]
    for device, message in (("cuda", "no CUDA support"), ("mps", "not available for ONNX models"),
                            ("cuda:x", "unknown device")):
        with pytest.raises(ClassificationError, match=message):
            execution_providers(device, ["CPUExecutionProvider"] if device == "cuda" else gpu_build)


@pytest.mark.slow  # about 60 s on 2 cores: a 360 MB checkpoint written, traced and run twice
def test_vit_b_from_sam_checkpoint(tmp_path):
    """vit_b fine-tuned from an official-layout SAM checkpoint: the export holds SAM's weights and stands alone."""
    sam = write_sam_checkpoint(tmp_path / "sam_vit_b_01ec64.pth", "vit_b")
    torch.manual_seed(1)
    model = build_cwsam("vit_b", len(CLASSES), sam_checkpoint=sam, input_size=256)
    with torch.no_grad():  # give the (zero-initialised) adapters and head some weight
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.02)
    model_path = save_model_file(tmp_path / "vit_b.cwsam.pt", model, card_for(256))
    del model
    with pytest.raises(ModelFileError, match="needs the SAM checkpoint"):
        export_onnx(model_path, tmp_path / "no_sam.onnx")
    result = export_onnx(model_path, tmp_path / "vit_b.onnx", sam_checkpoint=sam)
    assert result.export["max_abs_logit_difference"] < 1e-4
    assert result.export["sam_checkpoint"]["name"] == sam.name
    assert result.bytes > 300e6  # SAM's frozen encoder is inside
    hidden = sam.rename(tmp_path / "elsewhere.pth")  # the export stands alone
    scene = write_sar(tmp_path / "sar.tif", 256, 320)
    onnx_result = classify_file(scene, tmp_path / "onnx.tif", result.path, device="cpu", threads=2)
    assert onnx_result.device == "cpu"
    sam = hidden.rename(sam)
    classify_file(scene, tmp_path / "torch.tif", model_path, sam_checkpoint=sam, device="cpu", threads=2)
    equal = (read_classes(tmp_path / "onnx.tif") == read_classes(tmp_path / "torch.tif")).mean()
    print(f"vit_b S=256: ONNX Runtime fp32 agrees with PyTorch on {equal:.4%} of pixels")
    assert equal >= 0.999
