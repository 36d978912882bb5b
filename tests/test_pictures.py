"""Pictures of training (trainer/pictures.py): histograms, the generated fraction and the pair grid, in TensorBoard's
event file and as PNG files in the run folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from genview.method.quality import PairQuality
from genview.settings import get_settings
from genview.store import ObjectStore, sha256_hex
from harness.images import image_folder, png_bytes
from trainer import run as trainer_run
from trainer.pictures import EpochPictures

LEVELS = [100, 200, 300, 400, 500, 600, 700, 800]


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"histograms": 0, "images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_collector_writes_histograms_fraction_and_pair_grid(tmp_path):
    pictures = EpochPictures(extremes=2)
    generator = torch.Generator().manual_seed(0)
    crops = [torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=generator) for _ in range(2)]
    w = torch.tensor([0.5, 1.5, 1.0, 0.2, 2.0, 1.1, 0.9, 0.8])
    generated = torch.tensor([True] * 6 + [False] * 2)
    q = torch.linspace(-1, 1, 8)
    pictures.add_batch(crops[0], crops[1], w, generated, LEVELS[:6], PairQuality(q + 1, q, q))
    writer = SummaryWriter(tmp_path / "tb")
    paths = pictures.write(3, writer, tmp_path)
    writer.close()

    tb = events(tmp_path / "tb")
    assert {"pictures/quality_weight", "pictures/noise_level"} <= set(tb.Tags()["histograms"])
    weights = tb.Histograms("pictures/quality_weight")[0]
    assert weights.step == 3 and weights.histogram_value.num == 8 and weights.histogram_value.max == 2.0
    assert tb.Histograms("pictures/noise_level")[0].histogram_value.sum == sum(LEVELS[:6])
    assert tb.Scalars("pictures/generated_fraction")[0].value == 0.75
    grid = tb.Images("pictures/pairs")[0]
    assert grid.step == 3 and grid.height == 16 + 4 * (96 + 4) + 4  # two highest and two lowest pairs
    names = sorted(p.name for p in paths)
    assert names == [f"epoch0003-{n}.png" for n in ("generated_fraction", "noise_levels", "pairs", "quality_weights")]
    assert all(Image.open(p).getextrema() != ((255, 255), (255, 255), (255, 255)) for p in paths)
    assert pictures.pairs == [] and pictures.samples == 0  # reset for the next epoch


def test_a_missing_logger_package_is_one_line_and_exit_2(capsys):
    for name in ("wandb", "mlflow"):
        if importlib.util.find_spec(name) is not None:
            continue  # installed: nothing to refuse
        with pytest.raises(SystemExit) as done:
            trainer_run.parse_args(["--data", "x", "--out", "y", "--logger", name])
        assert done.value.code == 2
        assert f"{name} is not installed: pip install 'genview[{name}]'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_run_writes_pictures_of_what_it_trained_on(tmp_path, model_cache, monkeypatch):
    """A real run: views pre-generated into a store with their noise levels, pairs scored in-process (tiny scorer)."""
    images = image_folder(tmp_path / "data", classes=2, per_class=4)
    store_url = f"file://{tmp_path / 'store'}"
    for key, value in {"STORE_URL": store_url, "SCORER_MODEL": "tiny", "MODEL_CACHE": model_cache}.items():
        monkeypatch.setenv(f"GENVIEW_{key}", value)
    get_settings.cache_clear()
    store, rows = ObjectStore(store_url), []
    for i, path in enumerate(sorted(images.rglob("*.png"))):
        sha = sha256_hex(path.read_bytes())
        key = f"views/{sha}/{'c' * 32}/0.png"
        store.put(key, png_bytes(48, 40, seed=700 + i))
        rows.append({"path": str(path.relative_to(images)), "sha256": sha, "views": [key], "noise_level": LEVELS[i]})
    (tmp_path / "views.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    trainer_run.main(["--data", str(images), "--manifest", str(tmp_path / "views.jsonl"), "--scorer", "local",
                      "--out", str(out), "--method", "simclr", "--arch", "resnet18", "--image-size", "32",
                      "--batch-size", "4", "--workers", "0", "--device", "cpu", "--knn-every", "0", "--epochs", "2",
                      "--fit-num", "8"])
    get_settings.cache_clear()

    tb = events(out / "tensorboard")
    for epoch in (0, 1):
        levels = [h for h in tb.Histograms("pictures/noise_level") if h.step == epoch][0].histogram_value
        assert levels.num == 8 and levels.sum == sum(LEVELS)  # every image's view once per epoch
    assert [h.histogram_value.num for h in tb.Histograms("pictures/quality_weight")] == [8, 8]
    assert [s.value for s in tb.Scalars("pictures/generated_fraction")] == [1.0, 1.0]
    assert [i.step for i in tb.Images("pictures/pairs")] == [0, 1]
    pngs = sorted(p.name for p in (out / "pictures").iterdir())
    assert len(pngs) == 8 and "epoch0001-pairs.png" in pngs
    grid = np.asarray(Image.open(out / "pictures" / "epoch0001-pairs.png"))
    assert grid.shape[0] == 16 + 4 * 100 + 4  # batch 4: its 2 highest- and 2 lowest-weighted pairs


@pytest.mark.slow
@pytest.mark.parametrize("logger", ["wandb", "mlflow"])
def test_optional_loggers_receive_scalars_and_pictures(logger, tmp_path, monkeypatch):
    """`--logger wandb|mlflow` (the extras `genview[wandb]`, `genview[mlflow]`), offline, on a tiny plain run."""
    pytest.importorskip(logger)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    images = image_folder(tmp_path / "data", classes=2, per_class=4)
    out = tmp_path / "run"
    trainer_run.main(["--data", str(images), "--no-quality", "--out", str(out), "--method", "simclr", "--arch",
                      "resnet18", "--image-size", "32", "--batch-size", "4", "--workers", "0", "--device", "cpu",
                      "--knn-every", "0", "--epochs", "1", "--logger", logger])
    if logger == "wandb":
        assert list((out / "wandb").glob("offline-run-*/files/media/images/pictures/pairs_*.png"))
    else:
        run = next((tmp_path / "mlruns" / "0").glob("*/metrics"))
        assert (run / "loss").exists() and (run / "pictures" / "generated_fraction").exists()
        assert list((run.parent / "artifacts" / "images").glob("pictures~pairs*.png"))
    assert (out / "pictures" / "epoch0000-pairs.png").exists() and not (out / "tensorboard").exists()
