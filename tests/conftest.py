"""Shared fixtures: a private redis-server and a moto S3 server, both real network services.

The session fails if any child process of pytest outlives it (see `pytest_sessionfinish`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import psutil
import pytest
import redis

from harness.ports import free_port, wait_for_port
from harness.processes import stop_all


@pytest.fixture(scope="module", autouse=True)
def _stop_module_procs():
    """After each test module (and its fixtures), stop the `Proc`s it left running."""
    yield
    stop_all()


def surviving_children() -> list[psutil.Process]:
    """Live (not zombie) descendants of this process."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a test left a process behind (after all fixtures are torn down); kill it."""
    leaked = surviving_children()
    if not leaked:
        return
    lines = []
    for child in leaked:
        try:
            lines.append(f"  pid {child.pid}: {' '.join(child.cmdline())[:200]}")
            child.kill()
        except psutil.NoSuchProcess:
            pass
    if lines:
        session.config.get_terminal_writer().line(
            "LEAKED PROCESSES: the test session left these children running (now killed):\n" + "\n".join(lines),
            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """URL of a Redis the tests own: REDIS_URL if set, else a fresh redis-server on a free port."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    exe = shutil.which("redis-server")
    assert exe, "redis-server is not installed (apt-get install redis-server)"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def fresh_redis_url(redis_url):
    """The test Redis, flushed so each test starts empty."""
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


@pytest.fixture(scope="session")
def s3_endpoint():
    """Endpoint URL of a moto S3 server (real HTTP) running in its own process."""
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port), "-H", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """A new, empty bucket on the moto server; returns `s3://bucket/prefix`."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"genview-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}/data"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """A cache folder holding the tiny presets, written once per test session."""
    from genview.models.presets import ensure_random_unclip

    cache = tmp_path_factory.mktemp("model-cache")
    ensure_random_unclip("tiny", cache)
    return str(cache)
