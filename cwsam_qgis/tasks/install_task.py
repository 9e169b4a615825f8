"""The one-click engine install in the background: a QgsTask around ``installer.install``."""

from __future__ import annotations

from typing import Optional

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..installer import InstallError, InstallPlan, install


class InstallTask(QgsTask):
    """Installs one ``InstallPlan``.

    Signals:
      fraction_done(fraction, line): how far pip is, in [0, 1], and its last line.
      outcome_ready(error): in the main thread, once: None when installed, else the message.
    """

    fraction_done = pyqtSignal(float, str)
    outcome_ready = pyqtSignal(object)

    def __init__(self, plan: InstallPlan) -> None:
        kind = "light" if plan.light else "full"
        super().__init__(f"CWSAM: install the {kind} engine in {plan.target}", QgsTask.Flag.CanCancel)
        self.plan = plan
        self.error: Optional[str] = None

    def _progress(self, fraction: float, line: str) -> None:  # worker thread
        self.setProgress(100.0 * fraction)
        self.fraction_done.emit(fraction, line)

    def run(self) -> bool:  # worker thread
        try:
            install(self.plan, self._progress, self.isCanceled)
        except InstallError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - QGIS must never see an exception from a task
            self.error = f"install failed: {type(exc).__name__}: {exc}; the log: {self.plan.log}"
        # A cancel is not a failure for QGIS's task manager: the user asked for it.
        return self.error is None or self.isCanceled()

    def finished(self, result: bool) -> None:  # main thread
        if self.isCanceled() and self.error is None:
            self.error = "install cancelled: nothing was kept"
        self.outcome_ready.emit(self.error)
