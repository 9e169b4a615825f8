"""Data-parallel training: two gloo processes under torchrun end their steps with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from cwsam_core.model.build import build_cwsam
from cwsam_core.model.trainable import trainable_names
from cwsam_core.simulate import simulate_scene, write_scene


def test_two_gloo_processes_train_in_step(tmp_path):
    image, labels = write_scene(simulate_scene(128, 128, seed=7), tmp_path / "sar.tif", tmp_path / "labels.tif")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent))
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(Path(__file__).with_name("distributed_worker.py")), str(image), str(labels), str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rank0 = torch.load(tmp_path / "weights0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "weights1.pt", weights_only=True)
    # Each rank trained on its own windows...
    assert rank0["first_batch"] != rank1["first_batch"]
    # ...yet gradients were averaged, so both end with the same weights, which moved from the start.
    assert rank0["weights"].keys() == rank1["weights"].keys()
    for key in rank0["weights"]:
        assert torch.equal(rank0["weights"][key], rank1["weights"][key]), key
    torch.manual_seed(3)
    initial = build_cwsam("vit_nano", 5, input_size=32).state_dict()
    names = trainable_names(build_cwsam("vit_nano", 5, input_size=32))
    assert any(not torch.equal(initial[k], rank0["weights"][k]) for k in names)
    # Validation was sharded and summed: both ranks saw the same score. Only rank 0 wrote files.
    assert rank0["best_miou"] == rank1["best_miou"]
    assert (tmp_path / "rank0" / "model.cwsam.pt").is_file()
    assert (tmp_path / "rank0" / "model.cwsam.pt.state.pt").is_file()
    assert list((tmp_path / "rank1").iterdir()) == []
