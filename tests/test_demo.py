"""`make demo`: the bundled scene classified by the bundled model; what it prints is what it wrote."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from matplotlib.image import imread

REPO = Path(__file__).resolve().parents[1]
RESOURCES = REPO / "resources" / "demo"
BUNDLED = ("model.cwsam.pt", "scene.tif", "reference.tif")


def load_demo():
    spec = importlib.util.spec_from_file_location("cwsam_demo", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo():
    return load_demo()


def printed_number(text: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}\s+([0-9.]+)", text)
    assert match, f"{label!r} not printed"
    return float(match.group(1))


@pytest.mark.skipif(not all((RESOURCES / name).is_file() for name in BUNDLED),
                    reason="resources/demo (the bundled demo model and scene) is absent: `make demo-model` makes it")
def test_demo_writes_what_it_names_and_prints_the_accuracy_of_what_it_wrote(demo, tmp_path, capsys, qgis_app):
    from qgis.core import QgsRasterLayer

    out = tmp_path / "demo"
    assert demo.main(["--output-dir", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out

    # Every file it names exists, and those are the promised outputs.
    named = [Path(p) for p in re.findall(r"^  (/\S+)  \(", text, flags=re.M)]
    assert sorted(p.name for p in named) == sorted(
        ["classes.tif", "classes.qml", "confidence.tif", "classes.run.json", "quicklook.png", "accuracy.json"])
    assert all(p.is_file() and p.parent == out.resolve() for p in named)

    # Accuracy: recomputed here from the written class raster and the bundled reference.
    with rasterio.open(out / "classes.tif") as src:
        predicted = src.read(1)
    with rasterio.open(RESOURCES / "reference.tif") as src:
        reference = src.read(1)
    card_values = [c["value"] for c in json.loads((out / "accuracy.json").read_text())["classes"]]
    index = {v: i for i, v in enumerate(card_values)}
    keep = np.isin(reference, card_values) & np.isin(predicted, card_values)
    n = len(card_values)
    ref_index = np.vectorize(index.get)(reference[keep])
    pred_index = np.vectorize(index.get)(predicted[keep])
    confusion = np.bincount(ref_index * n + pred_index, minlength=n * n).reshape(n, n)
    overall = np.trace(confusion) / confusion.sum()
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    iou = np.diag(confusion)[union > 0] / union[union > 0]
    assert keep.sum() == reference.size  # every pixel has a class and a label
    assert printed_number(text, "overall accuracy (OA)") == pytest.approx(overall, abs=5e-5)
    assert printed_number(text, "mean IoU (mIoU)") == pytest.approx(iou.mean(), abs=5e-5)
    saved = json.loads((out / "accuracy.json").read_text())
    assert saved["confusion"] == confusion.tolist()
    assert saved["overall_accuracy"] == pytest.approx(overall, rel=1e-12)
    assert overall > 0.5, "the bundled model should do far better than chance on the bundled scene"

    # Area table: the pixel counts printed are those of the class raster.
    names = {c["value"]: c["name"] for c in saved["classes"]}
    for value, name in names.items():
        match = re.search(rf"^  {re.escape(name)}\s+([0-9,]+)\s", text, flags=re.M)
        assert match and int(match.group(1).replace(",", "")) == int((predicted == value).sum()), name

    record = json.loads((out / "classes.run.json").read_text())
    assert record["outputs"]["confidence"] == str(out / "confidence.tif")
    with rasterio.open(out / "confidence.tif") as src:
        confidence = src.read(1)
    assert confidence.shape == predicted.shape and confidence.max() <= 100 and confidence.min() >= 100 // n
    png = imread(out / "quicklook.png")
    assert png.shape[0] >= 512 and png.shape[1] > 3 * 512

    # The QGIS instructions hold: QGIS finds classes.qml beside the raster and shows the class names.
    assert "Layer > Add Layer > Add Raster Layer" in text
    layer = QgsRasterLayer(str(out / "classes.tif"), "classes", "gdal")
    assert layer.isValid()
    message, loaded = layer.loadDefaultStyle()
    assert loaded, message
    assert layer.renderer().type() == "paletted"
    assert [c.label for c in layer.renderer().classes()] == [names[v] for v in card_values]


def test_missing_bundle_is_one_clear_error_and_writes_nothing(demo, tmp_path, capsys):
    out = tmp_path / "out"
    assert demo.main(["--resources", str(tmp_path / "empty"), "--output-dir", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "bundled demo file(s) missing" in lines[0] and "model.cwsam.pt" in lines[0]
    assert "make demo-model" in lines[0]
    assert not out.exists()
