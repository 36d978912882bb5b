"""The console script: one command tree composed from the library, the services and the trainer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genview.settings import Settings, package_version
from services.cli import build_parser, startup_line


@pytest.mark.parametrize("argv, command", [
    (["generator-api", "--port", "9"], "generator-api"), (["scorer-api"], "scorer-api"),
    (["generator-worker"], "generator-worker"), (["scorer-worker"], "scorer-worker"), (["serve"], "serve"),
    (["fit-pca", "--encoder", "scorer", "--images", "x"], "fit-pca"),
    (["gallery", "--manifest", "m", "--images", "i", "--out", "o.png"], "gallery"),
])
def test_library_and_service_commands_share_one_tree(argv, command):
    args = build_parser().parse_args(argv)
    assert args.command == command and callable(args.func)


def test_version_flag():
    done = subprocess.run([sys.executable, "-m", "services.cli", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"genview {package_version()}"


def test_startup_line_names_role_model_device_queue_store_version_without_secrets():
    settings = Settings(model="tiny", scorer_model="tiny", device="cpu", store_url="file:///data/gv",
                        redis_url="redis://:hunter2@redis.internal:6379/0")
    line = startup_line("generator-api", settings)
    for part in ("generator-api", "model tiny", "device cpu", "redis://redis.internal:6379/0", "file:///data/gv",
                 f"version {package_version()}"):
        assert part in line
    assert "hunter2" not in line
    assert "in-memory" in startup_line("serve", Settings(model="tiny", scorer_model="tiny", device="cpu"))
