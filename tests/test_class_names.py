"""Classes matched by name where a reference meets a model: the names a class raster carries (band tags, GDAL
category names, a raster attribute table, a .qml beside it), and ``cwsam evaluate`` on the demo scene with its
reference renumbered with names, without names, and with names the model does not have."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cwsam_core.cli import main
from cwsam_core.common.card import ClassInfo
from cwsam_core.common.classes import match_classes_by_name
from cwsam_core.errors import ClassSpecError
from cwsam_core.raster.class_names import read_class_names
from cwsam_core.raster.output import category_names_aux_xml, qml_text

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
MODEL_CLASSES = [ClassInfo(0, "water", "#1f5fff"), ClassInfo(1, "bare soil", "#c8a064"),
                 ClassInfo(2, "cropland", "#f0e040"), ClassInfo(3, "forest", "#1e8c1e"),
                 ClassInfo(4, "urban", "#e03030")]
# The demo's names under other numbers: alphabetical, as a fine-tune from text classes numbers them.
ALPHABETICAL = {"bare soil": 0, "cropland": 1, "forest": 2, "urban": 3, "water": 4}


def write_reference(path: Path, values: np.ndarray, tags: dict | None = None) -> Path:
    with rasterio.open(DEMO / "reference.tif") as source:
        profile = source.profile
    with rasterio.open(path, "w", **profile) as out:
        out.write(values.astype(np.uint8), 1)
        if tags:
            out.update_tags(1, **tags)
    return path


def renumbered_reference(path: Path, tags: bool = True) -> Path:
    """The demo reference with its classes numbered alphabetically (and named so in its band tags)."""
    with rasterio.open(DEMO / "reference.tif") as source:
        values, names = source.read(1), source.tags(1)
    moved = values.copy()
    for key, name in names.items():
        moved[values == int(key.split("_")[1])] = ALPHABETICAL[name]
    return write_reference(path, moved, {f"class_{v}": n for n, v in ALPHABETICAL.items()} if tags else None)


def test_names_are_read_from_tags_categories_attribute_tables_and_styles(tmp_path):
    values = np.zeros((512, 512), dtype=np.uint8)
    tagged = write_reference(tmp_path / "tagged.tif", values, {"class_3": "forest", "class_0": "water"})
    assert read_class_names(tagged) == ({0: "water", 3: "forest"}, "its band tags")
    categories = write_reference(tmp_path / "categories.tif", values)
    Path(str(categories) + ".aux.xml").write_text(category_names_aux_xml(MODEL_CLASSES[3:]))
    names, where = read_class_names(categories)
    assert names == {3: "forest", 4: "urban"} and "category names" in where
    table = write_reference(tmp_path / "table.tif", values)
    Path(str(table) + ".aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable tableType="thematic">'
        '<FieldDefn index="0"><Name>Value</Name><Type>0</Type><Usage>5</Usage></FieldDefn>'
        '<FieldDefn index="1"><Name>Count</Name><Type>0</Type><Usage>1</Usage></FieldDefn>'
        '<FieldDefn index="2"><Name>Class_Name</Name><Type>2</Type><Usage>2</Usage></FieldDefn>'
        '<Row index="0"><F>7</F><F>10</F><F>water</F></Row><Row index="1"><F>9</F><F>5</F><F>urban</F></Row>'
        '</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>')
    names, where = read_class_names(table)
    assert names == {7: "water", 9: "urban"} and "raster attribute table" in where
    styled = write_reference(tmp_path / "styled.tif", values)
    styled.with_suffix(".qml").write_text(qml_text([ClassInfo(5, "cropland", "#f0e040")]))
    names, where = read_class_names(styled)
    assert names == {5: "cropland"} and "QGIS style" in where
    assert read_class_names(write_reference(tmp_path / "bare.tif", values)) == ({}, "")


def test_matching_renumbers_says_so_and_refuses_other_names():
    same = match_classes_by_name(MODEL_CLASSES, {c.value: c.name for c in MODEL_CLASSES}, "ref.tif")
    assert same.renumber == {c.value: c.value for c in MODEL_CLASSES} and same.note == ""
    moved = match_classes_by_name(MODEL_CLASSES, {v: n.upper() for n, v in ALPHABETICAL.items()}, "ref.tif")
    assert moved.renumber == {0: 1, 1: 2, 2: 3, 3: 4, 4: 0}
    assert moved.note.startswith("ref.tif numbers the classes differently: matched by name (BARE SOIL 0->1")
    unnamed = match_classes_by_name(MODEL_CLASSES, {}, "ref.tif")
    assert unnamed.renumber is None and "names no classes" in unnamed.note and "0 water" in unnamed.note
    with pytest.raises(ClassSpecError) as refused:
        match_classes_by_name(MODEL_CLASSES, {0: "water", 1: "wetland"}, "ref.tif")
    message = str(refused.value)
    assert "(wetland)" in message and "reference 0 water, 1 wetland" in message
    assert "model 0 water, 1 bare soil" in message
    # A named value listed as ignored does not count: an "unlabelled" category is no class of the model.
    unlabelled = match_classes_by_name(MODEL_CLASSES, {0: "water", 255: "unlabelled"}, "r", ignore_values=[255])
    assert unlabelled.renumber == {0: 0}


def evaluate(capsys, labels: Path) -> tuple[int, dict, str]:
    status = main(["evaluate", "--model", str(DEMO / "model.cwsam.pt"), "--image", str(DEMO / "scene.tif"),
                   "--labels", str(labels), "--device", "cpu", "--json"])
    out = capsys.readouterr()
    return status, json.loads(out.out) if status == 0 else {}, out.err


def test_cli_evaluate_matches_a_renumbered_reference_by_name(tmp_path, capsys):
    status, original, err = evaluate(capsys, DEMO / "reference.tif")
    assert status == 0 and err == ""  # the same names and numbers: nothing to say
    status, renumbered, err = evaluate(capsys, renumbered_reference(tmp_path / "alphabetical.tif"))
    assert status == 0 and renumbered["miou"] == pytest.approx(original["miou"]) and original["miou"] > 0.5
    assert err.count("\n") == 1 and "numbers the classes differently: matched by name" in err
    assert "water 4->0" in err and "its band tags" in err
    # Without names the values are the model's: scored by number, and said.
    status, by_number, err = evaluate(capsys, renumbered_reference(tmp_path / "unnamed.tif", tags=False))
    assert status == 0 and by_number["miou"] < original["miou"] - 0.3
    assert "names no classes: its values are taken as the model's (0 water, 1 bare soil" in err
    # Names the model lacks: refused in one line that gives both lists, before anything is classified.
    with rasterio.open(DEMO / "reference.tif") as source:
        values = source.read(1)
    other = write_reference(tmp_path / "other.tif", values, {"class_0": "water", "class_1": "wetland"})
    status, _, err = evaluate(capsys, other)
    assert status == 2 and err.count("\n") == 1
    assert "does not have (wetland)" in err and "reference 0 water, 1 wetland" in err and "model 0 water" in err


def test_train_numbers_and_names_classes_as_a_reference_map(tmp_path):
    from cwsam_core.model.model_file import read_model_card

    common = ["--image", str(DEMO / "scene.tif"), "--backbone", "vit_nano", "--tile-size", "64", "--epochs", "1",
              "--steps-per-epoch", "2", "--batch-size", "2", "--device", "cpu", "--quiet"]
    with rasterio.open(DEMO / "reference.tif") as source:
        reference = {int(key.split("_")[1]): name for key, name in source.tags(1).items()}
    # Polygons with text classes, numbered as the reference map numbers them (not alphabetically).
    status = main(["train", *common, "--polygons", str(DEMO / "labels.gpkg"), "--class-field", "landcover",
                   "--classes", str(DEMO / "reference.tif"), "--output", str(tmp_path / "like_reference.cwsam.pt")])
    assert status == 0
    card = read_model_card(tmp_path / "like_reference.cwsam.pt")
    assert {c.value: c.name for c in card.classes} == reference
    # A label raster that names its classes gives the model those names (not "class 0", "class 1"...).
    status = main(["train", *common, "--labels", str(DEMO / "reference.tif"),
                   "--output", str(tmp_path / "from_labels.cwsam.pt")])
    assert status == 0
    assert {c.value: c.name for c in read_model_card(tmp_path / "from_labels.cwsam.pt").classes} == reference
    # A raster that names nothing cannot give the classes: said in one line.
    bare = write_reference(tmp_path / "bare.tif", np.zeros((512, 512), dtype=np.uint8))
    assert main(["train", *common, "--labels", str(DEMO / "reference.tif"), "--classes", str(bare),
                 "--output", str(tmp_path / "bare.cwsam.pt")]) == 2
    assert not (tmp_path / "bare.cwsam.pt").exists()


def test_a_class_map_given_as_the_image_is_refused(tmp_path, capsys):
    status = main(["train", "--image", str(DEMO / "reference.tif"), "--polygons", str(DEMO / "labels.gpkg"),
                   "--class-field", "landcover", "--backbone", "vit_nano", "--tile-size", "64", "--epochs", "1",
                   "--steps-per-epoch", "2", "--device", "cpu", "--quiet", "--output", str(tmp_path / "m.cwsam.pt")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "reference.tif is a class map (it names the classes water" in err
    assert list(tmp_path.iterdir()) == []


def test_a_warm_start_meets_a_renumbered_label_raster_by_name(tmp_path, capsys):
    from cwsam_core.model.model_file import read_model_card
    from cwsam_core.training.datasets import TrainingSource
    from cwsam_core.training.parent import check_label_classes

    parent = read_model_card(DEMO / "model.cwsam.pt")
    renumbered = renumbered_reference(tmp_path / "alphabetical.tif")
    [checked] = check_label_classes([TrainingSource(DEMO / "scene.tif", labels=renumbered)], parent.classes)
    assert checked.renumber == {v: [c.value for c in parent.classes if c.name == n][0] for n, v in ALPHABETICAL.items()}
    [unnamed] = check_label_classes([TrainingSource(DEMO / "scene.tif", labels=DEMO / "reference.tif")], parent.classes)
    assert unnamed.renumber == {c.value: c.value for c in parent.classes}  # same names, same numbers
    warm = ["train", "--init-model", str(DEMO / "model.cwsam.pt"), "--image", str(DEMO / "scene.tif"), "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "1", "--val-fraction", "0", "--device", "cpu", "--quiet"]
    assert main([*warm, "--labels", str(renumbered), "--output", str(tmp_path / "v2.cwsam.pt")]) == 0
    assert "numbers the classes differently: matched by name" in capsys.readouterr().err
    with rasterio.open(DEMO / "reference.tif") as source:
        values = source.read(1)
    other = write_reference(tmp_path / "other.tif", values, {"class_0": "water", "class_1": "wetland"})
    assert main([*warm, "--labels", str(other), "--output", str(tmp_path / "v3.cwsam.pt")]) == 2
    assert "does not have (wetland)" in capsys.readouterr().err and not (tmp_path / "v3.cwsam.pt").exists()
