"""The playground page (`GET /playground`), used in headless Chromium as a person does: choose an image, press
Generate, see the original, its foreground map, the views and the pair's quality, with the JSON beside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from harness.browser import Browser
from harness.processes import start_tiny_serve
from services.app import base_app
from services.playground import playground_router

REPO = Path(__file__).resolve().parent.parent
LOADED_IMAGES = "[...document.querySelectorAll('#tiles img')].filter(i => i.complete && i.naturalWidth > 0).length"


def test_the_page_is_self_contained_and_open_without_a_key():
    from genview.settings import Settings
    from genview.store import ObjectStore

    app, _ = base_app("test", "test", Settings(api_keys="k1"), {}, ObjectStore("memory://playground"), {})
    app.include_router(playground_router())
    page = TestClient(app).get("/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="gallery"' in page.text and 'type="file"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline


@pytest.mark.slow
def test_upload_shows_foreground_views_and_quality_in_chromium(tmp_path, model_cache):
    server, url = start_tiny_serve(tmp_path, model_cache)
    try:
        with Browser(tmp_path / "profile") as browser:
            browser.open(f"{url}/playground")
            browser.wait_for("document.getElementById('noise_level').value === 'auto:per-image'", 30)  # no basis
            browser.choose_file("#image", REPO / "samples" / "cat.png")
            browser.evaluate("document.getElementById('go').click()")
            browser.wait_for("['done', 'error'].includes(document.body.dataset.state)", 240)
            state = browser.evaluate("document.body.dataset.state")
            assert state == "done", browser.evaluate("document.body.innerText")
            assert browser.evaluate(LOADED_IMAGES) == 4  # original, foreground map, two views
            generated = json.loads(browser.evaluate("document.getElementById('generate-json').textContent"))
            scored = json.loads(browser.evaluate("document.getElementById('score-json').textContent"))
            assert generated["status"] == "done" and len(generated["views"]) == 2 and generated["fg_map"]
            assert {"q", "s_f", "s_b"} <= set(scored)
            summary = browser.evaluate("document.getElementById('summary').innerText")
            assert f"noise level {generated['noise_level']}" in summary and "pair quality q" in summary
            shot = browser.screenshot()
        (tmp_path / "playground.png").write_bytes(shot)
        pixels = np.asarray(Image.open(tmp_path / "playground.png").convert("RGB")).astype(float)
        assert pixels.var() > 100, "the screenshot is blank"
    finally:
        server.stop()
