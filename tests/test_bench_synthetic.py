"""The synthetic benchmarks' own machinery: false-positive pairs miss the object, and the benchmark script runs
end to end in its quick profile (the code path of the CPU and GPU profiles)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from bench.methods_synthetic import PROFILES, SMALL_DATA, bench_config
from bench.quality_synthetic import MISS, MaskedPairs, miss_rate, object_share
from genview.synthetic import make_split
from trainer.methods import method_config


def _pairs(fp: float) -> MaskedPairs:
    split = make_split(0, "train", 24)
    config = method_config("simclr", "resnet18", 32)
    return MaskedPairs(torch.from_numpy(split.images), torch.from_numpy(split.masks), config, fp)


def test_false_positive_views_miss_the_object_and_score_minus_one():
    torch.manual_seed(0)
    pairs = _pairs(1.0)
    missed = 0
    for i in range(len(pairs)):
        x1, x2, q = pairs[i]
        assert x1.shape == x2.shape == (3, 32, 32) and x2.dtype == torch.uint8
        missed += q <= -1.0 + 2 * MISS / object_share(pairs.masks[i])
    assert missed >= 0.85 * len(pairs)  # the rest: the emptiest of 100 boxes around a large object
    assert miss_rate(pairs.masks[:, 0], 32) >= 0.85


def test_true_pairs_score_higher_than_false_ones():
    torch.manual_seed(0)
    clean = [_pairs(0.0)[i][2] for i in range(24)]
    assert sum(clean) / len(clean) > 0.0 and max(clean) == 1.0


def test_gpu_profile_is_the_full_network_for_100_epochs():
    gpu = PROFILES["gpu"]
    assert (gpu.device, gpu.width, gpu.epochs >= 100) == ("cuda", 64, True)


def test_cpu_profile_sets_crop_scale_and_hue_of_every_view_and_keeps_the_rest_of_the_jitter():
    cpu = PROFILES["cpu"]
    for method in ("simclr", "byol"):  # symmetric and asymmetric views
        config = bench_config(method, "resnet18", cpu, SMALL_DATA[method]["options"])
        recipe = method_config(method, "resnet18", 32).crops
        for view, original in ((config.crops.t, recipe.t), (config.crops.t_plus, recipe.t_plus)):
            assert view.scale == (cpu.crop_scale, 1.0) and cpu.crop_scale > 0.08
            assert view.jitter == (*original.jitter[:3], 0.5) and original.jitter[3] < 0.5 == cpu.hue
            assert (view.blur_p, view.solarize_p) == (original.blur_p, original.solarize_p)
    assert bench_config("simclr", "resnet18", cpu, SMALL_DATA["simclr"]["options"]).base_lr == 4.0


@pytest.mark.slow
def test_quick_profile_writes_json_and_markdown(tmp_path):
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, "-m", "bench.methods_synthetic", "--profile", "quick", "--method", "swav",
                    "--threads", "1", "--jobs", "2", "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    run = result["runs"]["swav"]
    assert result["complete"] and result["env"]["commit"] and result["jobs"] == 2
    assert (result["supervised"]["train"], result["supervised"]["epochs"]) == (256, 2)
    assert (result["calibration"]["train"], result["calibration"]["epochs"]) == (512, 1)
    assert set(run["random_init"]) == set(run["trained"]) == {"knn_top1", "linear_top1", "mean_cosine"}
    assert run["options"]["freeze_prototypes_iters"] == 4 and run["loss_without_information"] > 0
    text = out.with_suffix(".md").read_text()
    assert "| swav |" in text and "on 512 images (1 epochs, calibration)" in text


def test_views_option_changes_both_global_views_and_keeps_the_profiles_crop_scale():
    cpu = PROFILES["cpu"]
    options = {"prototypes": 30, "views": {"jitter": [0, 0, 0, 0], "grayscale_p": 0.0}}
    config = bench_config("swav", "resnet18", cpu, options)
    for view in (config.crops.t, config.crops.t_plus):
        assert view.jitter == (0, 0, 0, 0) and view.grayscale_p == 0.0 and view.scale == (cpu.crop_scale, 1.0)
    assert config.prototypes == 30 and "views" in options  # the caller's options are left as they were
