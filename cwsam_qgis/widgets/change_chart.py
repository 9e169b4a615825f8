"""Gains and losses per class between two dates, in hectares, as horizontal bars (matplotlib in Qt)."""

from __future__ import annotations

from typing import List, Tuple

from qgis.PyQt.QtWidgets import QWidget

from .training_plot import figure_canvas

GAIN_COLOR = "#1a9850"
LOSS_COLOR = "#d73027"


class ChangeChart(QWidget):
    """One row a class: its gain to the right of zero, its loss to the left; ``rows`` what is drawn."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.figure, self.canvas = figure_canvas(self, 200)
        self.axes = self.figure.add_subplot(111)
        self.rows: List[Tuple[str, float, float]] = []
        self.unit = "ha"
        self.show_rows([])

    def show_rows(self, rows: List[Tuple[str, float, float]], unit: str = "ha") -> None:
        """``rows``: (class, gained, lost), both positive, in ``unit``."""
        self.rows, self.unit = list(rows), unit
        axes = self.axes
        axes.clear()
        names = [name for name, _, _ in rows][::-1]  # the largest movement on top
        positions = range(len(names))
        axes.barh(positions, [gain for _, gain, _ in rows][::-1], color=GAIN_COLOR, label="gained")
        axes.barh(positions, [-loss for _, _, loss in rows][::-1], color=LOSS_COLOR, label="lost")
        axes.set_yticks(list(positions))
        axes.set_yticklabels(names, fontsize=8)
        axes.axvline(0, color="#333333", linewidth=0.8)
        axes.set_xlabel(unit, fontsize=8)
        axes.tick_params(axis="x", labelsize=8)
        if rows:
            axes.legend(fontsize=7, loc="lower right")
        else:
            axes.text(0.5, 0.5, "no change yet", ha="center", va="center", transform=axes.transAxes, fontsize=8)
        self.canvas.draw_idle()
