"""Class lists given by users: ``VALUE:NAME[:#RRGGBB],...`` inline, or a CSV / JSON file."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import ClassSpecError
from .card import ClassInfo, default_color

_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def _make(value: str, name: str, colour: str, index: int, where: str) -> ClassInfo:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ClassSpecError(f"{where}: class value {value!r} is not an integer") from None
    name = str(name).strip()
    if not name:
        raise ClassSpecError(f"{where}: class {number} has no name")
    colour = (colour or "").strip() or default_color(index)
    if not _COLOUR.match(colour):
        raise ClassSpecError(f"{where}: colour {colour!r} of class {name!r} is not of the form #RRGGBB")
    if not 0 <= number <= 254:
        raise ClassSpecError(f"{where}: class value {number} must lie in 0..254 (255 is the output's nodata)")
    return ClassInfo(number, name, colour.lower())


def parse_classes(spec: str) -> List[ClassInfo]:
    """Classes from an inline ``VALUE:NAME[:#RRGGBB],...`` string or a path to a .csv / .json file.

    CSV: columns value,name[,color]. JSON: a list of {"value", "name"[, "color"]} objects. Colours
    default to a fixed palette. Values must be unique integers in 0..254.
    """
    path = Path(spec)
    if path.suffix.lower() in (".csv", ".json") and path.is_file():
        if path.suffix.lower() == ".json":
            items = json.loads(path.read_text())
            if not isinstance(items, list):
                raise ClassSpecError(f"{path}: expected a JSON list of objects with value, name and color")
            rows = [(i.get("value"), i.get("name", ""), i.get("color", "")) for i in items]
        else:
            with open(path, newline="") as handle:
                rows = [(r.get("value"), r.get("name", ""), r.get("color", "")) for r in csv.DictReader(handle)]
        where = str(path)
    else:
        if path.suffix.lower() in (".csv", ".json"):
            raise ClassSpecError(f"class file not found: {path}")
        rows = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            fields = part.split(":")
            if len(fields) not in (2, 3):
                raise ClassSpecError(f"{part!r}: expected VALUE:NAME or VALUE:NAME:#RRGGBB, e.g. \"1:water:#1f5fff\"")
            rows.append((fields[0], fields[1], fields[2] if len(fields) == 3 else ""))
        where = "--classes"
    classes = [_make(v, n, c, i, where) for i, (v, n, c) in enumerate(rows)]
    if not classes:
        raise ClassSpecError(f"{where}: no classes given")
    values = [c.value for c in classes]
    if len(set(values)) != len(values):
        raise ClassSpecError(f"{where}: class values must be unique, got {values}")
    names = [c.name.casefold() for c in classes]
    twice = sorted({c.name for c in classes if names.count(c.name.casefold()) > 1})
    if twice:
        raise ClassSpecError(f"{where}: each class needs a name of its own; {', '.join(map(repr, twice))} is given "
                             "to more than one value (merge them into one class, or rename one)")
    return classes


@dataclass
class ClassMatch:
    """How a reference's class values meet a model's: ``renumber`` maps reference values to model values (None:
    the reference names no classes, so values are taken as the model's); ``note``: the line to say, or ""."""

    renumber: Optional[Dict[int, int]]
    note: str = ""


def match_classes_by_name(model: Sequence[ClassInfo], reference: Dict[int, str], what: str,
                          ignore_values: Sequence[int] = (), sides: Tuple[str, str] = ("reference", "model"),
                          ignorable: bool = True) -> ClassMatch:
    """Match a reference's ``value -> name`` with the model's classes by name (case and spaces aside).

    The same names under other numbers are renumbered (and said); a reference name the model lacks is
    refused with both lists (``ClassSpecError``); a reference without names is scored by number (and said).
    The reference may name fewer classes than the model. ``what`` names the reference in the lines, ``sides``
    the two lists in the refusal (("AFTER", "BEFORE") for two maps); ``ignorable``: whether the caller takes
    ignore values, which the refusal then suggests.
    """
    side, other = sides
    model_values = ", ".join(f"{c.value} {c.name}" for c in model)
    named = {value: name for value, name in reference.items() if value not in set(ignore_values)}
    if not named:
        return ClassMatch(None, f"{what} names no classes: its values are taken as the {other}'s ({model_values})")
    by_name = {_key(c.name): c for c in model}
    unknown = {value: name for value, name in named.items() if _key(name) not in by_name}
    if unknown:
        given = ", ".join(f"{value} {name}" for value, name in sorted(named.items()))
        raise ClassSpecError(f"{what} names classes the {other} does not have ({', '.join(sorted(unknown.values()))}): "
                             f"{side} {given}; {other} {model_values}. Rename them to the {other}'s classes"
                             + (", or list their values as ignore values" if ignorable else ""))
    twice = sorted({name for name in named.values() if [_key(n) for n in named.values()].count(_key(name)) > 1})
    if twice:
        raise ClassSpecError(f"{what} gives the name {', '.join(map(repr, twice))} to more than one value: "
                             "each class needs a value of its own")
    renumber = {value: by_name[_key(name)].value for value, name in named.items()}
    moved = [f"{name} {value}->{renumber[value]}" for value, name in sorted(named.items()) if renumber[value] != value]
    note = f"{what} numbers the classes differently: matched by name ({', '.join(moved)})" if moved else ""
    return ClassMatch(renumber, note)


def _key(name: str) -> str:
    return " ".join(str(name).split()).casefold()
