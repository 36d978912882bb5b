"""Each SSL method's per-sample loss, how the quality weights scale its gradient (Eq. 14), and the method
config that rebuilds a method from a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from genview.method.losses import weighted_loss
from trainer.methods import METHODS, MethodConfig, build_method, method_config, recipe_for

B = 6
SMALL = {"hidden": 64, "pred_hidden": 32, "dim": 16, "prototypes": 20, "queue_size": 32}


def small(method: str, arch: str = "resnet18", **extra) -> MethodConfig:
    """A method at 32 px with narrow heads (fast on CPU)."""
    return method_config(method, arch, 32, **{**SMALL, **extra})


@pytest.mark.parametrize("method", METHODS)
def test_weights_scale_each_pairs_gradient(method):
    torch.manual_seed(0)
    model = build_method(small(method))
    crops = [torch.randn(B, 3, 32, 32), torch.randn(B, 3, 32, 32)]
    per_sample = model(crops)
    assert per_sample.shape == (B,) and per_sample.dtype == torch.float32 and torch.isfinite(per_sample).all()
    assert weighted_loss(per_sample, torch.ones(B)).item() == pytest.approx(per_sample.mean().item())

    params = [p for p in model.parameters() if p.requires_grad]
    w = torch.tensor([3.0] + [1.0] * (B - 1))
    grad = lambda loss: torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)  # noqa: E731
    weighted, mean, first = grad(weighted_loss(per_sample, w)), grad(per_sample.mean()), grad(per_sample[0])
    # float32 sums run in another order: compare relative to the largest gradient entry of the model
    scale = max(float(g.abs().max()) for g in weighted if g is not None)
    checked = 0
    for g_w, g_mean, g_first in zip(weighted, mean, first):
        if g_w is None:
            continue
        # L_w = mean + (w_0 - 1)/B · L_0: pair 0's share of the gradient is three times its unweighted share
        torch.testing.assert_close(g_w / scale, (g_mean + (2.0 / B) * g_first) / scale, rtol=0, atol=1e-4)
        checked += 1
    assert checked > 10
    assert any(float(g.abs().sum()) > 0 for g in first if g is not None)


def test_config_round_trip_rebuilds_a_mocov2_with_its_queue_size(tmp_path):
    config = method_config("mocov2", "resnet18", 32, queue_size=96, hidden=64, temperature=0.3)
    trained = build_method(config)
    torch.save({"model": trained.state_dict(), "method_config": config.to_dict()}, tmp_path / "ckpt.pt")

    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    restored_config = MethodConfig.from_dict(json.loads(json.dumps(ckpt["method_config"])))
    assert restored_config == config
    restored = build_method(restored_config)
    restored.load_state_dict(ckpt["model"])  # a default queue (65,536) would not load
    assert restored.queue.shape == (96, config.dim)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(restored.eval().backbone(x), trained.eval().backbone(x))


def test_config_rejects_unknown_options():
    with pytest.raises(ValueError):
        MethodConfig.from_dict({**small("simclr").to_dict(), "queue_sise": 5})
    with pytest.raises(ValueError):
        method_config("dino", "resnet18")


@pytest.mark.parametrize("epochs, lr, wd, momentum", [(100, 0.6, 1e-6, 0.99), (300, 0.3, 1e-6, 0.99),
                                                      (1000, 0.3, 1.5e-6, 0.996)])
def test_mocov3_resnet_recipe_follows_the_epoch_budget(epochs, lr, wd, momentum):
    """moco-v3 CONFIG.md: 100 ep lr .6; 300 ep lr .3; 1000 ep lr .3, wd 1.5e-6, m .996; crop-min .2."""
    config = recipe_for("mocov3", "resnet50", epochs)
    assert (config.base_lr, config.weight_decay, config.momentum, config.optimizer) == (lr, wd, momentum, "lars")
    assert config.crops.t.scale == (0.2, 1.0)


def test_vit_recipe_is_adamw_with_mocov3_vit_backbone():
    config = recipe_for("mocov3", "vit_small")
    assert (config.optimizer, config.base_lr, config.weight_decay, config.warmup_epochs, config.temperature) == (
        "adamw", 1.5e-4, 0.1, 40, 0.2)
    assert config.mocov3_vit and config.crops.t.scale == (0.08, 1.0)


def test_mocov2_shuffles_bn_instead_of_syncing_it():
    assert not recipe_for("mocov2", "resnet50").sync_bn
    assert all(recipe_for(m, "resnet50").sync_bn for m in ("mocov3", "byol", "simsiam", "swav", "simclr"))
