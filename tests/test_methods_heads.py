"""Heads, backbone initialisation and optimizer groups of each method match the original code, layer by layer.

Sources: facebookresearch/moco (v2 `--mlp`), moco-v3 builder.py and vits.py, simsiam builder.py,
swav resnet50.py, google-research/simclr `projection_head`, deepmind byol networks (haiku MLP).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.backbones import sincos_2d
from trainer.methods import build_method, method_config
from trainer.optim import build_optimizer, build_schedule

W = 512  # resnet18's width
L, R = "linear", ("relu",)


def lin(a: int, b: int, bias: bool) -> tuple:
    return (L, a, b, bias)


def bn(n: int, kind: str = "affine") -> tuple:
    return ("bn", n, kind)


def describe(seq: nn.Module) -> list[tuple]:
    """(kind, widths, bias) per layer."""
    out = []
    for m in seq:
        if isinstance(m, nn.Linear):
            out.append(lin(m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            kind = "plain" if not m.affine else "affine" if m.bias.requires_grad else "scale"
            out.append(bn(m.num_features, kind))
        elif isinstance(m, nn.ReLU):
            out.append(R)
        else:
            raise AssertionError(f"unexpected layer {m}")
    return out


HEADS = {
    ("mocov2", "resnet18"): ([lin(W, W, True), R, lin(W, 128, True)], None),
    ("mocov3", "resnet18"): ([lin(W, 4096, False), bn(4096), R, lin(4096, 256, False), bn(256, "plain")],
                             [lin(256, 4096, False), bn(4096), R, lin(4096, 256, False)]),
    ("mocov3", "vit_small"): ([lin(384, 4096, False), bn(4096), R, lin(4096, 4096, False), bn(4096), R,
                               lin(4096, 256, False), bn(256, "plain")],
                              [lin(256, 4096, False), bn(4096), R, lin(4096, 256, False), bn(256, "plain")]),
    ("byol", "resnet18"): ([lin(W, 4096, True), bn(4096), R, lin(4096, 256, True)],
                           [lin(256, 4096, True), bn(4096), R, lin(4096, 256, True)]),
    ("simsiam", "resnet18"): ([lin(W, 2048, False), bn(2048), R, lin(2048, 2048, False), bn(2048), R,
                               lin(2048, 2048, False), bn(2048, "plain")],
                              [lin(2048, 512, False), bn(512), R, lin(512, 2048, True)]),
    ("swav", "resnet18"): ([lin(W, 2048, True), bn(2048), R, lin(2048, 128, True)], None),
    ("simclr", "resnet18"): ([lin(W, W, False), bn(W), R, lin(W, 128, False), bn(128, "scale")], None),
}
ZERO_INIT_RESIDUAL = {"mocov2": False, "mocov3": True, "byol": True, "simsiam": True, "swav": False, "simclr": True}


@pytest.mark.parametrize("method, arch", list(HEADS))
def test_heads_match_the_originals(method, arch):
    model = build_method(method_config(method, arch, 32, queue_size=16))
    projector, predictor = HEADS[(method, arch)]
    assert describe(model.online[1]) == projector
    assert (describe(model.predictor) if hasattr(model, "predictor") else None) == predictor
    if arch.startswith("resnet"):
        gammas = model.backbone.layer1[0].bn2.weight
        assert bool((gammas == 0).all()) == ZERO_INIT_RESIDUAL[method]
    if method == "swav":
        assert (model.prototypes.in_features, model.prototypes.out_features, model.prototypes.bias) == (128, 3000, None)


def test_mocov3_vit_has_frozen_patch_projection_and_fixed_sincos_positions():
    vit = build_method(method_config("mocov3", "vit_small", 32)).backbone
    assert not vit.patch_embed.proj.weight.requires_grad and not vit.pos_embed.requires_grad
    assert vit.blocks[0].attn.num_heads == 12  # moco-v3's vit_small
    torch.testing.assert_close(vit.pos_embed[0, 1:], sincos_2d(2, 2, 384))
    assert float(vit.pos_embed[0, 0].abs().sum()) == 0.0  # class token


def test_sincos_2d_by_hand():
    # dim 4 → one frequency ω = 1: row (r, c) = [sin c, cos c, sin r, cos r]
    table = sincos_2d(2, 2, 4)
    s1, c1 = torch.sin(torch.tensor(1.0)), torch.cos(torch.tensor(1.0))
    expected = torch.tensor([[0.0, 1.0, 0.0, 1.0], [s1, c1, 0.0, 1.0], [0.0, 1.0, s1, c1], [s1, c1, s1, c1]])
    torch.testing.assert_close(table, expected)


@pytest.mark.parametrize("method, excluded", [("simclr", True), ("byol", True), ("mocov3", True),
                                              ("mocov2", False), ("simsiam", False), ("swav", False)])
def test_weight_decay_exclusions_as_the_originals(method, excluded):
    model = build_method(method_config(method, "resnet18", 32, queue_size=16, hidden=32, pred_hidden=32))
    config = model.config
    optimizer = build_optimizer(model, config, None, 256)
    decay = {id(p): (g["weight_decay"], g.get("always_adapt", True)) for g in optimizer.param_groups
             for p in g["params"]}
    for p in model.parameters():
        if p.requires_grad:  # biases and norm parameters: no decay and no LARS adaptation where excluded
            skip = excluded and p.ndim <= 1
            assert decay[id(p)] == ((0.0, False) if skip else (config.weight_decay, True))
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(p.requires_grad for p in model.parameters())


def test_simsiam_predictor_keeps_its_initial_lr():
    model = build_method(method_config("simsiam", "resnet18", 32, hidden=32, pred_hidden=16))
    optimizer = build_optimizer(model, model.config, None, 512)
    schedule = build_schedule(optimizer, 0, 10)
    for _ in range(5):
        optimizer.step()
        schedule.step()
    predictor = {id(p) for p in model.predictor.parameters()}
    lrs = {all(id(p) in predictor for p in g["params"]): g["lr"] for g in optimizer.param_groups}
    assert lrs[True] == pytest.approx(0.05 * 2) and lrs[False] < 0.05 * 2 * 0.6
