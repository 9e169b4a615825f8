"""cwsam:classify in Processing's batch mode: one algorithm instance run row after row, each with a new
context, as QGIS's batch dialog does (processing/gui/BatchAlgorithmDialog.py): a failing row does not
stop the others, and no row's output leaks into the next."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_helpers import cwsam_processing, write_model, write_sar
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback


@pytest.fixture(scope="module")
def processing(qgis_app):
    with cwsam_processing() as module:
        yield module


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.errors = []

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802 (Qt's name)
        self.errors.append(error)


def test_classify_runs_row_after_row_like_the_batch_dialog(processing, tmp_path):
    model = write_model(tmp_path / "nano.cwsam.pt")
    scenes = [write_sar(tmp_path / f"scene{i}.tif", height=60 + 10 * i, width=70, seed=i) for i in range(3)]
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 not a raster")
    rows = [scenes[0], broken, scenes[1], scenes[2]]
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("cwsam:classify")
    outcomes = []
    for index, scene in enumerate(rows):
        parameters = algorithm.preprocessParameters({"INPUT": str(scene), "MODEL": str(model), "DEVICE": 1,
                                                     "OUTPUT": str(tmp_path / f"row{index}.tif")})
        feedback = RecordingFeedback()
        results, ok = algorithm.run(parameters, QgsProcessingContext(), feedback)
        outcomes.append((ok, results, feedback.errors))
    assert [ok for ok, _, _ in outcomes] == [True, False, True, True]
    assert any("broken.tif is not a raster QGIS can read" in e for e in outcomes[1][2]), outcomes[1][2]
    for index, (ok, results, _) in enumerate(outcomes):
        if not ok:
            assert not (tmp_path / f"row{index}.tif").exists()
            continue
        record = json.loads(Path(results["RECORD"]).read_text())
        assert record["input"]["path"] == str(rows[index].resolve())
        assert record["input"]["height"] == 60 + 10 * (index - 1 if index > 1 else 0)
