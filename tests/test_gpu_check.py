"""bench/gpu_check.py without a GPU: its FLOP formula against torch's counter, and its whole code path
in --dry-run mode (CPU, vit_nano), which writes the JSON and prints the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from gpu_check import encoder_flops, flop_formula_check  # noqa: E402


@pytest.mark.parametrize("backbone,size", [("vit_nano", 64), ("vit_tiny", 160), ("vit_b", 224)])
def test_flop_formula_equals_torch_flop_counter(backbone, size):
    check = flop_formula_check(backbone, size)
    assert check["formula_without_attention"] == check["fused_counted"]
    assert check["formula_attention"] == check["reference_attention_counted"]


def test_vit_b_at_1024_is_about_a_teraflop_per_tile():
    flops = encoder_flops("vit_b", 1024)
    sam = encoder_flops("vit_b", 1024, cwsam=False)
    assert 0.9e12 < sam["total"] < 1.0e12 and flops["total"] > sam["total"]
    assert flops["padded_window_tokens"] == 70 * 70 and "G 2 2 N^2 D" in flops["formula"]


def test_dry_run_writes_the_json_and_the_table(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--scene", "160",
                             "--json", str(out), "--workdir", str(tmp_path / "work")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["dry_run"] is True and data["environment"]["device"] == "cpu"
    assert set(data["encoder"]["rows"]) == {"cwsam_encoder_fused", "cwsam_encoder_reference", "sam_encoder"}
    assert data["classification"]["tiles"] == 9 and data["classification"]["batch_size"] == 2
    assert [row["attention"] for row in data["training"]] == ["fused", "reference"]
    assert data["flop_formula_check"]["ratio"] == 1.0 and data["flop_formula_check"]["attention_ratio"] == 1.0
    assert "encoder_speedup_fused_vs_reference" in data["targets"]
    assert "FLOPs per tile assumed" in result.stdout and "training step, batch 4, attention fused" in result.stdout
