"""The gallery: the contact sheet (`render_grid`) and the `/gallery` page, rendered by headless Chromium."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import threading
import uuid

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from genview.gallery import CAPTION_H, HEADER_H, PAD, PLACEHOLDER, GalleryItem, grid_size, render_grid
from genview.queue import MemoryJobQueue
from genview.schemas import ManifestRow
from genview.settings import Settings
from genview.store import ObjectStore, sha256_hex
from services.generator.app import create_app
from services.generator.gallery import add_gallery_route
from harness.ports import free_port, wait_for_port

THUMB = 64


def _image_bytes(width: int, height: int, seed: int, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """A random image (smooth enough to survive JPEG) encoded as `fmt`."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), channels), dtype=np.uint8)
    img = Image.fromarray(small.squeeze(-1) if channels == 1 else small, mode).resize((width, height))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _put_result(store: ObjectStore, seed: int, num_views: int, fmt: str = "PNG") -> dict:
    """An input, its fg map, views and meta.json in the store, as a worker would write them."""
    original = _image_bytes(120, 90, seed, fmt)
    sha = sha256_hex(original)
    phash = sha256_hex(f"params-{seed}".encode())[:32]
    store.put(f"inputs/{sha}", original)
    fg_key = f"views/{sha}/{phash}/fg.png"
    store.put(fg_key, _image_bytes(32, 32, seed + 100, mode="L"))
    views = []
    for i in range(num_views):
        key = f"views/{sha}/{phash}/{i}.png"
        store.put(key, _image_bytes(64, 64, seed * 10 + i))
        views.append({"key": key})
    meta = {"fg_ratio": 0.25 + 0.1 * seed, "fg_basis": "per-image", "noise_level": 100 * seed, "views": views,
            "fg_map": fg_key, "seed": seed, "size": 64}
    store.put(f"views/{sha}/{phash}/meta.json", json.dumps(meta).encode())
    return {"sha": sha, "phash": phash, "original": original, "meta": meta}


@pytest.fixture
def memory_store():
    return ObjectStore(f"memory://gallery-{uuid.uuid4().hex}")


# ---------------------------------------------------------------- render_grid


def test_render_grid_draws_every_row_and_placeholders_for_missing_objects(memory_store):
    a, b = _put_result(memory_store, 1, 2), _put_result(memory_store, 2, 1)
    originals = {"a.png": a["original"], "b.jpg": b["original"]}
    rows = [
        {"path": "a.png", "sha256": a["sha"], "fg_ratio": 0.41234, "noise_level": 200, "seed": 0, "q": [0.5, 0.75],
         "views": [v["key"] for v in a["meta"]["views"]], "fg_map": a["meta"]["fg_map"]},
        {"path": "b.jpg", "sha256": b["sha"], "fg_ratio": 0.3, "noise_level": 0, "seed": 0,
         "views": [b["meta"]["views"][0]["key"], f"views/{b['sha']}/{b['phash']}/7.png"],  # view 7 was never written
         "fg_map": f"views/{b['sha']}/{'0' * 32}/fg.png"},  # neither was this fg map
        {"path": "gone.png", "sha256": "0" * 64, "fg_ratio": None, "noise_level": None, "seed": 0,
         "views": ["views/../../etc/passwd"], "fg_map": None},  # original absent, bad key, no fg map
    ]

    def read_original(row):
        return originals[row["path"]]  # KeyError for gone.png → placeholder

    grid = render_grid(rows, memory_store, read_original, thumb=THUMB)
    assert grid.size == grid_size(3, 2, THUMB) == (PAD + 4 * (THUMB + PAD), HEADER_H + 3 * (THUMB + CAPTION_H + PAD))

    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(int)
    assert decoded.shape == (grid.height, grid.width, 3)

    def tile(row: int, col: int) -> np.ndarray:
        x, y = PAD + col * (THUMB + PAD), HEADER_H + row * (THUMB + CAPTION_H + PAD)
        return decoded[y:y + THUMB, x:x + THUMB]

    def is_placeholder(t: np.ndarray) -> bool:  # mostly exactly the placeholder grey, with some text
        return (t == np.array(PLACEHOLDER)).all(axis=-1).mean() > 0.8

    present = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 2)]
    missing = [(1, 1), (1, 3), (2, 0), (2, 1), (2, 2)]
    for rc in present:
        assert not is_placeholder(tile(*rc)), rc
        assert tile(*rc).std() > 5, rc  # a real picture, not a flat tile
    for rc in missing:
        assert is_placeholder(tile(*rc)), rc
        assert (tile(*rc) != np.array(PLACEHOLDER)).any(), rc  # with its "missing" text
    # the original's tile is the original, scaled to fit (120×90 → 64×48, centred vertically)
    expected = np.asarray(Image.open(io.BytesIO(a["original"])).convert("RGB").resize((THUMB, 48))).astype(int)
    assert np.abs(tile(0, 0)[8:56] - expected).mean() < 12


def test_render_grid_without_rows_or_views():
    store = ObjectStore(f"memory://gallery-{uuid.uuid4().hex}")
    assert render_grid([], store, lambda row: b"", thumb=THUMB).size == grid_size(0, 1, THUMB)
    grid = render_grid([{"path": "x", "fg_ratio": 0.5, "noise_level": 3}], store, lambda row: b"not an image",
                       thumb=THUMB)
    assert grid.size == grid_size(1, 0, THUMB)


# ---------------------------------------------------------------- /gallery and /inputs


def _app(tmp_path):
    settings = Settings(model="tiny", store_url=f"file://{tmp_path}/store")
    store = ObjectStore(settings.store_url)
    app = create_app(settings, MemoryJobQueue("g"), store)
    add_gallery_route(app, store)
    return app, store


def test_gallery_page_escapes_text_and_handles_empty_store(tmp_path):
    app, store = _app(tmp_path)
    client = TestClient(app)
    r = client.get("/gallery")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "No generation results yet" in r.text and "<img" not in r.text

    res = _put_result(store, 1, 1)
    evil = dict(res["meta"], noise_level="<script>alert(1)</script>", fg_basis='"><img src=x>',
                views=[{"key": 'views/"><script>'}])
    store.put(f"views/{res['sha']}/{'e' * 32}/meta.json", json.dumps(evil).encode())
    store.put(f"views/{'f' * 64}/{'e' * 32}/meta.json", b"{not json")
    page = client.get("/gallery").text
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '"><img src=x>' not in page and "<img src=x" not in page
    assert "unreadable result document" in page
    assert "http://" not in page and "https://" not in page  # no external resources
    assert page.count("<section") == 3
    assert client.get("/gallery?limit=1").text.count("<section") == 1
    assert client.get("/gallery?limit=0").status_code == 422


def test_inputs_route(tmp_path):
    app, store = _app(tmp_path)
    client = TestClient(app)
    png = _put_result(store, 1, 1)
    jpeg = _put_result(store, 2, 1, fmt="JPEG")
    r = client.get(f"/inputs/{png['sha']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == png["original"]
    r = client.get(f"/inputs/{jpeg['sha']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content == jpeg["original"]
    assert client.get(f"/inputs/{png['sha']}", headers={"If-None-Match": r.headers["etag"]}).status_code == 200  # other etag
    etag = client.get(f"/inputs/{png['sha']}").headers["etag"]
    assert client.get(f"/inputs/{png['sha']}", headers={"If-None-Match": etag}).status_code == 304

    for bad in ["abc", "g" * 64, png["sha"].upper(), png["sha"] + "0", png["sha"] + "%0A", "%2E%2E"]:
        r = client.get(f"/inputs/{bad}")
        assert r.status_code == 400 and r.json()["error"] == "invalid_sha", (bad, r.status_code, r.text)
    # a path with slashes matches no route at all: a 404, and certainly no file
    r = client.get("/inputs/..%2F..%2Fetc%2Fpasswd")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    r = client.get(f"/inputs/{'0' * 64}")
    assert r.status_code == 404 and r.json()["error"] == "unknown_input"
    assert client.get("/inputs/abc").json()["error"] == "invalid_sha"


# ---------------------------------------------------------------- headless Chromium


def _chromium(exe: str, profile, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1200,900", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_gallery_renders_in_headless_chromium(tmp_path):
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Debian's chromium is not installed: `apt-get update && apt-get install -y chromium` "
                    "(the gallery must be checked in a real browser)")
    app, store = _app(tmp_path)
    results = [_put_result(store, 1, 2), _put_result(store, 2, 1, fmt="JPEG")]
    expected_images = sum(2 + len(r["meta"]["views"]) for r in results)  # original + fg map + views

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/gallery"

        shot = tmp_path / "shot.png"
        proc = _chromium(exe, tmp_path / "profile-shot", f"--screenshot={shot}", url)
        assert shot.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
        with Image.open(shot) as img:
            pixels = np.asarray(img.convert("RGB")).astype(float)
        assert pixels.shape[:2] == (900, 1200)
        assert pixels.var() > 100, "the screenshot is blank"

        proc = _chromium(exe, tmp_path / "profile-dom", "--dump-dom", "--virtual-time-budget=5000", url)
        dom = proc.stdout
        assert "GenView gallery" in dom, f"no page in the DOM dump (rc {proc.returncode}): {proc.stderr[-2000:]}"
        assert len(re.findall(r"<img\b", dom)) == expected_images
        loaded = re.search(r'data-loaded="(\d+)"', dom)
        assert loaded, "the page's load script did not run"
        assert int(loaded.group(1)) == expected_images, f"{loaded.group(1)} of {expected_images} images loaded"
    finally:
        server.should_exit = True
        thread.join(10)


def test_both_renderers_caption_from_one_item_model():
    row = {"path": "a.png", "sha256": "a" * 64, "fg_ratio": 0.41234, "noise_level": 200, "seed": 0, "q": [0.5, 0.75],
           "views": ["views/x/y/0.png"], "fg_map": "views/x/y/fg.png"}
    meta = {"fg_ratio": 0.41234, "noise_level": 200, "fg_basis": "fitted", "seed": 0, "size": 64,
            "views": [{"key": "views/x/y/0.png", "q": 0.5}, {"key": "views/x/y/1.webp", "q": 0.75}],
            "fg_map": "views/x/y/fg.png"}
    sheet, page = GalleryItem.from_row(row), GalleryItem.from_result("a", "a" * 64, meta)
    assert sheet.caption() == "a.png  fg=0.412  level=200  q=0.50,0.75"
    assert sheet.caption_fields() == page.caption_fields()
    assert page.views == ("views/x/y/0.png", "views/x/y/1.webp") and ("fg basis", "fitted") in page.details
    assert GalleryItem.from_row(ManifestRow.model_validate(row)).caption() == sheet.caption()
