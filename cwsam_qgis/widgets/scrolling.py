"""A tab whose content scrolls vertically: a short screen scrolls it instead of squeezing its tables."""

from __future__ import annotations

from typing import Optional, Tuple

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QFormLayout, QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QVBoxLayout, QWidget,
)

# Narrowest dock the tabs are laid out for: QGIS opens a new dock about this wide.
NARROW_DOCK_PX = 260


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
    layout = QVBoxLayout(content)
    layout.setContentsMargins(4, 4, 4, 4)  # the dock's own frame is margin enough: room for the fields
    return content, layout


def wrapping_form(parent: Optional[QWidget] = None) -> QFormLayout:
    """A form whose fields go below their labels when the dock is too narrow for both on one line (a
    260 px dock), instead of widening the dock or cutting the fields."""
    form = QFormLayout(parent) if parent is not None else QFormLayout()
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    return form


def run_rows(run: QPushButton, cancel: QPushButton, progress: QProgressBar) -> QVBoxLayout:
    """The run button on a row of its own, the progress bar and Cancel under it: a narrow dock has room for
    the button's words that way."""
    rows = QVBoxLayout()
    rows.addWidget(run)
    under = QHBoxLayout()
    under.addWidget(progress, 1)
    under.addWidget(cancel)
    rows.addLayout(under)
    return rows


def run_widgets(parent: QWidget, text: str) -> Tuple[QPushButton, QPushButton, QProgressBar, QLabel]:
    """A tab's run button (``text``), its Cancel (off until a run starts), progress bar and status line."""
    run = QPushButton(text, parent)
    cancel = QPushButton("Cancel", parent)
    cancel.setEnabled(False)
    progress = QProgressBar(parent)
    progress.setRange(0, 100)
    status = QLabel(parent)
    status.setWordWrap(True)
    return run, cancel, progress, status
