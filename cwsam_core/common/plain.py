"""Results as plain JSON and back, for the worker process that runs the engine for the QGIS plugin.

The engine's results are dataclasses of paths, numbers, strings and dictionaries keyed by class value.
``to_plain`` writes them as JSON-ready values; ``from_plain`` reads them back as :class:`Record` objects with
the same attribute names, paths as ``Path`` and integer keys as integers. Nothing is looked up by name when
reading (no class is built from the data), so a record read from a worker can hold no code.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path, PurePath
from typing import Any


class Record:
    """The attributes of an engine result (a dataclass in the worker), read back from JSON."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Record({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and other.__dict__ == self.__dict__


def to_plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses as ``{"__record__": {...}}``, paths as ``{"__path__": str}``,
    dictionaries with keys other than strings as ``{"__items__": [[key, value], ...]}``, tuples and sets as
    lists, NaN and infinities as ``{"__float__": "nan"}``; anything else that JSON cannot hold as its text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__record__": {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, PurePath):
        return {"__path__": str(value)}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {key: to_plain(item) for key, item in value.items()}
        return {"__items__": [[to_plain(key), to_plain(item)] for key, item in value.items()]}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item"):  # a numpy scalar
        return to_plain(value.item())
    return str(value)


def from_plain(value: Any) -> Any:
    """What :func:`to_plain` wrote, read back: records, paths, integer-keyed dictionaries, floats."""
    if isinstance(value, list):
        return [from_plain(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, inner), = value.items()
        if key == "__record__":
            return Record(**{name: from_plain(item) for name, item in inner.items()})
        if key == "__path__":
            return Path(inner)
        if key == "__items__":
            return {_hashable(from_plain(k)): from_plain(v) for k, v in inner}
        if key == "__float__":
            return float(inner)
    return {key: from_plain(item) for key, item in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key
