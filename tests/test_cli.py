"""The console script: one command tree composed from the library, the services and the trainer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genview.settings import Settings, package_version
from services.cli import build_parser, startup_line
from trainer.eval.cli import PROTOCOLS


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


@pytest.mark.parametrize("command", ["serve", "generator-api", "generator-worker", "scorer-api", "scorer-worker"])
def test_service_help_lists_defaults_and_the_settings_it_reads(command, capsys):
    from services.cli import reads

    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0 and set(reads(command)) <= set(Settings.model_fields)
    for name in reads(command):
        assert f"GENVIEW_{name.upper()} [" in text
    assert ("GENVIEW_SCORER_MODEL" in text) == (command in ("serve", "scorer-api", "scorer-worker"))
    if command.endswith("api") or command == "serve":
        assert "(default: 127.0.0.1)" in text and "(default: GENVIEW_PORT, else 800" in text


@pytest.mark.parametrize("argv", [[], ["eval", "--help"], *(["eval", name, "--help"] for name in PROTOCOLS)])
def test_the_command_tree_and_its_help_import_no_torch(argv):
    code = ("import contextlib, sys; from services.cli import build_parser; parser = build_parser()\n"
            "if sys.argv[1:]:\n    with contextlib.suppress(SystemExit): parser.parse_args(sys.argv[1:])\n"
            "assert not {'torch', 'timm', 'fastapi', 'diffusers'} & set(sys.modules), sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (not argv or "usage:" in done.stdout) and ("--train" in done.stdout) == (len(argv) == 3)


def test_an_api_without_keys_serves_anonymously_only_on_loopback_or_on_purpose():
    from services.auth import access_mode, anonymous_refusal

    open_settings = Settings()
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert anonymous_refusal(open_settings, host) is None, host
    for host in ("0.0.0.0", "::", "10.1.2.3", "api.example.org"):
        refusal = anonymous_refusal(open_settings, host)
        assert refusal and "\n" not in refusal
        assert "GENVIEW_API_KEYS" in refusal and "GENVIEW_ALLOW_ANONYMOUS" in refusal
    assert anonymous_refusal(Settings(allow_anonymous=True), "0.0.0.0") is None
    assert anonymous_refusal(Settings(api_keys="k1,k2"), "0.0.0.0") is None
    assert access_mode(Settings(allow_anonymous=True), "0.0.0.0").startswith("ANONYMOUS")
    assert "on loopback" in access_mode(open_settings, "127.0.0.1")
    assert access_mode(Settings(api_keys="k1,k2"), "0.0.0.0") == "API keys required (2 tenants)"


@pytest.mark.slow
def test_an_api_started_anonymously_on_purpose_says_so_in_its_first_log_line(tmp_path):
    from harness.ports import free_port
    from harness.processes import Proc, genview_cmd, service_env, wait_http

    port = free_port()
    env = service_env(allow_anonymous="true", store_url=f"file://{tmp_path}/store")
    proc = Proc(genview_cmd("scorer-api", "--host", "0.0.0.0", "--port", str(port)), env, tmp_path / "api.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    finally:
        proc.stop()
    first = next(line for line in proc.tail(100_000).splitlines() if "genview scorer-api:" in line)
    assert "ANONYMOUS" in first and "GENVIEW_ALLOW_ANONYMOUS=true" in first
