"""Both APIs describe themselves fully: typed success bodies, the real error schema, offline docs; schemathesis
finds no server error, no undocumented status code and no schema mismatch."""

from __future__ import annotations

import re

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from genview.queue import MemoryJobQueue
from genview.settings import Settings
from genview.store import ObjectStore
from services.generator.app import create_app as generator_app
from services.scorer.app import create_app as scorer_app

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


def _schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture
def generator_schema(tmp_path):
    return _schema(generator_app(_settings(tmp_path), MemoryJobQueue("g"), ObjectStore(f"file://{tmp_path}/s")))


@pytest.fixture
def scorer_schema(tmp_path):
    return _schema(scorer_app(_settings(tmp_path), MemoryJobQueue("s"), ObjectStore(f"file://{tmp_path}/s")))


FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
# no 5xx, only documented statuses, bodies and content types as declared (arbitrary bytes that satisfy the
# schema of an image upload are still not an image, so "positive data accepted" is not asked for)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.slow
@schemathesis.pytest.from_fixture("generator_schema").parametrize()
@FUZZ
def test_generator_api_conforms_to_its_schema(case):
    case.call_and_validate(checks=CHECKS)


@pytest.mark.slow
@schemathesis.pytest.from_fixture("scorer_schema").parametrize()
@FUZZ
def test_scorer_api_conforms_to_its_schema(case):
    case.call_and_validate(checks=CHECKS)


def test_generate_takes_noise_policy_and_marks_the_old_name_deprecated(tmp_path):
    spec = TestClient(generator_app(_settings(tmp_path), MemoryJobQueue("g"), ObjectStore(f"file://{tmp_path}/s"))).get(
        "/openapi.json").json()
    body = spec["paths"]["/generate"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    fields = spec["components"]["schemas"][body.rsplit("/", 1)[1]]["properties"]
    assert "noise_policy" in fields and fields["noise_level"].get("deprecated") is True
    assert "deprecated" in fields["noise_level"]["description"]
