"""The "cwsam" Processing provider: classify, fine-tune and evaluate, for the Toolbox, the Model
Designer, batch mode and ``qgis_process``."""

from __future__ import annotations

import traceback
from pathlib import Path

from qgis.core import Qgis, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .. import messages
from .classify_algorithm import ClassifyAlgorithm
from .evaluate_algorithm import EvaluateAlgorithm
from .train_algorithm import TrainAlgorithm

ICON = Path(__file__).resolve().parent.parent / "resources" / "icon.svg"


class CwsamProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "cwsam"

    def name(self) -> str:
        return "CWSAM"

    def longName(self) -> str:  # noqa: N802
        return "CWSAM: SAR land-cover classification with ClassWise-SAM-Adapter"

    def icon(self) -> QIcon:
        return QIcon(str(ICON)) if ICON.is_file() else super().icon()

    def supportedOutputRasterLayerExtensions(self) -> list:  # noqa: N802
        return ["tif"]  # the engine writes GeoTIFF only

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in (ClassifyAlgorithm, TrainAlgorithm, EvaluateAlgorithm):
            try:
                self.addAlgorithm(algorithm())
            except Exception:  # noqa: BLE001 - one broken algorithm must not hide the others or QGIS
                messages.log(f"CWSAM: could not load {algorithm.__name__}:\n{traceback.format_exc()}", Qgis.Critical)
