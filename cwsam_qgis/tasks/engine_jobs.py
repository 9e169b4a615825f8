"""The one way the plugin's tasks and algorithms run the engine: a job on a worker process of the configured
engine environment (``worker_client``), with the failure worded for the dock."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

from .. import dependencies
from ..messages import for_the_dock
from ..worker_client import CANCEL_GRACE_S, WorkerError, run_job

_IMPORT_ERRORS = ("ModuleNotFoundError", "ImportError")
TRAINING_CANCEL_GRACE_S = 15.0


def engine_job(op: str, args: Dict[str, Any], progress: Optional[Callable[..., None]] = None,
               log: Optional[Callable[[int, str], None]] = None, should_cancel: Optional[Callable[[], bool]] = None,
               outputs: Iterable[Optional[Path]] = ()) -> Any:
    """Run ``op`` on the engine; ``WorkerError`` (see :func:`job_error` for its message) when it gives no result.

    Training stops cleanly at its next step and keeps the best model so far: it is given longer to do so
    (one step of a large backbone on a CPU takes seconds) before its worker is stopped."""
    try:
        engine = dependencies.engine()
    except WorkerError as exc:
        raise WorkerError(f"CWSAM's Python dependencies cannot be imported ({exc})", kind="NoEngine") from None
    grace = TRAINING_CANCEL_GRACE_S if op in ("train", "retrain") else CANCEL_GRACE_S
    return run_job(engine, op, args, progress, log, should_cancel, outputs, grace)


def job_error(exc: WorkerError, what: str) -> str:
    """The line to show for a failed job: the engine's own message for the user, a missing module as such,
    anything else as "<what> failed: ..."."""
    if exc.kind in _IMPORT_ERRORS:
        return f"CWSAM's Python dependencies cannot be imported ({exc}): see the Setup tab"
    if exc.expected or exc.cancelled:
        return for_the_dock(str(exc))
    return f"{what} failed: {exc}"


LOG_TAG = "CWSAM"


def log_to_panel(level: int, message: str) -> None:
    """The engine's log lines in QGIS's "CWSAM" log panel (QgsMessageLog is thread-safe: fine from a task)."""
    from qgis.core import Qgis, QgsMessageLog

    severity = Qgis.MessageLevel.Warning if level >= logging.WARNING else Qgis.MessageLevel.Info
    QgsMessageLog.logMessage(message, LOG_TAG, severity)


def log_and_note(level: int, message: str, note: Callable[[str], None]) -> None:
    """A task's sink for the engine's lines, worded for the dock: each logged once in the log panel, and the
    warnings also passed to ``note`` (the tab's notes; the information stays in the log)."""
    message = for_the_dock(message)
    log_to_panel(level, message)
    if level >= logging.WARNING:
        note(message)
