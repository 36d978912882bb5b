"""Chunked weighted kNN against a dense reference and a hand-worked case; distributed feature extraction."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainer.evaluate import extract_features, knn_topk, knn_vote, shard

REPO = Path(__file__).resolve().parent.parent


def dense_knn(train, train_labels, queries, query_labels, k, t, leave_one_out=False) -> float:
    """The textbook version: the whole similarity matrix at once."""
    sims = queries @ train.T
    if leave_one_out:
        sims.fill_diagonal_(-float("inf"))
    top, idx = sims.topk(k, dim=1)
    classes = int(max(train_labels.max(), query_labels.max())) + 1
    votes = torch.zeros(len(queries), classes).scatter_add_(1, train_labels[idx], (top / t).exp())
    return float((votes.argmax(1) == query_labels).float().mean())


def _features(n: int, d: int, classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centres = torch.randn(classes, d, generator=g)
    return F.normalize(centres[labels] + 1.5 * torch.randn(n, d, generator=g), dim=1), labels


@pytest.mark.parametrize("chunk,train_chunk", [(7, 13), (1000, 100000), (64, 50)])
def test_chunked_knn_equals_dense(chunk, train_chunk):
    feats, labels = _features(390, 16, 5, seed=0)
    train, ty, query, qy = feats[:300], labels[:300], feats[300:], labels[300:]
    got = knn_topk(train, ty, query, qy, ks=(1, 20, 200), t=0.07, chunk=chunk, train_chunk=train_chunk)
    for k in (1, 20, 200):
        assert got[k] == pytest.approx(dense_knn(train, ty, query, qy, k, 0.07))
    assert 0.3 < got[20] < 1.0  # clustered data: far above chance (0.2), so the test can fail


def test_leave_one_out_equals_dense():
    train, ty = _features(120, 8, 3, seed=2)
    got = knn_topk(train, ty, train, ty, ks=(5, 20), chunk=16, train_chunk=40, leave_one_out=True)
    for k in (5, 20):
        assert got[k] == pytest.approx(dense_knn(train, ty, train, ty, k, 0.07, leave_one_out=True))


def test_fp16_features_give_the_same_answer():
    feats, labels = _features(500, 32, 4, seed=3)
    train, ty, query, qy = feats[:400], labels[:400], feats[400:], labels[400:]
    full = knn_topk(train, ty, query, qy, ks=(20,))
    half = knn_topk(train.half(), ty, query.half(), qy, ks=(20,))
    assert abs(full[20] - half[20]) <= 0.02


def test_hand_worked_vote_and_temperature():
    """Query (1,0,0), label 0. Neighbours: cos 0.95 (label 1), 0.9 and 0.9 (label 0), 0 (label 1).

    k=1: the 0.95 neighbour → class 1. k=3, τ=1: class 0 gets 2e^0.9 = 4.92 > e^0.95 = 2.59 → class 0.
    k=3, τ=0.07: 2e^(0.9/0.07) < e^(0.95/0.07) since e^(0.05/0.07) = 2.04 > 2 → class 1.
    k=200 (clamped to 4), τ=1: class 0 4.92 > class 1 e^0.95 + e^0 = 3.59 → class 0.
    """
    r19, r0975 = math.sqrt(0.19), math.sqrt(1 - 0.95 ** 2)
    train = torch.tensor([[0.95, r0975, 0.0], [0.9, r19, 0.0], [0.9, 0.0, r19], [0.0, 1.0, 0.0]])
    labels = torch.tensor([1, 0, 0, 1])
    query, truth = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0])
    assert knn_topk(train, labels, query, truth, ks=(1, 3, 200), t=1.0) == {1: 0.0, 3: 1.0, 200: 1.0}
    assert knn_topk(train, labels, query, truth, ks=(3,), t=0.07) == {3: 0.0}
    sims = torch.tensor([[0.95, 0.9, 0.9]])
    assert knn_vote(sims, torch.tensor([[1, 0, 0]]), 2, 1.0).tolist() == [0]


def test_shards_cover_in_order():
    for n, world in [(5, 2), (16, 3), (1, 4), (0, 2)]:
        parts = [shard(n, r, world) for r in range(world)]
        assert [i for p in parts for i in p] == list(range(n))
        assert max(map(len, parts)) == -(-n // world)  # the padded size every rank gathers


class _Tiny(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return torch.full((3, 8, 8), 40 * i, dtype=torch.uint8), i % 2


DIST_SCRIPT = """
import sys, torch
from trainer import dist
from trainer.evaluate import extract_features
from tests.test_evaluate import _Tiny
dist.setup("cpu")
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
feats, labels = extract_features(net, _Tiny(), torch.device("cpu"), batch_size=2)
if dist.rank() == 1:
    torch.save((feats, labels), sys.argv[1])
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_extract_features_two_ranks_equal_one_process(tmp_path):
    out = tmp_path / "rank1.pt"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "--no-python", sys.executable, "-c", DIST_SCRIPT, str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    feats, labels = extract_features(net, _Tiny(), torch.device("cpu"), batch_size=2)
    got_feats, got_labels = torch.load(out)
    assert got_feats.shape == (5, 144) and torch.allclose(got_feats, feats, atol=1e-6)
    assert got_labels.tolist() == labels.tolist() == [0, 1, 0, 1, 0]
