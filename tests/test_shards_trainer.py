"""Shards under torchrun: 2 ranks × 2 loader workers each read a disjoint part; the trainer trains an epoch from them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness.processes import service_env
from tests.test_shards import sample, write

pytestmark = pytest.mark.slow  # torchrun processes
REPO = Path(__file__).resolve().parent.parent
READ_ONE_EPOCH = """
import json, sys
import torch.distributed as dist
from torch.utils.data import DataLoader
from genview.training.shards import ShardViewSource
from tests.test_shards import CROPS

dist.init_process_group("gloo")
source = ShardViewSource(sys.argv[1], CROPS, loader_workers=2, batch_size=3, seed=7)
seen = [int(i) for _, index, _, _ in DataLoader(source, batch_size=3, num_workers=2, drop_last=True) for i in index]
every = [None] * dist.get_world_size()
dist.all_gather_object(every, {"seen": seen, "len": len(source)})
if dist.get_rank() == 0:
    json.dump(every, open(sys.argv[2], "w"))
dist.destroy_process_group()
"""


def torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args],
                          env={**service_env(device="cpu"), "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_two_ranks_read_disjoint_parts_of_one_epoch(tmp_path):
    out = write(tmp_path, shards=8, per_shard=3)
    script, result = tmp_path / "read.py", tmp_path / "seen.json"
    script.write_text(READ_ONE_EPOCH)
    torchrun(str(script), out.url, str(result))
    ranks = json.loads(result.read_text())
    assert [r["len"] for r in ranks] == [len(r["seen"]) for r in ranks] == [12, 12]
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == list(range(24))


def test_trainer_trains_one_epoch_from_shards(tmp_path):
    out = write(tmp_path, shards=8, per_shard=3)
    data, run = tmp_path / "images", tmp_path / "run"
    for i in range(24):  # the originals as a class-folder dataset too, for the trainer's kNN monitor
        path = data / sample(i).record.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(sample(i).original)
    torchrun(str(REPO / "trainer" / "run.py"), "--data", str(data), "--views-shards", out.url, "--no-quality",
             "--method", "simclr",
             "--arch", "resnet18", "--image-size", "32", "--batch-size", "6", "--workers", "2", "--epochs", "1",
             "--seed", "3", "--out", str(run))
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "loss" in r]
    assert len(steps) == 4 and all(math.isfinite(r["loss"]) for r in steps)  # 12 pairs per rank / 3 per rank-step
    assert all(r["generated_fraction"] == 1.0 for r in steps)
    assert (run / "checkpoint.pt").exists()
