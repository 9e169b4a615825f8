"""User class lists: inline, CSV and JSON, with clear errors."""

from __future__ import annotations

import json

import pytest

from cwsam_core.common.classes import parse_classes
from cwsam_core.errors import ClassSpecError


def test_inline_with_and_without_colours():
    classes = parse_classes("0:not water:#8c8c8c,1:water:#1F5FFF, 3:urban")
    assert [(c.value, c.name, c.color) for c in classes[:2]] == [(0, "not water", "#8c8c8c"), (1, "water", "#1f5fff")]
    assert classes[2].value == 3 and classes[2].color.startswith("#") and len(classes[2].color) == 7


def test_csv_and_json_files(tmp_path):
    csv_file = tmp_path / "classes.csv"
    csv_file.write_text("value,name,color\n0,water,#0000ff\n2,forest,\n")
    assert [(c.value, c.name) for c in parse_classes(str(csv_file))] == [(0, "water"), (2, "forest")]
    json_file = tmp_path / "classes.json"
    json_file.write_text(json.dumps([{"value": 5, "name": "urban", "color": "#ff0000"}]))
    assert parse_classes(str(json_file))[0].color == "#ff0000"


@pytest.mark.parametrize("spec,message", [
    ("water", "expected VALUE:NAME"),
    ("x:water", "not an integer"),
    ("1:water,1:land", "unique"),
    ("1:water:blue", "#RRGGBB"),
    ("255:nodata", "0..254"),
    ("1: ", "no name"),
    ("missing.csv", "class file not found"),
])
def test_errors(spec, message):
    with pytest.raises(ClassSpecError, match=message):
        parse_classes(spec)
