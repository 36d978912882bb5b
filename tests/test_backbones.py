"""ResNet stems and widths: the small-image stem (3×3 stride 1, no max-pool) and narrow base widths."""

from __future__ import annotations

import pytest
import torch
import torchvision

from trainer.backbones import backbone
from trainer.methods import build_method, method_config


def _stages(net: torch.nn.Module, size: int) -> list[tuple[int, ...]]:
    """The output shape [C, H, W] after the stem and after each stage."""
    shapes, x = [], torch.zeros(1, 3, size, size)
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    shapes.append(tuple(x.shape[1:]))
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    return shapes


def test_small_stem_keeps_the_full_resolution_into_the_first_stage():
    net, dim = backbone("resnet18", 32, stem="small")
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(net.maxpool, torch.nn.Identity) and dim == 512
    assert _stages(net.eval(), 32) == [(64, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    imagenet, _ = backbone("resnet18", 32)
    assert _stages(imagenet.eval(), 32)[0] == (64, 8, 8)  # 7×7 stride 2 and the max-pool: a quarter of the side
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_small_stem_features_depend_on_every_pixel():
    torch.manual_seed(0)
    net, _ = backbone("resnet18", 32, zero_init_residual=True, stem="small")
    x = torch.randn(4, 3, 32, 32)
    blanked = x.clone()
    blanked[:, :, 16:, 16:] = 0  # the bottom-right quarter
    with torch.no_grad():
        assert (net.eval()(x) - net(blanked)).abs().max() > 1e-3


@pytest.mark.parametrize("arch,dim", [("resnet18", 256), ("resnet50", 1024)])
def test_narrow_resnet_scales_every_stage_and_keeps_torchvision_keys(arch, dim):
    net, width = backbone(arch, 32, stem="small", width=32)
    stock = getattr(torchvision.models, arch)(weights=None)
    assert width == dim and net(torch.zeros(2, 3, 32, 32)).shape == (2, dim)
    assert set(net.state_dict()) == set(stock.state_dict()) - {"fc.weight", "fc.bias"}
    assert net.conv1.out_channels == 32 and net.layer4[-1].conv1.in_channels == dim


def test_bad_stem_or_width_is_refused():
    with pytest.raises(ValueError, match="stem"):
        backbone("resnet18", 32, stem="tiny")
    with pytest.raises(ValueError, match="multiple of 8"):
        backbone("resnet18", 32, width=20)
    with pytest.raises(ValueError, match="ResNets"):
        backbone("vit_small", 32, stem="small")


def test_method_config_records_the_stem_and_rebuilds_it():
    config = method_config("byol", "resnet18", 32, stem="small", width=16)
    model = build_method(config.from_dict(config.to_dict()))
    assert isinstance(model.backbone.maxpool, torch.nn.Identity) and model.backbone.conv1.out_channels == 16


def test_trainer_stem_flag_reaches_the_method_config(tmp_path):
    from trainer.config import parse_args

    base = ["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--method", "simclr", "--arch", "resnet18"]
    assert parse_args([*base, "--stem", "small"]).method_config().stem == "small"
    assert parse_args(base).method_config().stem == "imagenet"
