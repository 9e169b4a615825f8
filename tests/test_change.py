"""``cwsam change`` on real GeoTIFFs: a known block changed on a shifted, cropped second map gives its exact area;
renumbered classes with names match; names that do not correspond, maps that do not overlap and an output that
is an input are refused with nothing written; nodata in either map is nodata in the result."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from cwsam_core.cli import main

NAMES = {0: "water", 1: "bare soil", 2: "cropland", 3: "forest", 4: "urban"}
ORIGIN = (500_000.0, 4_500_000.0)  # UTM 33N, 10 m pixels: 100 m² a pixel
FOREST, URBAN, WATER = 3, 4, 0


def write_map(path: Path, values: np.ndarray, col: int = 0, row: int = 0, names: dict | None = NAMES,
              origin: tuple = ORIGIN) -> Path:
    """A class map whose top-left pixel is (``col``, ``row``) of the BEFORE grid, named by ``names``."""
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1,
                       dtype="uint8", nodata=255, crs="EPSG:32633",
                       transform=from_origin(origin[0] + 10 * col, origin[1] - 10 * row, 10, 10)) as out:
        out.write(values.astype(np.uint8), 1)
        if names:
            out.update_tags(1, **{f"class_{v}": n for v, n in names.items()})
    return path


@pytest.fixture
def maps(tmp_path):
    before = np.full((200, 200), FOREST, dtype=np.uint8)
    before[150:, :] = WATER
    after = before.copy()
    after[50:80, 60:100] = URBAN  # 30 x 40 = 1,200 pixels of forest -> urban: 12 ha
    after[160:170, 30:40] = 255  # nodata in AFTER only (inside the part kept below): 100 pixels
    before[100:105, 100:110] = 255  # nodata in BEFORE only: 50 pixels
    # AFTER cropped to columns 20.. and rows 10.. of BEFORE's grid: its own origin, 180 x 190 pixels.
    return (write_map(tmp_path / "before.tif", before),
            write_map(tmp_path / "after.tif", after[10:, 20:], col=20, row=10), tmp_path)


def change(capsys, *args) -> tuple:
    status = main(["change", *map(str, args), "--quiet"])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_a_known_block_changed_on_a_shifted_cropped_map_gives_its_exact_area(maps, capsys):
    before, after, folder = maps
    output = folder / "out" / "change.tif"
    output.parent.mkdir()
    status, out, err = change(capsys, before, after, "--output", output, "--json")
    assert status == 0, err
    summary = json.loads(out)
    changed = [t for t in summary["transitions"] if t["from"] != t["to"]]
    assert changed == [{"value": 1, "from": "forest", "to": "urban", "pixels": 1200, "hectares": pytest.approx(12.0)}]
    overlap = 180 * 190
    nodata = 50 + 100  # BEFORE's hole and AFTER's, both inside the overlap
    assert summary["unchanged"]["pixels"] == overlap - 1200 - 50 - 100
    with rasterio.open(output) as result:
        values = result.read(1)
        assert values.shape == (190, 180) and result.transform.c == ORIGIN[0] + 200  # on the overlap only
        assert int((values == 1).sum()) == 1200 and int((values == 255).sum()) == nodata
        assert int((values == 0).sum()) == summary["unchanged"]["pixels"]
    categories = (output.with_name(output.name + ".aux.xml")).read_text()
    assert "<Category>no change</Category>" in categories and "forest \u2192 urban" in categories
    assert "forest \u2192 urban" in output.with_suffix(".qml").read_text()
    with open(folder / "out" / "change_transitions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0] == {"value": "1", "from": "forest", "to": "urban", "pixels": "1200", "hectares": "12.0000"}
    assert json.loads(output.with_suffix(".run.json").read_text())["command"] == "change"
    # The table on the terminal says the same; a second run replaces what the first wrote.
    status, out, err = change(capsys, before, after, "--output", output)
    assert status == 0 and "forest" in out and "urban" in out and "12.00" in out


def test_renumbered_classes_with_names_match_and_are_said(maps, capsys):
    before, after, folder = maps
    with rasterio.open(after) as source:
        values, transform = source.read(1), source.transform
    alphabetical = {name: index for index, name in enumerate(sorted(NAMES.values()))}
    moved = values.copy()
    for value, name in NAMES.items():
        moved[values == value] = alphabetical[name]
    renumbered = folder / "after_alphabetical.tif"
    write_map(renumbered, moved, names={v: n for n, v in alphabetical.items()},
              origin=(transform.c, transform.f))
    status, out, err = change(capsys, before, renumbered, "--output", folder / "c.tif", "--json")
    assert status == 0, err
    summary = json.loads(out)
    assert [(t["from"], t["to"], t["pixels"]) for t in summary["transitions"]] == [("forest", "urban", 1200)]
    assert any("matched by name" in note for note in summary["notes"]) and "matched by name" in err


def test_names_that_do_not_correspond_are_refused_with_both_lists(maps, capsys):
    before, after, folder = maps
    with rasterio.open(after) as source:
        values, transform = source.read(1), source.transform
    other = write_map(folder / "other.tif", values, names={0: "water", 3: "woodland", 4: "urban"},
                      origin=(transform.c, transform.f))
    status, out, err = change(capsys, before, other, "--output", folder / "c.tif")
    assert status == 2 and err.count("\n") == 1
    assert "(woodland)" in err and "AFTER 0 water, 3 woodland, 4 urban" in err and "BEFORE 0 water" in err
    assert not list(folder.glob("c*")) and not list(folder.glob(".c*"))


def test_maps_that_do_not_overlap_or_an_output_that_is_an_input_are_refused(maps, capsys):
    before, after, folder = maps
    far = write_map(folder / "far.tif", np.full((50, 50), FOREST), origin=(700_000.0, 4_500_000.0))
    status, _, err = change(capsys, before, far, "--output", folder / "c.tif")
    assert status == 2 and "do not overlap: nothing was written" in err
    status, _, err = change(capsys, before, after, "--output", after)
    assert status == 2 and "inputs are never overwritten" in err
    scene = folder / "scene.tif"  # a SAR scene (float, two bands) is no class map
    with rasterio.open(scene, "w", driver="GTiff", width=20, height=20, count=2, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(*ORIGIN, 10, 10)) as out:
        out.write(np.zeros((2, 20, 20), dtype=np.float32))
    status, _, err = change(capsys, scene, after, "--output", folder / "c.tif")
    assert status == 2 and "is not a class map (2 bands)" in err
    assert not list(folder.glob("c*")) and not list(folder.glob(".c*"))


def test_maps_without_names_are_compared_by_value_and_said(maps, capsys):
    before, after, folder = maps
    with rasterio.open(after) as source:
        values, transform = source.read(1), source.transform
    unnamed = write_map(folder / "unnamed.tif", values, names=None, origin=(transform.c, transform.f))
    status, out, err = change(capsys, before, unnamed, "--output", folder / "c.tif", "--json")
    assert status == 0, err
    summary = json.loads(out)
    assert [(t["from"], t["to"], t["pixels"]) for t in summary["transitions"]] == [("forest", "urban", 1200)]
    assert "unnamed.tif name no classes: the maps are compared by class value" in err


DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


def test_the_same_scene_twice_with_a_model_gives_no_change(tmp_path, capsys):
    status, out, err = change(capsys, DEMO / "scene.tif", DEMO / "scene.tif", "--model", DEMO / "model.cwsam.pt",
                              "--device", "cpu", "--output", tmp_path / "c.tif", "--json")
    assert status == 0, err
    summary = json.loads(out)
    assert summary["transitions"] == [] and summary["unchanged"]["pixels"] == 512 * 512
    record = json.loads((tmp_path / "c.run.json").read_text())
    assert record["before"] == str((DEMO / "scene.tif").resolve()) and record["model"].endswith("model.cwsam.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.qml", "c.run.json", "c.tif", "c.tif.aux.xml",
                                                          "c_transitions.csv"]  # the two dates' maps were temporary
    # A SAR scene without --model is refused, and says what to do.
    status, _, err = change(capsys, DEMO / "scene.tif", DEMO / "reference.tif", "--output", tmp_path / "d.tif")
    assert status == 2 and "is not a class map (2 bands)" in err and "--model" in err
