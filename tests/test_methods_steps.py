"""What a training step relies on: shuffle-BN keys, the generated view's slot, SwAV's multi-crop, queue and
prototype freeze, the non-finite guard, channels_last and fp32 losses under autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genview.method.losses import info_nce
from trainer.dist import shuffled_forward
from trainer.methods import METHODS, build_method, method_config
from trainer.optim import NonFiniteGuard

B = 8
SMALL = {"hidden": 32, "pred_hidden": 16, "dim": 8, "prototypes": 10, "queue_size": 16}


def small(method: str, **extra):
    return build_method(method_config(method, "resnet18", 32, **{**SMALL, **extra}))


def crops(n: int = 2, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 3, size, size, generator=g) for _ in range(n)]


def ghost_batches(encoder: nn.Module, x: torch.Tensor, perm: torch.Tensor, chunks: int) -> torch.Tensor:
    """The encoder on each ghost batch of the permuted batch, back in input order (written out by hand)."""
    outputs = torch.empty(x.shape[0], *encoder(x[:2]).shape[1:])
    size = x.shape[0] // chunks
    for c in range(chunks):
        idx = perm[c * size:(c + 1) * size]
        outputs[idx] = encoder(x[idx])
    return outputs


def test_shuffled_forward_uses_the_statistics_of_a_random_ghost_batch():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4)).train()
    x = torch.randn(B, 5)
    torch.manual_seed(1)
    keys = shuffled_forward(encoder, x, ghost_batches=2)
    torch.manual_seed(1)
    perm = torch.randperm(B)
    torch.testing.assert_close(keys, ghost_batches(encoder, x, perm, 2))
    assert not torch.allclose(keys, encoder(x), atol=1e-3)  # not the whole batch's statistics


def test_mocov2_keys_come_from_shuffled_batch_statistics():
    model = small("mocov2", genview_slot="key", ghost_batches=2).train()
    x1, x2 = crops()
    queue = model.queue.clone()
    torch.manual_seed(5)
    per_sample = model([x1, x2])
    torch.manual_seed(5)
    perm = torch.randperm(B)
    with torch.no_grad():
        keys = F.normalize(ghost_batches(model.target, x2, perm, 2), dim=1)
    expected = info_nce(model.online(x1), keys, model.config.temperature, queue=queue)
    torch.testing.assert_close(per_sample, expected)
    torch.testing.assert_close(model.queue[:B], keys)  # this batch's keys were enqueued


def test_generated_view_goes_to_a_random_slot_per_sample():
    model = small("mocov2")  # genview_slot "random" by default, as the official GenView code
    original, generated = torch.zeros(64, 1), torch.ones(64, 1)
    torch.manual_seed(0)
    query, key = model.slots(original, generated)
    assert torch.equal(query + key, torch.ones(64, 1))  # each sample: one of each
    assert 10 < int(query.sum()) < 54
    key_model = small("mocov2", genview_slot="key")
    assert torch.equal(key_model.slots(original, generated)[1], generated)


def test_swav_multicrop_queue_and_prototype_freeze():
    model = small("swav", swav_queue_length=2 * B, swav_queue_start_epoch=1, freeze_prototypes_iters=2,
                  sinkhorn_epsilon=1.0,
                  crops=method_config("swav", "resnet18", 32).crops.model_copy(update={"local_count": 2,
                                                                                    "local_size": 16}))
    views = crops(2) + crops(2, size=16, seed=1)
    assert model(views).shape == (B,)
    assert float(model.queue.abs().sum()) == 0  # the queue starts at epoch 1
    model.set_epoch(1)
    before_full = model(views)
    model(crops(2, seed=2) + crops(2, size=16, seed=3))
    assert bool(model.queue[0, -1].any())  # two batches filled it
    with_queue = model(views)
    assert not torch.allclose(before_full, with_queue)  # the queued embeddings change the codes
    loss = model(views).mean()
    loss.backward()
    for step in range(3):
        model.prototypes.weight.grad = torch.ones_like(model.prototypes.weight)
        model.before_optimizer_step(epoch=1)
        assert (model.prototypes.weight.grad is None) == (step < 2)


def test_guard_skips_non_finite_steps_and_fails_after_patience():
    guard = NonFiniteGuard(patience=3)
    model = small("simclr")
    x1, x2 = crops()
    x1[0] = float("nan")  # one pair's features poison every in-batch loss
    loss = model([x1, x2]).mean()
    loss.backward()
    params = list(model.parameters())
    assert not guard.ok(loss, torch.ones(B), params) and guard.skipped == 1
    assert not guard.ok(torch.tensor(1.0), torch.tensor([1.0, float("nan")]))
    assert guard.ok(torch.tensor(1.0), torch.ones(B)) and guard.in_a_row == 0
    bad = torch.tensor(float("inf"))
    assert not guard.ok(bad) and not guard.ok(bad)
    with pytest.raises(FloatingPointError, match="3 steps in a row"):
        guard.ok(bad)
    assert guard.skipped == 5


def test_losses_are_fp32_under_bf16_autocast_and_channels_last_gives_the_same_loss():
    torch.manual_seed(0)
    model = small("byol").eval()
    x1, x2 = crops()
    reference = model([x1, x2])
    model.channels_last()
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    last = [x.contiguous(memory_format=torch.channels_last) for x in (x1, x2)]
    torch.testing.assert_close(model(last), reference, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        per_sample = model(last)
    assert per_sample.dtype == torch.float32 and torch.isfinite(per_sample).all()


@pytest.mark.parametrize("method", METHODS)
def test_every_methods_loss_is_finite_fp32_under_bf16_autocast(method):
    torch.manual_seed(0)
    model = small(method)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        per_sample = model(crops())
    assert per_sample.shape == (B,) and per_sample.dtype == torch.float32 and torch.isfinite(per_sample).all()
