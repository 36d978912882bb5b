"""README.md's commands, run as written: every code block marked `<!-- test: NAME -->` is extracted and run
with bash against real processes (tiny presets, small sizes through documented environment variables)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.images import image_folder
from harness.ports import free_port
from harness.processes import service_env, start_api

REPO = Path(__file__).resolve().parent.parent
MARKED_BLOCK = re.compile(r"^<!-- test: ([\w-]+) -->\n```(?:bash|sh)\n(.*?)^```", re.M | re.S)
LINKED = ("samples", "trainer", "examples")  # what README commands use by a path relative to the checkout
TESTED = {"two-commands", "quickstart", "generator", "scorer", "trainer", "dataset"}


def readme_blocks() -> dict[str, str]:
    """{name: script} of README.md's marked code blocks."""
    blocks: dict[str, str] = {}
    for name, script in MARKED_BLOCK.findall((REPO / "README.md").read_text()):
        assert name not in blocks, f"two README blocks are marked {name!r}"
        blocks[name] = script
    return blocks


def run_block(name: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a README block with `bash -euo pipefail` in cwd (with links to LINKED); then stop what it left
    in the background (e.g. `genview serve &`) with its whole process group."""
    for folder in LINKED:
        (cwd / folder).symlink_to(REPO / folder)
    bin_dir = Path(sys.executable).parent  # `genview`, `python3` and `torchrun` of this interpreter come first
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
    out, err = cwd / f"{name}.stdout", cwd / f"{name}.stderr"  # files, not pipes: `serve &` keeps pipes open
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", readme_blocks()[name]], cwd=cwd, env=env,
                                stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            proc.wait(timeout)
        finally:
            _stop_group(proc.pid)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
    assert done.returncode == 0, f"README block {name!r} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def _stop_group(pgid: int, grace: float = 30) -> None:
    """SIGTERM every process of the group, SIGKILL what is still there after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def json_documents(text: str) -> list:
    """The JSON documents printed one after another (curl prints no newline after a body)."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) >= 0:
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
    return docs


def test_readme_marks_the_tested_blocks():
    assert TESTED <= readme_blocks().keys()


def test_ci_runs_the_two_commands_exactly():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    commands = [line for line in readme_blocks()["two-commands"].splitlines() if line.strip()]
    assert len(commands) == 2
    for command in commands:
        assert any(line.startswith(command) for line in ci), f"{command!r} is not in .ci/run"


def test_sample_image_is_what_make_sample_draws():
    sys.path.insert(0, str(REPO / "samples"))
    try:
        import make_sample
    finally:
        sys.path.remove(str(REPO / "samples"))
    committed = np.asarray(Image.open(REPO / "samples" / "cat.png").convert("RGB"))
    assert np.array_equal(committed, np.asarray(make_sample.make()))


@pytest.mark.slow
def test_quickstart(model_cache, tmp_path):
    env = service_env(model="tiny", scorer_model="tiny", device="cpu", model_cache=model_cache, port=free_port(),
                      store_url=f"file://{tmp_path / 'store'}")
    done = run_block("quickstart", env, tmp_path)
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["status"] == "done" and len(job["views"]) == 1
    assert Image.open(tmp_path / "cat_view.png").size == (job["size"], job["size"])
    score = json_documents(done.stdout)[-1]
    assert set(score) >= {"s_f", "s_b", "q", "fg_basis"} and -2 <= score["q"] <= 2


@pytest.fixture(scope="module")
def served(model_cache, tmp_path_factory):
    """The environment of a reader who ran the quickstart: `genview serve` (tiny) and `url` pointing at it."""
    root = tmp_path_factory.mktemp("readme-served")
    env = service_env(model="tiny", scorer_model="tiny", device="cpu", model_cache=model_cache,
                      store_url=f"file://{root / 'store'}", min_fit_images="1")
    proc, base = start_api("serve", env, root)
    yield {**env, "url": base}
    proc.stop()


@pytest.mark.slow
def test_generator_examples(served, tmp_path):
    docs = json_documents(run_block("generator", served, tmp_path).stdout)
    waited, submitted, state = docs
    assert waited["status"] == "done" and len(waited["views"]) == 2 and waited["seed"] == 7
    assert submitted["status"] in {"queued", "running", "done"} and state["job_id"] == submitted["job_id"]


@pytest.mark.slow
def test_scorer_examples(served, tmp_path):
    single, batch = json_documents(run_block("scorer", served, tmp_path).stdout)[-2:]
    assert set(single) >= {"s_f", "s_b", "q", "fg_basis"}
    assert len(batch["w"]) == 4 and abs(sum(batch["w"]) / 4 - 1) < 1e-4


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A small image folder in two classes, as `DATA`."""
    return image_folder(tmp_path_factory.mktemp("readme-data"), seed=400)


SMALL_RUN = {"EPOCHS": "1", "BATCH_SIZE": "8", "IMAGE_SIZE": "32"}


def _trained_steps(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_trainer_example(served, data, tmp_path):
    run_block("trainer", {**served, **SMALL_RUN, "DATA": str(data)}, tmp_path, timeout=1100)
    steps = _trained_steps(tmp_path / "runs" / "simclr")
    assert len(steps) == 2 and all(r["generated_fraction"] == 1.0 and r["w_min"] < r["w_max"] for r in steps)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_dataset_example(served, data, tmp_path):
    run_block("dataset", {**served, **SMALL_RUN, "DATA": str(data)}, tmp_path, timeout=1100)
    rows = [json.loads(line) for line in (tmp_path / "views.jsonl").read_text().splitlines()]
    assert len(rows) == 16
    assert len(_trained_steps(tmp_path / "runs" / "from-manifest")) == 2
