"""The trainer against live generator and scorer services: torchrun DDP, exact resume, generator outages."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness.processes import Proc, service_env, start_api, start_worker
from tests.test_trainer_run import images  # noqa: F401  (the 16 class-folder images, a fixture)

pytestmark = pytest.mark.slow  # end-to-end: service processes and torchrun trainer runs

REPO = Path(__file__).resolve().parent.parent
COMMON = ["--method", "simclr", "--arch", "resnet18", "--image-size", "32", "--batch-size", "8",
          "--gen-steps", "2", "--gen-size", "40", "--workers", "1", "--lookahead", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def stack(redis_url, model_cache, images, tmp_path_factory):
    """Generator and scorer APIs and workers (tiny presets, Redis db 2, a file store).

    Neither service has a fitted PCA basis: the first trainer run fits both through the services."""
    logs = tmp_path_factory.mktemp("trainer-stack")
    env = service_env(model="tiny", scorer_model="tiny", device="cpu", model_cache=model_cache,
                      redis_url=redis_url.rsplit("/", 1)[0] + "/2", store_url=f"file://{logs / 'store'}",
                      max_batch_size="8", max_batch_wait_ms="20", min_fit_images="1")
    procs = [start_worker("generator-worker", env, logs), start_worker("scorer-worker", env, logs)]
    gen, gen_url = start_api("generator-api", env, logs)
    scorer, scorer_url = start_api("scorer-api", env, logs)
    procs += [gen, scorer]
    stack = {"env": env, "logs": logs, "generator": gen, "generator_url": gen_url, "scorer_url": scorer_url}
    yield stack
    for p in [*procs, stack["generator"]]:  # the tests replace a killed generator with a restarted one
        p.stop()


def _train(out: Path, *args: str, nproc: int = 1, timeout: float = 400) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
                if nproc > 1 else [sys.executable])
    env = service_env(device="cpu")
    done = subprocess.run([*launcher, str(REPO / "trainer" / "run.py"), "--out", str(out), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_torchrun_two_ranks_train_and_resume_exactly(stack, images, tmp_path):
    services = ["--data", str(images), "--generator-url", stack["generator_url"], "--scorer-url", stack["scorer_url"]]
    full, part = tmp_path / "full", tmp_path / "part"
    _train(full, *services, *COMMON, "--epochs", "2", nproc=2)
    steps = [r for r in _records(full) if "loss" in r]
    assert len(steps) == 4 and all(math.isfinite(r["loss"]) for r in steps)  # 16 images / 8 per step × 2 epochs
    assert (full / "checkpoint.pt").exists() and list((full / "tensorboard").iterdir())
    assert all(r["generated_fraction"] == 1.0 and r["fallbacks"] == 0 for r in steps)
    assert all(r["w_min"] < r["w_max"] and r["w_mean"] == pytest.approx(1.0, abs=1e-5) for r in steps)
    assert [r["epoch"] for r in _records(full) if "knn_top1" in r] == [0, 1]
    for basis in (f"{stack['generator_url']}/basis", f"{stack['scorer_url']}/score/basis"):  # the trainer fitted both
        assert httpx.get(basis).json()["basis_id"] != "per-image", basis

    probe = subprocess.run([sys.executable, "-m", "trainer.eval", "eval", "linear", "--checkpoint",
                            str(full / "checkpoint.pt"), "--train", str(images), "--val", str(images), "--epochs", "2",
                            "--batch-size", "8", "--workers", "0", "--device", "cpu", "--out", str(full)],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert probe.returncode == 0, probe.stderr[-2000:]
    result = json.loads((full / "eval_linear.json").read_text())  # the method rebuilt from method_config
    assert result["train_images"] == 16 and result["method"] == "simclr" and 0.0 <= result["top1"] <= 1.0

    _train(part, *services, *COMMON, "--epochs", "2", "--stop-after-epochs", "1", nproc=2)
    _train(part, *services, *COMMON, "--epochs", "2", "--resume", nproc=2)
    resumed = [r for r in _records(part) if "loss" in r]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(steps[2:], resumed[2:]):  # the steps after the resume match the uninterrupted run
        for key in ("loss", "lr", "w_min", "w_max"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (key, a, b)


def _kill_generator_when_training_starts(stack, out: Path, trainer: Proc) -> None:
    deadline = time.monotonic() + 300
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert trainer.popen.poll() is None and time.monotonic() < deadline, trainer.tail()
        time.sleep(0.05)
    stack["generator"].kill()


def _start_trainer(stack, images, out: Path, *extra: str) -> Proc:
    """A trainer process, its output in OUT.log; a Proc, so it is stopped at module teardown even if a test fails."""
    args = [sys.executable, str(REPO / "trainer" / "run.py"), "--out", str(out), "--data", str(images),
            "--generator-url", stack["generator_url"], "--no-quality", *COMMON, "--epochs", "1",
            "--batch-size", "4", "--gen-steps", "30", "--gen-seed", str(time.time_ns() % 10**6),
            "--generator-retries", "1", *extra]
    return Proc(args, service_env(device="cpu"), out.with_suffix(".log"))


def _wait_for_output(trainer: Proc, text: str, timeout: float = 120) -> None:
    """Until the running trainer has written `text` (a condition wait, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while text not in trainer.tail(100_000):
        assert trainer.popen.poll() is None, f"the trainer exited without {text!r}:\n{trainer.tail()}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{trainer.tail()}"
        time.sleep(0.05)


def _output_when_done(trainer: Proc) -> str:
    """The trainer's output once it exited with status 0 (within 300 s)."""
    code = trainer.popen.wait(300)
    trainer.stop()
    output = trainer.tail(100_000)
    assert code == 0, output[-3000:]
    return output


def test_generator_outage_wait_recovers_and_fallback_counts(stack, images, tmp_path):
    port = int(stack["generator_url"].rsplit(":", 1)[1])
    out = tmp_path / "wait"
    trainer = _start_trainer(stack, images, out, "--on-missing-view", "wait")
    _kill_generator_when_training_starts(stack, out, trainer)
    _wait_for_output(trainer, "unavailable, retrying")  # it waits for the generator instead of failing ...
    stack["generator"], _ = start_api("generator-api", stack["env"], stack["logs"], port=port)
    _output_when_done(trainer)  # ... and finishes once it is back
    steps = [r for r in _records(out) if "loss" in r]
    assert len(steps) == 4 and all(r["fallbacks"] == 0 and r["generated_fraction"] == 1.0 for r in steps)

    out = tmp_path / "fallback"
    trainer = _start_trainer(stack, images, out, "--on-missing-view", "fallback", "--max-fallback-fraction", "1")
    _kill_generator_when_training_starts(stack, out, trainer)
    output = _output_when_done(trainer)
    steps = [r for r in _records(out) if "loss" in r]
    fell_back = sum(r["fallbacks"] for r in steps)
    assert len(steps) == 4 and fell_back > 0
    assert f"fallback fraction {fell_back / 16:.4f}" in output  # reported at the end (α = 1: 16 views wanted)
    assert all(math.isfinite(r["loss"]) for r in steps)
    stack["generator"], _ = start_api("generator-api", stack["env"], stack["logs"], port=port)
