"""A live plot of a training run: loss per step and validation mIoU per epoch (matplotlib in Qt)."""

from __future__ import annotations

from typing import List, Tuple

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qgis.PyQt.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

LOSS_COLOR = "#1f5fff"
MIOU_COLOR = "#d9a21b"


def figure_canvas(widget: QWidget, min_height: int) -> Tuple[Figure, FigureCanvasQTAgg]:
    """A matplotlib figure filling ``widget`` (its layout made here), at least ``min_height`` px tall: enough
    for the axes' labels whatever the screen (a short dock scrolls the tab instead)."""
    figure = Figure(figsize=(4.0, 2.4), dpi=90, tight_layout=True)
    canvas = FigureCanvasQTAgg(figure)
    canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
    canvas.setMinimumHeight(min_height)
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(canvas)
    return figure, canvas


class TrainingPlot(QWidget):
    """Two curves on one time axis (epochs, fractional within an epoch).

    Left axis: training loss of every optimizer step. Right axis: validation mIoU in [0, 1], one
    point per epoch. Drawing is throttled to ``draw_idle`` so per-step updates stay cheap.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.figure, self.canvas = figure_canvas(self, 220)
        self.loss_axes = self.figure.add_subplot(111)
        self.miou_axes = self.loss_axes.twinx()
        self.loss_points: List[Tuple[float, float]] = []  # (epoch position, loss)
        self.miou_points: List[Tuple[float, float]] = []  # (epoch, mIoU)
        (self._loss_line,) = self.loss_axes.plot([], [], color=LOSS_COLOR, linewidth=1.0, label="training loss")
        (self._miou_line,) = self.miou_axes.plot([], [], color=MIOU_COLOR, marker="o", linewidth=1.5,
                                                 label="validation mIoU")
        self._style()

    def _style(self) -> None:
        self.loss_axes.set_xlabel("epoch")
        self.loss_axes.set_ylabel("loss", color=LOSS_COLOR)
        self.miou_axes.set_ylabel("val mIoU", color=MIOU_COLOR)
        self.miou_axes.set_ylim(0.0, 1.0)
        self.loss_axes.grid(True, alpha=0.3)
        self.loss_axes.legend(handles=[self._loss_line, self._miou_line], loc="upper right", fontsize="small")

    def clear(self) -> None:
        """Forget every point (a new run starts)."""
        self.loss_points.clear()
        self.miou_points.clear()
        self._refresh()

    def add_loss(self, epoch: int, step: int, steps: int, loss: float) -> None:
        """One optimizer step: ``epoch`` counts from 1, ``step`` from 1 to ``steps``."""
        self.loss_points.append((epoch - 1 + step / max(1, steps), float(loss)))
        self._refresh()

    def add_miou(self, epoch: int, miou: float) -> None:
        """The validation mIoU after ``epoch`` (from 1), drawn where that epoch's last step is (an epoch cut
        short by the training time ends before ``epoch``); NaN (no validation part) is not drawn."""
        if miou == miou:
            x = float(epoch)
            if self.loss_points and epoch - 1 < self.loss_points[-1][0] <= epoch:
                x = self.loss_points[-1][0]
            self.miou_points.append((x, float(miou)))
            self._refresh()

    def _refresh(self) -> None:
        self._loss_line.set_data([p[0] for p in self.loss_points], [p[1] for p in self.loss_points])
        self._miou_line.set_data([p[0] for p in self.miou_points], [p[1] for p in self.miou_points])
        self.loss_axes.relim()
        self.loss_axes.autoscale_view()
        xs = [p[0] for p in self.loss_points + self.miou_points]
        if xs:
            low, high = min(xs + [0.0]), max(xs)
            self.loss_axes.set_xlim(low, high + 0.03 * max(high - low, 1e-3))
        self.miou_axes.set_ylim(0.0, 1.0)
        self.canvas.draw_idle()
