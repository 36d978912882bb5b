"""The trainer in-process: run folders (local and S3), refusals that come at once, precision, config.yaml."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from genview.settings import get_settings
from genview.store import ObjectStore, sha256_hex
from harness.images import png_bytes
from harness.ports import free_port
from trainer import run as trainer_run
from trainer.checkpoint import RunFolder
from trainer.config import parse_args

TINY = ["--method", "simclr", "--arch", "resnet18", "--image-size", "32", "--batch-size", "8", "--workers", "0",
        "--seed", "3", "--device", "cpu", "--knn-every", "0"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """16 images in two class folders."""
    root = tmp_path_factory.mktemp("images")
    for c in range(2):
        (root / f"class{c}").mkdir()
        for i in range(8):
            (root / f"class{c}" / f"{i}.png").write_bytes(png_bytes(48, 40, seed=200 + 10 * c + i))
    return root


@pytest.fixture
def settings_env(monkeypatch):
    """Set GENVIEW_* variables for this test; the cached settings are re-read."""
    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"GENVIEW_{key.upper()}", value)
        get_settings.cache_clear()
    yield set_env
    get_settings.cache_clear()


def _main(*argv: str) -> int:
    try:
        trainer_run.main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def _steps(text: str) -> list[dict]:
    return [r for r in map(json.loads, text.splitlines()) if "loss" in r]


def test_existing_run_folder_is_refused_without_resume(images, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("epochs: 1\n")
    assert _main("--data", str(images), "--out", str(out), "--no-quality", *TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"trainer: {out} already holds a run: pass --resume to continue it, or choose another --out"
    assert not (out / "metrics.jsonl").exists()


def test_fp16_is_refused_on_the_cpu(images, tmp_path, capsys):
    assert _main("--data", str(images), "--out", str(tmp_path / "run"), "--precision", "fp16", *TINY) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("service", ["generator", "scorer"])
def test_unreachable_service_fails_within_seconds(service, images, tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    flags = ["--generator-url", url, "--no-quality"] if service == "generator" else ["--scorer-url", url]
    start = time.monotonic()
    assert _main("--data", str(images), "--out", str(tmp_path / "run"), *TINY, *flags) == 1
    assert time.monotonic() - start < 10
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"trainer: {service} at {url} is unreachable")


def _manifest(tmp_path: Path, images: Path, store: ObjectStore, with_views: int) -> Path:
    """A manifest of every image whose store holds the views of only the first `with_views` rows."""
    rows = []
    for i, path in enumerate(sorted(images.rglob("*.png"))):
        sha = sha256_hex(path.read_bytes())
        key = f"views/{sha}/{'b' * 32}/0.png"
        if i < with_views:
            store.put(key, png_bytes(40, 40, seed=900 + i))
        rows.append({"path": str(path.relative_to(images)), "sha256": sha, "views": [key]})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_manifest_without_views_fails_at_start_and_missing_views_fail_wait_mode(images, tmp_path, capsys,
                                                                                settings_env):
    settings_env(store_url=f"file://{tmp_path / 'store'}")
    store = ObjectStore(f"file://{tmp_path / 'store'}")
    manifest = _manifest(tmp_path, images, store, with_views=0)
    args = ["--data", str(images), "--manifest", str(manifest), "--no-quality", *TINY, "--epochs", "1"]
    assert _main("--out", str(tmp_path / "a"), *args) == 1
    assert "does not hold views/" in capsys.readouterr().err.strip().splitlines()[-1]

    _manifest(tmp_path, images, store, with_views=8)  # the first rows pass the start check, later ones are absent
    assert _main("--out", str(tmp_path / "b"), *args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("trainer: view of ") and "does not hold" in last


@pytest.mark.slow
def test_fallback_mode_reports_the_fraction_and_fails_beyond_the_limit(images, tmp_path, capsys, settings_env):
    settings_env(store_url=f"file://{tmp_path / 'store'}")
    manifest = _manifest(tmp_path, images, ObjectStore(f"file://{tmp_path / 'store'}"), with_views=8)
    args = ["--data", str(images), "--manifest", str(manifest), "--no-quality", *TINY, "--epochs", "1",
            "--on-missing-view", "fallback"]
    assert _main("--out", str(tmp_path / "a"), *args, "--max-fallback-fraction", "1") == 0
    err = capsys.readouterr().err
    assert "fallback fraction 0.5000" in err
    steps = _steps((tmp_path / "a" / "metrics.jsonl").read_text())
    assert sum(r["fallbacks"] for r in steps) == 8 and sum(r["generated_fraction"] for r in steps) == 1.0
    assert _main("--out", str(tmp_path / "b"), *args) == 1
    assert "50.00% of the generated views fell back" in capsys.readouterr().err.strip().splitlines()[-1]


def test_bf16_on_the_cpu_trains_with_finite_losses(images, tmp_path):
    out = tmp_path / "run"
    assert _main("--data", str(images), "--out", str(out), "--no-quality", *TINY, "--epochs", "1",
                 "--precision", "bf16", "--method", "byol") == 0
    steps = _steps((out / "metrics.jsonl").read_text())
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) for r in steps)
    assert RunFolder(str(out)).read_config()["precision"] == "bf16"


@pytest.mark.slow
def test_config_yaml_reloads_with_flags_on_top_and_a_finished_run_says_so(images, tmp_path, capsys):
    first = tmp_path / "first"
    assert _main("--data", str(images), "--out", str(first), "--no-quality", *TINY, "--epochs", "1",
                 "--gamma", "0.5") == 0
    second = tmp_path / "second"
    assert _main("--config", str(first / "config.yaml"), "--out", str(second), "--seed", "4") == 0
    config = RunFolder(str(second)).read_config()
    assert config["gamma"] == 0.5 and config["seed"] == 4 and config["out"] == str(second)
    capsys.readouterr()
    assert _main("--out", str(second), "--resume") == 0  # the run's own config.yaml supplies the rest
    assert "is finished (1 of 1 epochs)" in capsys.readouterr().err


@pytest.mark.slow
def test_s3_run_folder_resumes_on_a_fresh_node_exactly(images, tmp_path, s3_bucket, s3_endpoint, settings_env):
    settings_env(s3_endpoint_url=s3_endpoint)
    args = ["--data", str(images), "--no-quality", *TINY, "--epochs", "2"]
    assert _main("--out", str(tmp_path / "full"), *args) == 0
    full = _steps((tmp_path / "full" / "metrics.jsonl").read_text())
    out = f"{s3_bucket}/run"
    assert _main("--out", out, "--work-dir", str(tmp_path / "node1"), *args, "--stop-after-epochs", "1") == 0
    folder = RunFolder(out)
    assert folder.load_checkpoint()["epoch"] == 0 and folder.read_config()["epochs"] == 2
    assert _main("--out", out, "--resume", "--work-dir", str(tmp_path / "node2")) == 0
    resumed = _steps(folder.fs.cat_file(folder.path("metrics.jsonl")).decode())
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(full, resumed):  # the steps after the resume match the uninterrupted run
        for key in ("loss", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (key, a, b)


def test_views_shards_train_one_epoch_from_the_shards(images, tmp_path, caplog):
    from tests.test_shards import write

    shards = write(tmp_path, shards=2, per_shard=8)
    out = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="genview.trainer")
    assert _main("--data", str(images), "--views-shards", shards.url, "--out", str(out), "--no-quality", *TINY,
                 "--epochs", "1") == 0
    steps = _steps((out / "metrics.jsonl").read_text())
    assert len(steps) == 2 and all(r["generated_fraction"] == 1.0 and math.isfinite(r["loss"]) for r in steps)
    # pictures of the epoch (trainer/pictures.py): the weights of all 16 samples, the pair grid, as PNG and TensorBoard
    assert {p.name for p in (out / "pictures").iterdir()} == {
        f"epoch0000-{n}.png" for n in ("quality_weights", "pairs", "generated_fraction")}
    tb = EventAccumulator(str(out / "tensorboard"), size_guidance={"histograms": 0, "images": 0}).Reload()
    assert tb.Histograms("pictures/quality_weight")[0].histogram_value.num == 16
    assert tb.Scalars("pictures/generated_fraction")[0].value == 1.0 and tb.Images("pictures/pairs")
    assert f"1 rank(s) × batch 8 on cpu, fp32, store {get_settings().store_url}" in caplog.text


def _shard_args(images: Path, tmp_path: Path) -> list[str]:
    from tests.test_shards import write

    shards = write(tmp_path, shards=2, per_shard=8)
    return ["--data", str(images), "--views-shards", shards.url, "--no-quality", *TINY, "--epochs", "1"]


@pytest.mark.slow
def test_views_shards_pick_loader_workers_that_hold_a_batch(images, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="genview.trainer")
    out = tmp_path / "run"
    assert _main(*_shard_args(images, tmp_path), "--out", str(out), "--workers", "4") == 0  # over TINY's 0
    assert "--workers 4 -> 2: 2 shards split over 1 rank(s) x 4 loader workers" in caplog.text
    assert len(_steps((out / "metrics.jsonl").read_text())) == 2


def test_views_shards_too_small_for_one_batch_are_refused_with_the_numbers(images, tmp_path, capsys):
    assert _main(*_shard_args(images, tmp_path), "--out", str(tmp_path / "run"), "--batch-size", "32") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "trainer: 2 shards over 1 rank(s) x 1 loader worker give a rank 16 images (its 2 smallest shards), fewer "
        "than one batch of 32: lower --batch-size (global 32) or write more images")


def test_an_out_folder_that_cannot_be_written_is_refused_at_once(images, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "run"
    assert _main("--data", str(images), "--out", str(out), "--no-quality", *TINY) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"trainer: --out {out} is not writable: Not a directory"


def test_knn_monitor_on_val_data_with_a_bounded_bank(images, tmp_path):
    out = tmp_path / "run"
    assert _main("--data", str(images), "--out", str(out), "--no-quality", *TINY, "--epochs", "1", "--knn-every", "1",
                 "--val-data", str(images), "--knn-size", "12", "--method-option", "temperature=0.3") == 0
    epoch = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "epoch_loss" in r]
    assert len(epoch) == 1 and {"knn_top1_k20", "knn_top1_k200"} <= set(epoch[0])
    assert 0.0 <= epoch[0]["knn_top1_k20"] <= 1.0 and epoch[0]["checkpoint"] == str(out / "checkpoint.pt")
    assert RunFolder(str(out)).load_checkpoint()["method_config"]["temperature"] == 0.3  # --method-option


def test_method_options_override_the_recipe_and_unknown_keys_are_refused(images, tmp_path, capsys):
    base = ["--data", str(images), "--out", str(tmp_path / "run"), "--method", "mocov2", "--arch", "resnet18"]
    args = parse_args([*base, "--method-option", "temperature=0.3", "--method-option", "genview_slot=key",
                                   "--method-option", "temperature=0.5", "--queue-size", "64"])
    config = args.method_config()
    assert (config.temperature, config.genview_slot, config.queue_size) == (0.5, "key", 64)  # the later one wins
    assert config.optimizer == "sgd" and config.sync_bn is False  # the rest is MoCo v2's recipe
    for option, message in [("nonsense=1", "nonsense: Extra inputs are not permitted"),
                            ("temperature", "'temperature' is not KEY=VALUE"),
                            ("genview_slot=sideways", "genview_slot: Input should be 'key', 'query' or 'random'")]:
        with pytest.raises(SystemExit) as exc:
            parse_args([*base, "--method-option", option])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_default_loader_workers_never_exceed_the_cpus_this_process_may_use():
    """`--workers` defaults (trainer 4, eval 8) are capped by the CPU affinity: one CPU allowed → one worker."""
    code = ("import argparse; from trainer.config import build_parser; from trainer.eval.options import add_common\n"
            "p = argparse.ArgumentParser(); add_common(p)\n"
            "print(build_parser().get_default('workers'), p.get_default('workers'))")
    usable = len(os.sched_getaffinity(0))
    for cpus, expected in (({0}, [1, 1]), (None, [min(4, usable), min(8, usable)])):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                              preexec_fn=(lambda c=cpus: os.sched_setaffinity(0, c)) if cpus else None)
        assert [int(n) for n in done.stdout.split()] == expected, (cpus, done.stdout, done.stderr)
