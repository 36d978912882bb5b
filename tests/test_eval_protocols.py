"""Evaluation protocols on a tiny labelled set: linear probe, kNN, semi-supervised fine-tuning, subsets."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.images import png_bytes
from trainer.backbones import backbone
from trainer.data import EvalDataset
from trainer.eval.backbone import BACKBONE_PREFIX, load_backbone
from trainer.eval.classify import Classifier, fit
from trainer.eval.cli import main
from trainer.eval.data import labelled_folder, train_transform
from trainer.eval.subsets import balanced_subset, read_subset, write_subset


def _folder(root: Path, per_class: dict[str, int], seed: int) -> Path:
    for c, (name, count) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{name}_{i}.png").write_bytes(png_bytes(40, 36, seed=seed + 100 * c + i))
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("labelled")
    return (_folder(base / "train", {"cat": 6, "dog": 6}, seed=0),
            _folder(base / "val", {"cat": 2, "dog": 2}, seed=50))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as the trainer writes it (run args + the method state dict, backbone under `online.0.`)."""
    torch.manual_seed(0)
    net, _ = backbone("resnet18", 32)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    torch.save({"model": {BACKBONE_PREFIX + k: v for k, v in net.state_dict().items()}, "epoch": 4,
                "args": {"method": "simclr", "arch": "resnet18", "image_size": 32}}, path)
    return path


def test_linear_probe_changes_only_the_head(folders):
    torch.manual_seed(0)
    net, width = backbone("resnet18", 32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = Classifier(net, width, 2, frozen=True)
    head_before = model.head.weight.detach().clone()
    data = EvalDataset(labelled_folder(str(folders[0])), train_transform(32))
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.5, momentum=0.9)
    losses = fit(model, optimizer, data, epochs=2, batch_size=4, device=torch.device("cpu"), workers=0, seed=0)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    after = net.state_dict()
    assert before.keys() == after.keys()
    for key in before:  # weights and BN running statistics (and num_batches_tracked) bit-identical
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(head_before, model.head.weight)


def test_fine_tuning_changes_the_backbone(folders):
    torch.manual_seed(0)
    net, width = backbone("resnet18", 32)
    before = net.layer1[0].conv1.weight.detach().clone()
    model = Classifier(net, width, 2, frozen=False)
    data = EvalDataset(labelled_folder(str(folders[0])), train_transform(32))
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data, 1, 4, torch.device("cpu"), 0, 0)
    assert not torch.equal(before, net.layer1[0].conv1.weight)


def test_checkpoint_backbone_is_loaded(checkpoint):
    loaded = load_backbone(str(checkpoint))
    torch.manual_seed(0)
    expected, _ = backbone("resnet18", 32)
    assert (loaded.arch, loaded.image_size, loaded.method, loaded.epochs) == ("resnet18", 32, "simclr", 5)
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[key], value), key


def test_method_config_checkpoint_rebuilds_the_method(tmp_path):
    from trainer.methods import build_method, method_config

    config = method_config("simsiam", "resnet18", 32)
    method = build_method(config)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": method.state_dict(), "epoch": 1, "method_config": config.to_dict()}, path)
    loaded = load_backbone(str(path))
    assert (loaded.arch, loaded.image_size, loaded.method, loaded.epochs) == ("resnet18", 32, "simsiam", 2)
    for key, value in method.backbone.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[key], value), key


@pytest.mark.parametrize("protocol,extra", [
    ("linear", ["--epochs", "2"]),
    ("knn", ["--k", "3", "20"]),
    ("semi", ["--fraction", "0.5", "--epochs", "1"]),
])
def test_protocol_writes_finite_accuracies(protocol, extra, folders, checkpoint, tmp_path):
    train, val = folders
    main(["eval", protocol, "--checkpoint", str(checkpoint), "--train", str(train), "--val", str(val),
          "--out", str(tmp_path), "--batch-size", "4", "--workers", "0", "--device", "cpu", *extra])
    doc = json.loads((tmp_path / f"eval_{protocol}.json").read_text())
    assert doc["protocol"] == protocol and 0.0 <= doc["top1"] <= 1.0 and doc["val_images"] == 4
    assert doc["arch"] == "resnet18" and doc["pretrain_epochs"] == 5 and doc["checkpoint"] == str(checkpoint)
    if protocol == "knn":
        assert set(doc["knn"]) == {"3", "20"} and doc["top1"] == doc["knn"]["3"]
    else:
        assert doc["top1"] <= doc["top5"] == 1.0  # two classes: the top-5 always holds the label
    if protocol == "semi":
        assert doc["train_images"] == 6
        assert len((tmp_path / "semi_subset.txt").read_text().splitlines()) == 6


@pytest.mark.slow
def test_torchrun_two_ranks(folders, checkpoint, tmp_path):
    """kNN under two gloo ranks equals one process; the linear probe runs under torchrun and writes its JSON."""
    train, val = folders
    common = ["--checkpoint", str(checkpoint), "--train", str(train), "--val", str(val), "--batch-size", "4",
              "--workers", "0", "--device", "cpu"]
    main(["eval", "knn", *common, "--k", "2", "--out", str(tmp_path / "one")])
    for protocol in ("knn", "linear"):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                               "-m", "trainer.eval", "eval", protocol, *common, "--out", str(tmp_path / "two"),
                               "--epochs" if protocol == "linear" else "--k", "2"],
                              cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "eval_knn.json").read_text())
    two = json.loads((tmp_path / "two" / "eval_knn.json").read_text())
    assert two["config"]["world_size"] == 2 and two["val_images"] == 4
    assert two["knn"] == pytest.approx(one["knn"])
    linear = json.loads((tmp_path / "two" / "eval_linear.json").read_text())
    assert linear["config"]["world_size"] == 2 and 0.0 <= linear["top1"] <= linear["top5"] <= 1.0


def test_balanced_subset_is_deterministic_and_balanced(tmp_path):
    images = labelled_folder(str(_folder(tmp_path / "t", {"a": 100, "b": 200, "c": 50}, seed=0)))
    first = balanced_subset(images, 0.1, seed=0)
    assert first == balanced_subset(images, 0.1, seed=0)
    assert first != balanced_subset(images, 0.1, seed=1)
    counts = [sum(images.labels[i] == c for i in first) for c in range(3)]
    assert counts == [10, 20, 5]
    assert [sum(images.labels[i] == c for i in balanced_subset(images, 0.001)) for c in range(3)] == [1, 1, 1]
    reordered = images.subset(list(range(len(images.paths)))[::-1])  # listing order does not matter
    assert [reordered.relative[i] for i in balanced_subset(reordered, 0.1)] == [images.relative[i] for i in first]


def test_subset_file_round_trips_and_is_honoured_exactly(tmp_path):
    images = labelled_folder(str(_folder(tmp_path / "t", {"a": 20, "b": 20}, seed=0)))
    chosen = balanced_subset(images, 0.25)
    write_subset(images, chosen, tmp_path / "list.txt")
    assert read_subset(images, str(tmp_path / "list.txt")) == chosen
    (tmp_path / "names.txt").write_text("a_3.png\nb/b_7.png\n\nb_0.png\n")  # bare names as the ImageNet lists
    picked = read_subset(images, str(tmp_path / "names.txt"))
    assert sorted(images.relative[i] for i in picked) == ["a/a_3.png", "b/b_0.png", "b/b_7.png"]
    (tmp_path / "bad.txt").write_text("a_3.png\nnot_there.png\n")
    with pytest.raises(SystemExit, match="1 names match no training image"):
        read_subset(images, str(tmp_path / "bad.txt"))


@pytest.mark.parametrize("command", [["eval"], ["eval", "linear"], ["eval", "knn"], ["eval", "semi"], ["export"]])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out
