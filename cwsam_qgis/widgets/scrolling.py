"""A tab whose content scrolls vertically: a short screen scrolls it instead of squeezing its tables."""

from __future__ import annotations

from typing import Tuple

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget


def scrolling_content(tab: QWidget) -> Tuple[QWidget, QVBoxLayout]:
    """Fill ``tab`` with a frameless vertical scroll area; returns its content widget and that widget's layout."""
    outer = QVBoxLayout(tab)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea(tab)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    outer.addWidget(scroll)
    content = QWidget(scroll)
    scroll.setWidget(content)
    return content, QVBoxLayout(content)
