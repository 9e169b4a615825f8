"""The dock's "Setup" tab: where torch & co are looked for, what is missing and how to fix it (the light install,
classification with ONNX models, offered first when torch is missing)."""

from __future__ import annotations

from typing import Optional

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtGui import QFont
from qgis.PyQt.QtWidgets import QFormLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from .. import dependencies, settings
from ..tasks.engine_jobs import engine_job
from ..worker_client import WorkerError


def device_line(setting: str) -> str:
    """Which device a run with this device setting uses and why, as the engine's process sees it: "Runs on GPU
    (cuda:0): NVIDIA ..., 10.2 GiB free of 16.0 GiB", or "Runs on CPU: this PyTorch ... is a CPU-only build ...".
    Never raises."""
    try:
        answer = engine_job("check", {"modules": ["torch"], "device": setting})
    except WorkerError as exc:
        return f"Device: unknown, the engine does not run ({exc}); see the Setup tab"
    if answer["missing"]:
        return f"Device: unknown, the engine cannot import torch ({answer['missing']['torch']}); see the Setup tab"
    return answer["device"]


class SetupPanel(QWidget):
    """The Python environment setting, a "Check again" button and the dependency report."""

    def __init__(self, report: Optional[dependencies.DependencyReport], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.env_widget = QgsFileWidget(self)
        self.env_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.env_widget.setFilePath(settings.value(settings.PYTHON_ENV))
        self.env_widget.lineEdit().setPlaceholderText(
            str(dependencies.configured_environment() or "[default: the project's .venv]"))
        self.env_widget.setToolTip("A virtual environment with onnxruntime, rasterio, pyogrio and shapely (the light "
                                   "install: classification with ONNX models) and torch and segment-anything (the "
                                   "full install: also training and .cwsam.pt models), built for Python "
                                   f"{dependencies.python_tag()} (the one QGIS runs)")
        self.check_button = QPushButton("Check again", self)
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.device_label = QLabel(self)
        self.device_label.setWordWrap(True)
        self.device_label.setToolTip("For the Classify tab's Device setting")
        self.onnx_label = QLabel(self)
        self.onnx_label.setWordWrap(True)
        self.onnx_label.setToolTip("For models exported to ONNX (.onnx)")
        self.details = QPlainTextEdit(self)
        self.details.setReadOnly(True)
        self.details.setFont(QFont("monospace"))
        form = QFormLayout()
        form.addRow("Python environment", self.env_widget)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.check_button)
        layout.addWidget(self.status_label)
        layout.addWidget(self.device_label)
        layout.addWidget(self.onnx_label)
        layout.addWidget(self.details, 1)
        self.check_button.clicked.connect(self.recheck)
        if report is not None:
            self.show_report(report)

    def recheck(self) -> dependencies.DependencyReport:
        """Save the environment setting, add it to the import path and import everything again.

        Modules that failed once stay failed in this QGIS session (Python caches them): restart QGIS
        after installing.
        """
        settings.set_value(settings.PYTHON_ENV, self.env_widget.filePath().strip())
        report = dependencies.check(device=settings.value(settings.DEVICE))
        self.show_report(report)
        return report

    def show_report(self, report: dependencies.DependencyReport) -> None:
        colour = "#b36b00" if report.light else "#1e8449" if report.ok else "#c0392b"
        self.status_label.setText(f"<span style='color:{colour}'>{report.summary()}</span>")
        self.details.setPlainText(report.details())
        self.device_label.setText(report.device_line if report.ok and not report.light else "")
        self.onnx_label.setText(report.onnx_line if report.ok else "")
