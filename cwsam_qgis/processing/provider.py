"""The "cwsam" Processing provider: classify, fine-tune, evaluate, retrain from corrections and change between two
dates, for the Toolbox, the Model Designer, batch mode and ``qgis_process``."""

from __future__ import annotations

import traceback
from pathlib import Path

from qgis.core import Qgis, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .. import messages
from .change_algorithm import ChangeAlgorithm
from .classify_algorithm import ClassifyAlgorithm
from .evaluate_algorithm import EvaluateAlgorithm
from .retrain_algorithm import RetrainAlgorithm
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
        for algorithm in (ClassifyAlgorithm, TrainAlgorithm, EvaluateAlgorithm, RetrainAlgorithm, ChangeAlgorithm):
            # addAlgorithm runs initAlgorithm from C++, where a Python exception aborts or reaches the user:
            # try it on a throw-away instance first, so one broken algorithm leaves the others and QGIS be.
            try:
                algorithm().initAlgorithm()
            except Exception:  # noqa: BLE001
                messages.log(f"could not load {algorithm.__name__} (see the CWSAM dock's Setup tab):\n"
                             f"{traceback.format_exc()}", Qgis.MessageLevel.Critical)
                continue
            self.addAlgorithm(algorithm())
