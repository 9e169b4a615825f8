"""User messages: a short line in the message bar, the details in the log panel (tab "CWSAM").

The message bar holds at most one CWSAM item: a new message replaces the one before it, so what the
bar says is always about the latest thing that happened. Engine messages name the command line's
options; ``for_the_dock`` rewrites them with the names of the dock's (and Processing's) fields.
"""

from __future__ import annotations

import re
from typing import Optional

from qgis.core import Qgis, QgsMessageLog

LOG_TAG = "CWSAM"
TITLE = "CWSAM"

# Command-line options -> the field that sets the same thing in the dock and in Processing.
FIELDS = {
    "bands": "Bands",
    "band-names": "Bands",
    "input-scale": "Input scale",
    "model-scale": "Model scale",
    "device": "Device",
    "tile-size": "Tile size",
    "time-budget": "Training time",
    "epochs": "Epochs",
    "steps-per-epoch": "Steps per epoch",
    "batch-size": "Batch size",
    "lr": "Learning rate",
    "val-fraction": "Validation fraction",
    "sam-checkpoint": "SAM checkpoint",
    "model": "Model file",
    "output": "output file",
    "confidence": "confidence layer",
    "overlap": "Overlap",
    "classes": "class table",
}
SCALE_WORDS = {"db": "dB", "linear": "linear", "amplitude": "amplitude", "auto": "auto"}


def _option(match: "re.Match") -> str:
    field = FIELDS.get(match.group(1))
    if field is None:
        return match.group(0)
    value = match.group(2)
    if not value:
        return field
    if match.group(1).endswith("scale"):
        value = SCALE_WORDS.get(value, value)
    return f"{field} {value}" if match.group(1) == "bands" else f"{field}: {value}"


def for_the_dock(message: str) -> str:
    """An engine message with the command line's options replaced by the dock's field names.

    "with --bands" -> "in Bands"; "e.g. --input-scale db" -> "e.g. Input scale: dB"; "use --device auto
    or cpu" -> "choose Device: auto or cpu"; "--resume: " (only the command line resumes) is dropped.
    """
    message = message.replace("--resume: ", "")
    message = re.sub(r"\buse --device (\w+)", r"choose --device \1", message)
    message = message.replace("with --bands", "in Bands").replace("with the bands option", "in Bands")
    return re.sub(r"--([a-z][a-z-]*)(?:[ =]((?:\d+,)*\d+|db|linear|amplitude|auto|cpu|cuda|mps)\b)?", _option,
                  message)


def breakable(text: str) -> str:
    """``text`` with a zero-width space after each path separator, so that a word-wrapped label can break a
    long path instead of widening the dock."""
    return text.replace("/", "/\u200b").replace("\\", "\\\u200b")


def log(message: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)


def cwsam_items(bar) -> list:
    """The message bar's CWSAM items (at most one, when every message goes through this module)."""
    return [item for item in bar.items() if item.title() == TITLE]


def clear(iface) -> None:
    """Remove CWSAM's item from the message bar (a newer message replaces it)."""
    bar = iface.messageBar() if iface is not None else None
    if bar is None:
        return
    for item in cwsam_items(bar):
        bar.popWidget(item)


def push_item(iface, item, level: Qgis.MessageLevel, duration: int = 0):
    """Show a prepared ``QgsMessageBarItem`` (e.g. with a button) in place of the previous CWSAM item."""
    clear(iface)
    item.setLevel(level)
    if duration:
        item.setDuration(duration)
    iface.messageBar().pushItem(item)
    return item


def notify(iface, message: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info, details: Optional[str] = None,
           duration: int = 0) -> None:
    """Show ``message`` in the message bar (when there is one), replacing CWSAM's previous message, and log
    it with ``details``.

    ``duration`` 0 keeps warnings and errors until closed; information disappears after 8 s.
    """
    log(message if not details else f"{message}\n{details}", level)
    bar = iface.messageBar() if iface is not None else None
    if bar is None:
        return
    if not duration and level in (Qgis.MessageLevel.Info, Qgis.MessageLevel.Success):
        duration = 8
    push_item(iface, bar.createMessage(TITLE, message), level, duration)


def info(iface, message: str, details: Optional[str] = None) -> None:
    notify(iface, message, Qgis.MessageLevel.Info, details)


def success(iface, message: str, details: Optional[str] = None) -> None:
    notify(iface, message, Qgis.MessageLevel.Success, details)


def warning(iface, message: str, details: Optional[str] = None) -> None:
    notify(iface, message, Qgis.MessageLevel.Warning, details)


def error(iface, message: str, details: Optional[str] = None) -> None:
    notify(iface, message, Qgis.MessageLevel.Critical, details)


def engine_errors() -> tuple:
    """The exceptions whose message is meant for the user: every error of the engine (one base class,
    ``cwsam_core.errors.CwsamError``) and the plugin's own layer errors. Imported late: the engine lives in
    the Python environment the Setup tab points to."""
    from cwsam_core.errors import CwsamError

    from .layers import LayerError

    return (CwsamError, LayerError)

