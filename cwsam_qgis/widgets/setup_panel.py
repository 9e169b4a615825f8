"""The dock's "Setup" tab: where torch & co are looked for, what is missing and how to fix it (the light install,
classification with ONNX models, offered first when torch is missing)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

from qgis.core import QgsApplication
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtGui import QFont
from qgis.PyQt.QtWidgets import (
    QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QVBoxLayout, QWidget,
)

from .. import dependencies, settings
from ..installer import InstallError, plan_for
from ..tasks.check_task import CheckTask
from ..tasks.engine_jobs import engine_job
from ..tasks.install_task import InstallTask
from ..worker_client import WorkerError
from .scrolling import wrapping_form

_DEVICE_LINES: Dict[Tuple[str, str], str] = {}  # (environment, setting) -> line, until the next check


def device_line(setting: str) -> str:
    """Which device a run with this device setting uses and why, as the engine's process sees it: "Runs on GPU
    (cuda:0): NVIDIA ..., 10.2 GiB free of 16.0 GiB", or "Runs on CPU: this PyTorch ... is a CPU-only build ...".
    Asked once per environment and setting until "Check again" (a new worker imports torch: seconds).
    Never raises."""
    key = (str(dependencies.configured_environment()), setting)
    if key not in _DEVICE_LINES:
        _DEVICE_LINES[key] = _ask_device_line(setting)
    return _DEVICE_LINES[key]


def _ask_device_line(setting: str) -> str:
    try:
        answer = engine_job("check", {"modules": ["torch"], "device": setting})
    except WorkerError as exc:
        return f"Device: unknown, the engine does not run ({exc}); see the Setup tab"
    if answer["missing"]:
        return f"Device: unknown, the engine cannot import torch ({answer['missing']['torch']}); see the Setup tab"
    return answer["device"]


class SetupPanel(QWidget):
    """The engine environment setting, a "Check again" button, the one-click install and the dependency report.

    Signals: install_finished(error): once an install ends (None: installed and checked again);
    check_finished(DependencyReport): once a check started with "Check again" (or Enter) ends.
    """

    install_finished = pyqtSignal(object)
    check_finished = pyqtSignal(object)

    def __init__(self, report: Optional[dependencies.DependencyReport], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.env_widget = QgsFileWidget(self)
        self.env_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.env_widget.setFilePath(settings.value(settings.PYTHON_ENV))
        self.env_widget.lineEdit().setPlaceholderText(
            str(dependencies.configured_environment() or "[default: the project's .venv]"))
        self.env_widget.setToolTip("The engine's Python environment (a venv or conda folder) with onnxruntime, "
                                   "rasterio, pyogrio and shapely (the light install: classification with ONNX "
                                   "models) and torch and segment-anything (the full install: also training and "
                                   ".cwsam.pt models). The engine runs in a process of its own, with this "
                                   "environment's Python (any Python 3.10 or newer).")
        self.env_widget.lineEdit().returnPressed.connect(self.start_check)
        self.check_task: Optional[CheckTask] = None
        self.install_task: Optional[InstallTask] = None
        self.install_log: Optional[Path] = None
        self._installed_in: Optional[Path] = None  # an install that ended, while its check runs
        install = QGroupBox("Install the engine", self)
        install_form = wrapping_form(install)
        self.install_folder = QgsFileWidget(install)
        self.install_folder.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.install_folder.setFilePath(str(dependencies.profile_environment()))
        self.install_folder.setToolTip("A new or empty folder: the engine's own Python environment is made there")
        install_form.addRow("Folder", self.install_folder)
        self.light_button = QPushButton(f"Light engine ({dependencies.LIGHT_SIZE.replace('about ', '')})", install)
        self.light_button.setToolTip("ONNX Runtime: classification with ONNX models (.onnx)")
        self.full_button = QPushButton(f"Full engine ({dependencies.FULL_SIZE.replace('about ', '')})", install)
        self.full_button.setToolTip("PyTorch: also training, review and .cwsam.pt models (the CUDA build where an "
                                    "NVIDIA GPU is found, else the CPU build)")
        install_form.addRow("Install", self.light_button)
        install_form.addRow("", self.full_button)
        self.install_progress = QProgressBar(install)
        self.install_progress.setRange(0, 100)
        self.install_progress.setVisible(False)
        self.install_status = QLabel(install)
        self.install_status.setWordWrap(True)
        self.cancel_install_button = QPushButton("Cancel install", install)
        self.cancel_install_button.setVisible(False)
        self.log_button = QPushButton("Install log", install)
        self.log_button.setEnabled(False)
        install_form.addRow(self.install_progress)
        install_form.addRow(self.install_status)
        actions = QHBoxLayout()
        actions.addWidget(self.cancel_install_button)
        actions.addWidget(self.log_button)
        install_form.addRow(actions)
        self.light_button.clicked.connect(lambda: self.start_install(light=True))
        self.full_button.clicked.connect(lambda: self.start_install(light=False))
        self.cancel_install_button.clicked.connect(self.cancel_install)
        self.log_button.clicked.connect(self.show_install_log)
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
        form = wrapping_form()
        form.addRow("Engine environment", self.env_widget)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.check_button)
        layout.addWidget(install)
        layout.addWidget(self.status_label)
        layout.addWidget(self.device_label)
        layout.addWidget(self.onnx_label)
        layout.addWidget(self.details, 1)
        self.check_button.clicked.connect(self.start_check)
        if report is not None:
            self.show_report(report)
        else:  # the plugin's load-time check is still running: its report comes with Dock.set_dependency_report
            self._show_checking()

    def recheck(self) -> dependencies.DependencyReport:
        """Save the environment setting and ask an engine process of that environment what imports there
        (nothing is imported into QGIS: no restart is needed after installing)."""
        settings.set_value(settings.PYTHON_ENV, self.env_widget.filePath().strip())
        _DEVICE_LINES.clear()
        report = dependencies.check(device=settings.value(settings.DEVICE))
        self.show_report(report)
        return report

    def start_check(self) -> Optional[CheckTask]:
        """"Check again" without freezing QGIS: the setting saved, the check in a background task."""
        if self.check_task is not None:
            return None
        settings.set_value(settings.PYTHON_ENV, self.env_widget.filePath().strip())
        _DEVICE_LINES.clear()
        self._show_checking()
        self.check_button.setEnabled(False)
        task = CheckTask(settings.value(settings.DEVICE))
        task.report_ready.connect(self._check_done)
        self.check_task = task
        QgsApplication.taskManager().addTask(task)
        return task

    def _show_checking(self) -> None:
        where = dependencies.configured_environment()
        self.status_label.setText(f"Checking the engine in {where or '(no environment found)'}...")

    def _check_done(self, report: dependencies.DependencyReport) -> None:
        self.check_task = None
        self.check_button.setEnabled(True)
        self.show_report(report)
        self.check_finished.emit(report)
        if self._installed_in is not None:
            self.install_status.setText(f"Installed in {self._installed_in}. " + report.summary(in_setup_tab=True))
            self._installed_in = None
            self.install_finished.emit(None)

    def show_report(self, report: dependencies.DependencyReport) -> None:
        colour = "#b36b00" if report.light else "#1e8449" if report.ok else "#c0392b"
        self.status_label.setText(f"<span style='color:{colour}'>{report.summary(in_setup_tab=True)}</span>")
        self.details.setPlainText(report.details())
        self.device_label.setText(report.device_line if report.ok and not report.light else "")
        self.onnx_label.setText(report.onnx_line if report.ok else "")

    # --- one-click install ---------------------------------------------------------------------

    def start_install(self, light: bool) -> Optional[InstallTask]:
        """Install the light or the full engine into the folder chosen, in a background task."""
        if self.install_task is not None:
            self.install_status.setText("An install is already running: wait for it or cancel it.")
            return None
        folder = self.install_folder.filePath().strip() or str(dependencies.profile_environment())
        try:
            plan = plan_for(Path(folder), light)
            plan.requirements  # noqa: B018 - refused now, not in the task, when the plugin lacks it
        except InstallError as exc:
            self.install_status.setText(str(exc))
            return None
        self.install_log = plan.log
        task = InstallTask(plan)
        task.fraction_done.connect(self._install_progress)
        task.outcome_ready.connect(self._install_done)
        self.install_task = task
        self.light_button.setEnabled(False)
        self.full_button.setEnabled(False)
        self.cancel_install_button.setVisible(True)
        self.install_progress.setValue(0)
        self.install_progress.setVisible(True)
        self.log_button.setEnabled(True)
        self.install_status.setText(f"Installing the {'light' if light else 'full'} engine in {plan.target}...")
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel_install(self) -> None:
        if self.install_task is not None:
            self.install_task.cancel()

    def _install_progress(self, fraction: float, line: str) -> None:
        self.install_progress.setValue(int(round(100 * fraction)))
        self.install_status.setText(line)

    def _install_done(self, error: Optional[str]) -> None:
        target = self.install_task.plan.target if self.install_task is not None else None
        self.install_task = None
        self.light_button.setEnabled(True)
        self.full_button.setEnabled(True)
        self.cancel_install_button.setVisible(False)
        self.install_progress.setVisible(False)
        if error is None and target is not None:
            self.env_widget.setFilePath(str(target))
            self.install_status.setText(f"Installed in {target}; checking it...")
            self._installed_in = target
            if self.start_check() is not None:
                return  # install_finished once the check ends (_check_done): the interface stays free meanwhile
            self._installed_in = None
        else:
            self.install_status.setText(error or "install failed")
        self.install_finished.emit(error)

    def show_install_log(self) -> str:
        """The last install's log in the details box (what pip printed); returns it."""
        text = ""
        if self.install_log is not None and self.install_log.is_file():
            text = self.install_log.read_text(errors="replace")
        self.details.setPlainText(text or "No install log yet.")
        return text
