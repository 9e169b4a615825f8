"""The review loop on simulated data (bench/bench_review_loop.py): a model trained on a summer scene,
applied to a winter scene of other land cover, corrected in three rounds of a few polygons over its
largest errors and retrained a fixed number of steps each time. The numbers are in docs/EVALUATION.md."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_review_loop import review_loop  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_three_rounds_of_corrections_improve_the_map_beyond_them(tmp_path):
    rounds = review_loop(tmp_path, rounds=3, log=lambda line: print(line)).rounds
    before, first, _, third = rounds
    # Every round wrote a new version beside the previous one, none overwritten.
    assert [r.model for r in rounds] == ["model.cwsam.pt", "model.v2.cwsam.pt", "model.v3.cwsam.pt",
                                         "model.v4.cwsam.pt"]
    assert all((tmp_path / r.model).is_file() for r in rounds)
    assert 0 < first.polygons < third.polygons and all(r.changed > 0 for r in rounds[1:])
    # Pixels no correction polygon covers (scored on the same pixels every round): better after round one,
    # and better still after round three.
    assert first.miou_uncovered > before.miou_uncovered + 0.02
    assert third.miou_uncovered > first.miou_uncovered + 0.01
    # The season shift made the parent wrong on most of the scene; the corrected places end mostly right.
    assert before.accuracy_uncovered < 0.6 and third.accuracy_uncovered > before.accuracy_uncovered + 0.15
    assert math.isnan(before.accuracy_corrected) and third.accuracy_corrected > 0.6
