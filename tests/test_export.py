"""Exported backbones load strictly into torchvision, timm and (by key set) detectron2, with the same features."""

from __future__ import annotations

import json
import pickle

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file

from trainer.backbones import backbone
from trainer.eval.backbone import BACKBONE_PREFIX, load_backbone
from trainer.eval.cli import main
from trainer.export import detectron2_key


def detectron2_r50_keys() -> set[str]:
    """The parameters and buffers of detectron2's ResNet-50 backbone (`build_resnet_backbone`, depth 50, FrozenBN):
    a BasicStem (`stem.conv1` + norm) and stages res2–res5 of 3, 4, 6, 3 BottleneckBlocks, each with conv1–conv3
    (+ norm), the first block of each stage with a projection `shortcut` (+ norm)."""
    norm = ("weight", "bias", "running_mean", "running_var")
    keys = {"stem.conv1.weight", *(f"stem.conv1.norm.{n}" for n in norm)}
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        for b in range(blocks):
            convs = ["conv1", "conv2", "conv3"] + (["shortcut"] if b == 0 else [])
            for conv in convs:
                keys |= {f"res{stage}.{b}.{conv}.weight", *(f"res{stage}.{b}.{conv}.norm.{n}" for n in norm)}
    return keys


def test_detectron2_key_conversion_by_hand():
    assert detectron2_key("conv1.weight") == "stem.conv1.weight"
    assert detectron2_key("bn1.running_var") == "stem.conv1.norm.running_var"
    assert detectron2_key("layer1.0.bn3.bias") == "res2.0.conv3.norm.bias"
    assert detectron2_key("layer4.0.downsample.0.weight") == "res5.0.shortcut.weight"
    assert detectron2_key("layer3.0.downsample.1.running_mean") == "res4.0.shortcut.norm.running_mean"


def _checkpoint(tmp_path, arch: str):
    torch.manual_seed(1)
    net, _ = backbone(arch, 64)
    for m in net.modules():  # non-trivial BN statistics (ResNets), so a missed buffer shows in the features
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"{arch}.pt"
    torch.save({"model": {BACKBONE_PREFIX + k: v for k, v in net.state_dict().items()}, "epoch": 9,
                "args": {"method": "mocov2", "arch": arch, "image_size": 64}}, path)
    return path


@pytest.mark.parametrize("arch", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_torchvision_and_timm_load_strictly_with_the_same_features(arch, tmp_path):
    ckpt = _checkpoint(tmp_path, arch)
    main(["export", "--checkpoint", str(ckpt), "--format", "torchvision", "--out", str(tmp_path / "tv.pth")])
    main(["export", "--checkpoint", str(ckpt), "--format", "timm", "--out", str(tmp_path / "timm.pth")])
    reference = load_backbone(str(ckpt)).net.eval()
    tv = getattr(torchvision.models, arch)(weights=None)
    tv.fc = torch.nn.Identity()
    tv.load_state_dict(torch.load(tmp_path / "tv.pth"), strict=True)
    tm = timm.create_model(arch, pretrained=False, num_classes=0)
    tm.load_state_dict(torch.load(tmp_path / "timm.pth"), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = reference(x)
        for model in (tv.eval(), tm.eval()):
            assert (model(x) - want).abs().max() < 1e-5


def test_detectron2_file_has_exactly_the_r50_keys(tmp_path):
    ckpt = _checkpoint(tmp_path, "resnet50")
    main(["export", "--checkpoint", str(ckpt), "--format", "detectron2", "--out", str(tmp_path / "d2.pkl")])
    with open(tmp_path / "d2.pkl", "rb") as f:
        doc = pickle.load(f)
    assert doc["__author__"] and doc["matching_heuristics"] is True
    assert set(doc["model"]) == detectron2_r50_keys()
    state = load_backbone(str(ckpt)).net.state_dict()
    assert (doc["model"]["res3.0.shortcut.norm.running_var"] == state["layer2.0.downsample.1.running_var"].numpy()).all()


def test_safetensors_with_config(tmp_path):
    ckpt = _checkpoint(tmp_path, "resnet18")
    main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--out", str(tmp_path / "hub")])
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config | {"source_checkpoint": None} == config | {
        "arch": "resnet18", "method": "mocov2", "epochs": 10, "image_size": 64, "timm_name": "resnet18",
        "source_checkpoint": None}
    tm = timm.create_model(config["timm_name"], pretrained=False, num_classes=0)
    tm.load_state_dict(load_file(tmp_path / "hub" / "model.safetensors"), strict=True)


@pytest.mark.slow
def test_vit_exports_under_timm_names(tmp_path):
    ckpt = _checkpoint(tmp_path, "vit_small")
    main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--out", str(tmp_path / "hub")])
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["timm_name"] == "vit_small_patch16_224"
    vit = timm.create_model(config["timm_name"], pretrained=False, num_classes=0, img_size=config["image_size"],
                            **config["timm_kwargs"])
    vit.load_state_dict(load_file(tmp_path / "hub" / "model.safetensors"), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (vit.eval()(x) - load_backbone(str(ckpt)).net.eval()(x)).abs().max() < 1e-5


def test_every_format_gets_the_same_file_mode(tmp_path):
    ckpt = _checkpoint(tmp_path, "resnet18")
    outs = {"torchvision": "tv.pth", "timm": "timm.pth", "detectron2": "d2.pkl", "safetensors": "hub"}
    for fmt, out in outs.items():
        main(["export", "--checkpoint", str(ckpt), "--format", fmt, "--out", str(tmp_path / out)])
    files = [tmp_path / "tv.pth", tmp_path / "timm.pth", tmp_path / "d2.pkl", tmp_path / "hub/model.safetensors",
             tmp_path / "hub/config.json"]
    modes = {f.name: oct(f.stat().st_mode & 0o777) for f in files}
    assert len(set(modes.values())) == 1, modes


def _method_checkpoint(tmp_path, stem: str, width: int):
    """A trainer checkpoint (method_config + state) of a ResNet-18 with the given stem and base width."""
    from trainer.methods import build_method, method_config

    torch.manual_seed(2)
    model = build_method(method_config("simclr", "resnet18", 32, stem=stem, width=width))
    path = tmp_path / f"{stem}{width}.pt"
    torch.save({"model": model.state_dict(), "epoch": 0, "method_config": model.config.to_dict()}, path)
    return path


def test_small_stem_loads_into_torchvision_and_timm_given_the_same_stem(tmp_path, capsys):
    ckpt = _method_checkpoint(tmp_path, "small", 64)
    main(["export", "--checkpoint", str(ckpt), "--format", "torchvision", "--out", str(tmp_path / "tv.pth")])
    assert "model.maxpool = torch.nn.Identity()" in capsys.readouterr().out
    reference = load_backbone(str(ckpt)).net.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tv = torchvision.models.resnet18(weights=None)
    tm = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with pytest.raises(RuntimeError):  # the stock 7×7 stem cannot take the 3×3 weights
        tv.load_state_dict(torch.load(tmp_path / "tv.pth"), strict=False)
    tv.fc = torch.nn.Identity()
    for model in (tv, tm):  # the recipe printed by the export
        model.conv1 = torch.nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
        model.load_state_dict(torch.load(tmp_path / "tv.pth"), strict=True)
        with torch.no_grad():
            assert (model.eval()(x) - reference(x)).abs().max() < 1e-5


def test_formats_that_cannot_hold_the_backbone_refuse_it(tmp_path):
    small = _method_checkpoint(tmp_path, "small", 64)
    with pytest.raises(SystemExit, match="BasicStem"):
        main(["export", "--checkpoint", str(small), "--format", "detectron2", "--out", str(tmp_path / "d2.pkl")])
    narrow = _method_checkpoint(tmp_path, "small", 16)
    for fmt in ("torchvision", "timm", "detectron2"):
        with pytest.raises(SystemExit, match="width 16"):
            main(["export", "--checkpoint", str(narrow), "--format", fmt, "--out", str(tmp_path / f"{fmt}.out")])
    assert not list(tmp_path.glob("*.out")) and not (tmp_path / "d2.pkl").exists()
    main(["export", "--checkpoint", str(narrow), "--format", "safetensors", "--out", str(tmp_path / "hub")])
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert (config["stem"], config["width"]) == ("small", 16)
    rebuilt, _ = backbone(config["arch"], config["image_size"], stem=config["stem"], width=config["width"])
    rebuilt.load_state_dict(load_file(tmp_path / "hub" / "model.safetensors"), strict=True)
