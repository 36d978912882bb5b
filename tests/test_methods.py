"""Each SSL method's per-sample loss, and how the quality weights scale its gradient (Eq. 14)."""

from __future__ import annotations

import pytest
import torch

from genview.method.losses import weighted_loss
from trainer.methods import METHODS, build_method

B = 6


@pytest.mark.parametrize("method", METHODS)
def test_weights_scale_each_pairs_gradient(method):
    torch.manual_seed(0)
    extra = {"queue_size": 32} if method == "mocov2" else {}
    model = build_method(method, "resnet18", 32, **extra)
    x1, x2 = torch.randn(B, 3, 32, 32), torch.randn(B, 3, 32, 32)
    per_sample = model(x1, x2)
    assert per_sample.shape == (B,) and torch.isfinite(per_sample).all()
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
