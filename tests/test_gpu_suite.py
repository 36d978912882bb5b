"""bench/gpu_suite.py on the CPU with the tiny presets (`--quick`), so the prepared GPU suite cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.env import REPO
from bench.gpu_measure import device_peak_tflops
from bench.gpu_suite import main


def test_device_peaks_by_name():
    assert device_peak_tflops("NVIDIA H200") == device_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert device_peak_tflops("NVIDIA H100 PCIe") == 756.0 and device_peak_tflops("NVIDIA H200 NVL") == 835.0
    assert device_peak_tflops("x86_64") is None


def test_quick_core_measures_a_lever_against_the_reference(tmp_path, capsys):
    out = tmp_path / "suite.json"
    result = main(["--quick", "--only", "fuse_qkv", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))
    flops = result["flops"]
    assert flops["unet_per_step"] > 0
    assert flops["per_image"] == flops["encoder_and_decoder"] + 2 * flops["unet_per_step"]  # --quick: 2 steps
    assert set(result["runs"]) == {"worker_eager", "fuse_qkv"}
    fused = result["runs"]["fuse_qkv"]
    assert fused["images_per_s"] > 0 and 0 <= fused["gpu_idle_ratio"] < 1 and fused["acceleration"]["fuse_qkv"]
    assert fused["effect_vs_fp16_reference"]["views_compared"] == 4
    assert fused["effect_vs_fp16_reference"]["max_pixel_diff"] == 0  # exact on the CPU
    assert result["env"]["commit"] and result["measured_matmul_tflops"] > 0 and result["device_peak_tflops"] is None
    table = capsys.readouterr().out.splitlines()
    assert table[-1].startswith("fuse_qkv") and table[-3].startswith("run")


def test_steps_that_would_overrun_the_budget_are_skipped_and_recorded(tmp_path):
    result = main(["--quick", "--only", "fuse_qkv,scorer", "--budget-s", "0", "--out", str(tmp_path)])
    assert set(result["runs"]) == {"worker_eager", "fuse_qkv"}
    assert all(run["skipped"].startswith("budget:") for run in result["runs"].values())
    assert result["scorer"]["skipped"].startswith("budget:")


def test_unknown_run_names_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--quick", "--only", "fuse_qkv,warp_drive"])
    assert "warp_drive" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_suite_runs_every_path_lever_and_the_scorer(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.gpu_suite", "--quick", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_suite_quick_cpu.json").read_text())
    runs = result["runs"]
    for name in ("worker_eager", "diffusers_eager", "official_eager", "worker_compiled", "diffusers_compiled",
                 "bf16", "fuse_qkv", "channels_last", "batch8", "exact_compiled_batch8", "exact_autotune_batch8"):
        assert runs[name]["images_per_s"] > 0, (name, runs[name])
    for name in ("fp8", "exact_compiled_bf16_fp8_batch8", "exact_autotune_bf16_fp8_batch8"):
        assert "needs" in runs[name]["error"]  # FP8 needs torchao and a CUDA GPU: a clear error, the suite goes on
    assert runs["bf16"]["effect_vs_fp16_reference"]["max_pixel_diff"] > 0
    scorer = result["scorer"]
    assert scorer["in_process_pairs_per_s"] > 0 and scorer["service_raw_pairs_per_s"] > 0
    assert scorer["service_jpeg_pairs_per_s"] > 0 and "error" not in scorer
    lines = done.stdout.splitlines()
    table = lines[max(i for i, line in enumerate(lines) if line.startswith("run ")):]  # the table comes last
    assert [line.split()[0] for line in table[1:-1]] == list(runs) and table[-1].startswith("scorer pairs/s")
