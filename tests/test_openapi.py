"""Both APIs describe themselves fully: typed success bodies, the real error schema, offline docs; schemathesis,
all checks, against the real processes, finds no server error and no failure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from genview.queue import MemoryJobQueue
from genview.settings import Settings
from genview.store import ObjectStore
from services.generator.app import create_app as generator_app
from services.scorer.app import create_app as scorer_app
from harness.processes import service_env, start_api

ROOT = Path(__file__).resolve().parents[1]
BINARY = {"/views/{key}", "/inputs/{sha}", "/gallery", "/playground"}  # images, HTML pages: typed by media type


def _settings(tmp_path) -> Settings:
    return Settings(model="tiny", scorer_model="tiny", store_url=f"file://{tmp_path}/store", max_wait_s=0.2,
                    score_timeout_s=0.2, max_upload_bytes=256 * 1024, max_score_pairs=2, max_score_side=32)


@pytest.fixture(params=["generator", "scorer"])
def app(request, tmp_path):
    factory = generator_app if request.param == "generator" else scorer_app
    return factory(_settings(tmp_path), MemoryJobQueue(request.param), ObjectStore(f"file://{tmp_path}/store"))


def test_every_route_has_typed_success_and_error_bodies(app):
    spec = TestClient(app).get("/openapi.json").json()
    assert spec["paths"]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            assert op.get("description"), f"{method} {path} has no description (route docstring)"
            success = {code: r for code, r in op["responses"].items() if code in ("200", "202")}
            assert success, f"{method} {path} declares no 200/202"
            for code, response in success.items():
                content = response.get("content", {})
                if path in BINARY:
                    assert content, f"{method} {path} {code} declares no media type"
                    continue
                schema = content["application/json"]["schema"]
                assert "$ref" in schema or schema.get("type") == "array", f"{method} {path} {code}: {schema}"
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"}, f"{method} {path} {code}"


def test_docs_use_only_local_assets(app):
    client = TestClient(app)
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        urls = re.findall(r'(?:src|href|url)\s*[:=]\s*["\']([^"\']+)["\']', html.text)
        assert urls, f"{page} references no assets"
        assert all(u.startswith("/") for u in urls), f"{page} references remote assets: {urls}"
        for url in urls:
            assert client.get(url).status_code == 200, url


ST_EXAMPLES = 25  # per operation and phase: ~1000 requests per API, well under a minute each on a loaded 2-core box


@pytest.fixture(params=["generator-api", "scorer-api"])
def api_process(request, fresh_redis_url, model_cache, tmp_path):
    """One real API process (tiny presets, the test Redis, a file store), anonymous as by default; its base URL."""
    env = service_env(model="tiny", scorer_model="tiny", device="cpu", model_cache=model_cache,
                      redis_url=fresh_redis_url, store_url=f"file://{tmp_path / 'store'}", max_wait_s="1",
                      score_timeout_s="1", max_upload_bytes=str(256 * 1024), max_score_pairs="2", max_score_side="32")
    proc, base = start_api(request.param, env, tmp_path)
    yield base
    proc.stop()


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_failure(api_process, tmp_path):
    """`st run --checks all` with the repository's schemathesis.toml (whose exceptions each say why)."""
    st = subprocess.run([sys.executable, "-m", "schemathesis.cli", "--config-file", str(ROOT / "schemathesis.toml"),
                         "run", f"{api_process}/openapi.json", "--checks", "all", "--max-examples", str(ST_EXAMPLES),
                         "--seed", "22", "--workers", "1", "--request-timeout", "30", "--report", "json",
                         "--report-json-path", str(tmp_path / "st.json")],
                        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    report = json.loads((tmp_path / "st.json").read_text())
    assert report["complete"] and not report["failures"] and not report["errors"], st.stdout[-6000:]
    assert report["operations"]["tested"] == report["operations"]["total"] > 5, report["operations"]
    assert st.returncode == 0, st.stdout[-6000:]


def test_generate_takes_noise_policy_and_marks_the_old_name_deprecated(tmp_path):
    spec = TestClient(generator_app(_settings(tmp_path), MemoryJobQueue("g"), ObjectStore(f"file://{tmp_path}/s"))).get(
        "/openapi.json").json()
    body = spec["paths"]["/generate"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    fields = body["properties"]
    assert body["required"] == ["image"] and fields["image"]["type"] == "string"
    assert "noise_policy" in fields and fields["noise_level"].get("deprecated") is True
    assert "deprecated" in fields["noise_level"]["description"]
