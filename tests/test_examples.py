"""examples/ run as a user would run them, against `genview serve` with the tiny presets, on small data."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.images import image_folder
from harness.processes import service_env, start_api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # end-to-end: `genview serve`, a training process each

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--noise-policy", "auto", "--steps", "2", "--view-size", "32", "--image-size", "32",
         "--batch-size", "4", "--epochs", "2"]
EPOCH_LINE = re.compile(r"^epoch (\d+) loss (\S+) w_min (\S+) w_max (\S+)$", re.M)


@pytest.fixture(scope="module")
def served(model_cache, tmp_path_factory):
    """8 images and `genview serve` (tiny) with no fitted basis: the examples fit it through the service."""
    root = tmp_path_factory.mktemp("examples")
    images = image_folder(root / "images", per_class=4, seed=300)
    env = service_env(model="tiny", scorer_model="tiny", device="cpu", model_cache=model_cache,
                      store_url=f"file://{root / 'store'}", min_fit_images="8")  # 8 images: below the default 16
    proc, base = start_api("serve", env, root)
    yield images, base
    proc.stop()


@pytest.mark.parametrize("example", ["plain_loop.py", "lightning_module.py", "lightly_simclr.py"])
def test_example_trains_with_weighted_genview_pairs(served, example, tmp_path):
    images, base = served
    done = subprocess.run([sys.executable, str(REPO / "examples" / example), "--images", str(images),
                           "--generator-url", base, "--scorer-url", base, *SMALL],
                          env=service_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    epochs = EPOCH_LINE.findall(done.stdout)
    assert [int(e[0]) for e in epochs] == [0, 1], done.stdout[-2000:]
    for _, loss, w_min, w_max in epochs:
        assert math.isfinite(float(loss)) and 0 < float(w_min) <= 1 <= float(w_max)
