"""Global negatives and shuffle-BN across ranks: two gloo ranks under torchrun give the per-sample losses,
gradients and keys of one process holding the concatenated batch.

The test runs this file under `torchrun --nproc-per-node 2`; each rank saves what it computed, and the
test compares it with the single-process computation. Methods run in eval mode for the loss checks so that
BN uses fixed statistics: what differs between the two set-ups is then only where the negatives come from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
B = 4  # per rank
WORLD = 2
SMALL = {"hidden": 32, "pred_hidden": 16, "dim": 8, "queue_size": 16}


def build(method: str):
    from trainer.methods import build_method, method_config

    torch.manual_seed(0)
    return build_method(method_config(method, "resnet18", 32, **SMALL))


def batch(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(WORLD * B, 3, 32, 32, generator=g) for _ in range(2)]


def losses_and_grads(model, crops) -> tuple[torch.Tensor, list[torch.Tensor]]:
    per_sample = model.eval()(crops)
    per_sample.mean().backward()
    return per_sample.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def rank_main(out: Path) -> None:
    """One rank: its half of the batch; gradients averaged over ranks as DistributedDataParallel does."""
    import torch.distributed as dist

    from trainer import dist as tdist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mine = slice(rank * B, (rank + 1) * B)
    result = {}
    for method in ("simclr", "mocov3"):
        model = build(method)
        per_sample, grads = losses_and_grads(model, [c[mine] for c in batch(1)])
        for g in grads:
            dist.all_reduce(g)
            g /= WORLD
        result[method] = (tdist.gather_cat(per_sample), grads)
    target = build("mocov2").target.train()
    torch.manual_seed(7)
    result["shuffle_bn"] = tdist.gather_cat(tdist.shuffled_forward(target, batch(2)[1][mine], ghost_batches=8))
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_the_whole_batch(tmp_path):
    out = tmp_path / "ranks.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD),
                           "--standalone", __file__, str(out)], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = torch.load(out, weights_only=True)
    for method in ("simclr", "mocov3"):
        per_sample, grads = losses_and_grads(build(method), batch(1))
        got_losses, got_grads = ranks[method]
        torch.testing.assert_close(got_losses, per_sample, rtol=1e-5, atol=1e-5)
        assert len(got_grads) == len(grads) > 10
        for got, want in zip(got_grads, grads):  # summation order differs across ranks: tolerance per tensor scale
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # shuffle-BN across ranks: rank r encodes the r-th share of a common permutation (BN over that share)
    target = build("mocov2").target.train()
    x = batch(2)[1]
    torch.manual_seed(7)
    perm = torch.randperm(WORLD * B)
    with torch.no_grad():
        expected = torch.empty_like(ranks["shuffle_bn"])
        for r in range(WORLD):
            idx = perm[r * B:(r + 1) * B]
            expected[idx] = target(x[idx])
    torch.testing.assert_close(ranks["shuffle_bn"], expected, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]))
