"""Image sources given as relative or absolute paths name the same images, labels and relative paths."""

from __future__ import annotations

import pytest

from genview.dataset_gen import relative_paths
from genview.errors import NoImagesError
from genview.image_files import list_images, require_images, source_root
from harness.images import image_folder
from trainer.data import image_set
from trainer.eval.data import labelled_folder


@pytest.mark.parametrize("spelling", ["data", "data/", "./data", "ABSOLUTE"])
def test_relative_and_absolute_folders_are_equivalent(tmp_path, monkeypatch, spelling):
    image_folder(tmp_path / "data", classes=2, per_class=2)
    monkeypatch.chdir(tmp_path)
    source = str(tmp_path / "data") if spelling == "ABSOLUTE" else spelling
    assert list_images(source) == list_images(str(tmp_path / "data"))
    assert source_root(source) == str(tmp_path / "data")
    images = image_set(source)
    assert images.classes == ["class0", "class1"] and images.labels == [0, 0, 1, 1]  # the kNN monitor's labels
    assert relative_paths(source)[1] == ["class0/0.png", "class0/1.png", "class1/0.png", "class1/1.png"]
    assert labelled_folder(source, ["class0", "class1"]).relative == relative_paths(source)[1]


def test_missing_and_empty_sources_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoImagesError, match="does not exist"):
        require_images(str(tmp_path / "missing"))
    with pytest.raises(NoImagesError, match="no images"):
        require_images(str(tmp_path / "empty"))
