"""The Setup tab's "Check again" in the background: starting an engine worker imports torch (seconds), which
must not freeze QGIS."""

from __future__ import annotations

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .. import dependencies


class CheckTask(QgsTask):
    """Runs ``dependencies.check``; ``report_ready(DependencyReport)`` in the main thread when done."""

    report_ready = pyqtSignal(object)

    def __init__(self, device: str) -> None:
        super().__init__("CWSAM: check the engine")
        self.device = device
        self.report = None

    def run(self) -> bool:  # worker thread
        try:
            self.report = dependencies.check(device=self.device)
        except Exception as exc:  # noqa: BLE001 - a check must end in a report, never an exception in QGIS
            self.report = dependencies.DependencyReport(dependencies.configured_environment(),
                                                        {"(check)": f"{type(exc).__name__}: {exc}"})
        return True

    def finished(self, result: bool) -> None:  # main thread
        if self.report is None:  # cancelled before it ran
            self.report = dependencies.DependencyReport(dependencies.configured_environment(),
                                                        {"(check)": "the check was cancelled"})
        self.report_ready.emit(self.report)
