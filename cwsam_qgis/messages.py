"""User messages: a short line in the message bar, the details in the log panel (tab "CWSAM")."""

from __future__ import annotations

from typing import Optional

from qgis.core import Qgis, QgsMessageLog

LOG_TAG = "CWSAM"
TITLE = "CWSAM"


def log(message: str, level: Qgis.MessageLevel = Qgis.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)


def notify(iface, message: str, level: Qgis.MessageLevel = Qgis.Info, details: Optional[str] = None,
           duration: int = 0) -> None:
    """Show ``message`` in the message bar (when there is one) and log it with ``details``.

    ``duration`` 0 keeps warnings and errors until closed; information disappears after 8 s.
    """
    log(message if not details else f"{message}\n{details}", level)
    bar = iface.messageBar() if iface is not None else None
    if bar is None:
        return
    if not duration and level in (Qgis.Info, Qgis.Success):
        duration = 8
    bar.pushMessage(TITLE, message, level=level, duration=duration)


def info(iface, message: str, details: Optional[str] = None) -> None:
    notify(iface, message, Qgis.Info, details)


def success(iface, message: str, details: Optional[str] = None) -> None:
    notify(iface, message, Qgis.Success, details)


def warning(iface, message: str, details: Optional[str] = None) -> None:
    notify(iface, message, Qgis.Warning, details)


def error(iface, message: str, details: Optional[str] = None) -> None:
    notify(iface, message, Qgis.Critical, details)
