"""The plugin's persistent settings: one place for the ``cwsam/...`` keys of ``QgsSettings``."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsSettings

PREFIX = "cwsam"

# Keys (under "cwsam/"). The TRAIN side may add its own here.
PYTHON_ENV = "python_env"            # folder of the Python environment holding torch & co ("" = default)
SAM_CHECKPOINT = "sam_checkpoint"    # last SAM checkpoint file, shared by Classify and Fine-tune
MODEL_FILE = "classify/model_file"
TILE_SIZE = "classify/tile_size"     # 0 = the model's own tile size
OVERLAP = "classify/overlap"         # fraction in [0, 1)
BATCH_SIZE = "classify/batch_size"
DEVICE = "classify/device"
CONFIDENCE = "classify/confidence"   # also write the confidence layer
POLYGONS = "classify/polygons"       # also write the class map's polygons (GeoPackage)
OUTPUT_FOLDER = "classify/output_folder"

DEFAULTS: dict[str, Any] = {
    PYTHON_ENV: "",
    SAM_CHECKPOINT: "",
    MODEL_FILE: "",
    TILE_SIZE: 0,
    OVERLAP: 0.25,
    BATCH_SIZE: 4,
    DEVICE: "auto",
    CONFIDENCE: False,
    POLYGONS: False,
    OUTPUT_FOLDER: "",
}


def value(key: str, default: Any = None) -> Any:
    """The stored value of ``key``, converted to the type of its default (QSettings returns strings)."""
    if default is None:
        default = DEFAULTS.get(key)
    kind = type(default) if default is not None else str
    raw = QgsSettings().value(f"{PREFIX}/{key}", default)
    if raw is None:
        return default
    try:
        if kind is bool:
            return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
        return kind(raw)
    except (TypeError, ValueError):
        return default


def set_value(key: str, new_value: Any) -> None:
    QgsSettings().setValue(f"{PREFIX}/{key}", new_value)
