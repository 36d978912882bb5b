"""What a user sees when a `genview` command fails: one line on stderr, exit 2 (usage) or 1 (runtime), no
traceback unless --debug or GENVIEW_DEBUG=1."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.images import image_folder
from harness.ports import free_port
from harness.processes import genview_cmd, service_env


def genview(*args: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess:
    env = service_env(store_url=f"file://{cwd}/store", **settings)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(cwd / "hf"))
    return subprocess.run(genview_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_line_error(done: subprocess.CompletedProcess, code: int, command: str) -> str:
    """The failure's last stderr line, checked to be the command's own one-line message and nothing worse."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"genview {command}: ")
    return last


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_generate_dataset_refuses_a_missing_or_empty_folder_without_writing_a_manifest(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    done = genview("generate-dataset", "--images", folder, "--generator-url", f"http://127.0.0.1:{free_port()}",
                   "--manifest", "views.jsonl", cwd=tmp_path)
    line = one_line_error(done, 2, "generate-dataset")
    assert folder in line and ("does not exist" in line if folder == "missing" else "no images" in line)
    assert not (tmp_path / "views.jsonl").exists()


def test_generate_dataset_against_a_dead_url_names_the_url_and_the_last_error(tmp_path):
    image_folder(tmp_path / "data", classes=1, per_class=2)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = genview("generate-dataset", "--images", "data", "--generator-url", url, "--manifest", "views.jsonl",
                   "--retries", "1", cwd=tmp_path)
    line = one_line_error(done, 1, "generate-dataset")
    assert f"{url}/basis" in line and "failed 2 times" in line and "ConnectError" in line
    assert not (tmp_path / "views.jsonl").exists()


def test_fit_pca_usage_errors_exit_2(tmp_path):
    done = genview("fit-pca", "--encoder", "generator", "--import-official", cwd=tmp_path)
    assert "--vectors" in one_line_error(done, 2, "fit-pca")
    done = genview("fit-pca", "--encoder", "scorer", "--images", "nowhere", cwd=tmp_path)
    assert "nowhere does not exist" in one_line_error(done, 2, "fit-pca")


def test_gallery_without_a_manifest_is_a_usage_error(tmp_path):
    done = genview("gallery", "--manifest", "views.jsonl", "--images", "data", "--out", "grid.png", cwd=tmp_path)
    assert "no manifest views.jsonl" in one_line_error(done, 2, "gallery")
    assert not (tmp_path / "grid.png").exists()


def test_debug_shows_the_traceback(tmp_path):
    for debug in (["--debug"], []):
        extra = {} if debug else {"debug": "1"}
        done = genview(*debug, "fit-pca", "--encoder", "scorer", "--images", "nowhere", cwd=tmp_path, **extra)
        assert done.returncode != 0 and "Traceback" in done.stderr and "NoImagesError" in done.stderr


@pytest.mark.slow
def test_fit_pca_without_loadable_weights_says_so_in_one_line(tmp_path):
    image_folder(tmp_path / "data", classes=1, per_class=2)
    done = genview("fit-pca", "--encoder", "generator", "--images", "data", cwd=tmp_path, device="cpu",
                   model=str(tmp_path / "no-such-weights"))
    line = one_line_error(done, 1, "fit-pca")
    assert "ModelLoadError" in line and "GENVIEW_MODEL" in line
