"""The engine's worker process (cwsam_core.cli.worker) and the plugin's client (cwsam_qgis.worker_client): results
as plain data, a crash made on purpose, a cancel, a killed worker's leftovers, a closed standard input, and
the same map as the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from plugin_helpers import write_model, write_sar

from cwsam_core.common.plain import Record, from_plain, to_plain
from cwsam_core.engine.inference import ClassificationResult
from cwsam_qgis.worker_client import Engine, EngineWorker, WorkerDied, WorkerError, describe_exit

REPO = Path(__file__).resolve().parents[1]
ENGINE = Engine(Path(sys.executable), REPO)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("worker")
    return {"sar": write_sar(folder / "sar.tif", height=768, width=768), "model": write_model(folder / "nano.cwsam.pt")}


@pytest.fixture
def worker():
    started = EngineWorker(ENGINE)
    yield started
    started.close()


def classify_args(inputs, output: Path) -> dict:
    return {"input": str(inputs["sar"]), "output": str(output), "model": str(inputs["model"]), "device": "cpu",
            "batch_size": 1}


def test_results_cross_as_plain_data():
    result = ClassificationResult(Path("/a/map.tif"), None, Path("/a/map.run.json"), {0: 5, 3: 7}, {0: 1.5, 3: 2.0},
                                  "m2", {0: "water", 3: "urban"}, 1.25, "cpu", ["note"])
    back = from_plain(to_plain(result))
    assert isinstance(back, Record) and back.output == Path("/a/map.tif") and back.pixel_counts == {0: 5, 3: 7}
    assert back.class_names[3] == "urban" and back.confidence is None and back.warnings == ["note"]
    assert from_plain(to_plain({"x": float("nan")}))["x"] != from_plain(to_plain({"x": float("nan")}))["x"]


def test_a_worker_crash_is_a_message_qgis_survives_and_nothing_is_left(inputs, worker, tmp_path):
    output = tmp_path / "map.tif"
    crashed = threading.Event()

    def crash(_fraction, _message):
        if not crashed.is_set():
            crashed.set()
            os.kill(worker.pid, signal.SIGSEGV)

    with pytest.raises(WorkerDied) as died:
        worker.call("classify", classify_args(inputs, output), progress=crash, outputs=[output])
    message = str(died.value)
    assert "crashed (segmentation fault, SIGSEGV)" in message and str(worker.log_path) in message
    assert not worker.alive and not output.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary left beside it
    fresh = EngineWorker(ENGINE)  # the next job gets a new worker
    try:
        assert fresh.call("check", {"modules": ["numpy"]})["missing"] == {}
    finally:
        fresh.close()


def test_cancel_stops_the_job_at_once_and_the_worker_lives_on(inputs, worker, tmp_path):
    output = tmp_path / "map.tif"
    asked = []

    def should_cancel():
        return bool(asked)

    started = time.monotonic()
    with pytest.raises(WorkerError) as stopped:
        worker.call("classify", classify_args(inputs, output), progress=lambda f, m: asked.append(f),
                    should_cancel=should_cancel, outputs=[output])
    assert stopped.value.cancelled and time.monotonic() - started < 30
    assert not output.exists() and [p.name for p in tmp_path.iterdir()] == []
    assert worker.alive and worker.call("check", {"modules": ["numpy"]})["missing"] == {}


def test_a_killed_worker_puts_the_previous_output_back(inputs, worker, tmp_path):
    output = tmp_path / "map.tif"
    output.write_bytes(b"the user's earlier map")
    backup = tmp_path / f".map.tif.{worker.pid}.previous"  # as common.paths.previous_kept_until_done names it
    os.replace(output, backup)
    (tmp_path / f".map.tif.{worker.pid}.partial").write_bytes(b"half")
    worker.kill()
    worker.clean_after_death([output], existed=[])
    assert output.read_bytes() == b"the user's earlier map" and sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]
    assert describe_exit(-9).startswith("was killed (SIGKILL: out of memory")


def test_the_worker_exits_when_qgis_goes_away(worker):
    worker.process.stdin.close()  # what a crash of QGIS does to the pipe
    assert worker.process.wait(timeout=10) == 0


def test_a_print_in_the_engine_cannot_break_the_answers(worker):
    # Standard output is the log (standard error) inside the worker: the protocol has its own descriptor.
    answer = worker.call("check", {"modules": ["this_module_does_not_exist"]})
    assert "ModuleNotFoundError" in answer["missing"]["this_module_does_not_exist"]


def test_the_worker_makes_the_same_map_as_the_command_line(inputs, worker, tmp_path):
    result = worker.call("classify", classify_args(inputs, tmp_path / "worker.tif"))
    subprocess.run([sys.executable, "-m", "cwsam_core.cli", "classify", str(inputs["sar"]), "--model",
                    str(inputs["model"]), "--output", str(tmp_path / "cli.tif"), "--device", "cpu", "--batch-size",
                    "1"], check=True, capture_output=True)
    with rasterio.open(result.output) as a, rasterio.open(tmp_path / "cli.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
