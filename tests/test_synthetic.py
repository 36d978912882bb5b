"""The procedural shapes set: reproducible, masks that mark the object, and calibrated so that neither raw pixels
nor a random network find the class (kNN ≤ 0.40 on a fixed seed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from genview.synthetic import CLASSES, SyntheticSpec, draw_image, make_split
from genview.training.augment import normalise
from services.cli import main as genview_main
from trainer.backbones import backbone
from trainer.evaluate import knn_topk

BOUND = 0.40


def _knn(train: torch.Tensor, train_labels, val: torch.Tensor, val_labels) -> float:
    return knn_topk(F.normalize(train, dim=1), torch.from_numpy(train_labels), F.normalize(val, dim=1),
                    torch.from_numpy(val_labels), ks=(20,))[20]


def test_images_are_a_function_of_seed_split_and_index():
    a, la, ma = draw_image(3, "train", 7)
    b, lb, mb = draw_image(3, "train", 7)
    c, _, _ = draw_image(3, "val", 7)
    assert np.array_equal(a, b) and la == lb and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and ma.shape == (32, 32) and ma.dtype == bool


def test_masks_cover_the_object_and_classes_are_balanced():
    split = make_split(0, "train", 200)
    share = split.masks.mean(axis=(1, 2))
    assert share.min() > 0.03 and share.max() < 0.8  # every image has a visible object, none fills the frame
    counts = np.bincount(split.labels, minlength=len(CLASSES))
    assert counts.min() >= 10  # 200 draws, 10 classes


@pytest.mark.slow
def test_calibration_pixels_and_random_init_knn_are_at_most_040():
    train, val = make_split(0, "train", 400), make_split(0, "val", 200)
    x, xv = torch.from_numpy(train.images), torch.from_numpy(val.images)
    assert _knn(normalise(x).flatten(1), train.labels, normalise(xv).flatten(1), val.labels) <= BOUND
    torch.manual_seed(0)
    for width in (16, 64):  # the CPU benchmark's network and the full ResNet-18, both with the small stem
        net, _ = backbone("resnet18", 32, stem="small", width=width)
        with torch.no_grad():
            feats = [net.eval()(normalise(t)) for t in (x, xv)]
        assert _knn(feats[0], train.labels, feats[1], val.labels) <= BOUND


def test_make_synthetic_writes_an_image_folder_with_masks(tmp_path):
    with pytest.raises(SystemExit) as done:
        genview_main(["make-synthetic", "--out", str(tmp_path), "--train", "12", "--val", "4", "--size", "24"])
    assert done.value.code == 0
    images = sorted((tmp_path / "train").glob("*/*.png"))
    assert len(images) == 12 and len(list((tmp_path / "val").glob("*/*.png"))) == 4
    assert {p.parent.name for p in images} <= set(CLASSES)
    for path in images:
        mask = tmp_path / "masks" / "train" / path.parent.name / path.name
        assert Image.open(path).size == (24, 24) and Image.open(mask).mode == "L"
    first = np.asarray(Image.open(images[0]))
    index = int(images[0].stem)
    assert np.array_equal(first, draw_image(0, "train", index, SyntheticSpec(size=24))[0])
