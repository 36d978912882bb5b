"""`genview serve`: the whole system in one process on one port."""

from __future__ import annotations

import httpx
import pytest

from harness.images import png_bytes
from harness.processes import service_env, start_api, start_tiny_serve


@pytest.mark.slow
def test_serve_with_tiny_presets_generates_and_scores(model_cache, tmp_path):
    proc, base = start_tiny_serve(tmp_path, model_cache)
    try:
        r = httpx.post(f"{base}/generate", params={"wait": "true", "timeout": "120"},
                       files={"image": ("x.png", png_bytes(seed=1), "image/png")},
                       data={"steps": "2", "size": "40", "noise_level": "auto:per-image"}, timeout=150)
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
        view = httpx.get(base + r.json()["views"][0]["url"])
        assert view.status_code == 200
        s = httpx.post(f"{base}/score", files={"original": ("o.png", png_bytes(seed=1)), "view": ("v.png", view.content)},
                       params={"basis": "per-image"}, timeout=60)
        assert s.status_code == 200 and set(s.json()) >= {"s_f", "s_b", "q"}, s.text
        assert -2 <= s.json()["q"] <= 2
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}
        exported = httpx.get(f"{base}/metrics").text
        assert "genview_queue_depth" in exported and "genview_worker_gpu_idle_ratio " in exported  # + the worker's
    finally:
        proc.stop()


@pytest.mark.slow
def test_serve_without_gpu_falls_back_to_tiny_models_and_says_so(model_cache, tmp_path):
    """The real presets on a CPU: serve the tiny models, say so first in the log and in every answer's `model`."""
    env = service_env(device="cpu", model_cache=model_cache, store_url=f"file://{tmp_path / 'data'}")
    proc, base = start_api("serve", env, tmp_path)
    try:
        first = next(line for line in proc.tail(100_000).splitlines() if "genview serve:" in line)
        assert "model tiny + tiny" in first and "no CUDA GPU for sd21-unclip-h, convnext-base-w" in first, first
        r = httpx.post(f"{base}/generate", params={"wait": "true", "timeout": "120"},
                       files={"image": ("x.png", png_bytes(seed=2), "image/png")},
                       data={"steps": "1", "size": "32", "noise_level": "auto:per-image"}, timeout=150)
        assert r.status_code == 200 and r.json()["model"] == "tiny", r.text
    finally:
        proc.stop()


@pytest.mark.slow
def test_missing_bases_are_fitted_through_both_apis_with_api_keys(model_cache, tmp_path):
    """Clients fit a missing basis with uploads (`POST /inputs`), so tenants hold; a failed fit says why."""
    from genview.client import GeneratorClient
    from genview.dataset_gen import ensure_basis
    from genview.training.quality import QualityScorer
    from genview.training.views import SourceNotReady
    from harness.images import image_folder

    images = image_folder(tmp_path / "images", per_class=3)
    env = service_env(model="tiny", scorer_model="tiny", device="cpu", model_cache=model_cache,
                      store_url=f"file://{tmp_path / 'data'}", api_keys="key-a,key-b", min_fit_images="1")
    proc, base = start_api("serve", env, tmp_path)
    try:
        with pytest.raises(SourceNotReady, match="no fitted PCA basis: fit one"):
            QualityScorer.service(base, api_key="key-a")  # never per-crop PCA unasked
        (tmp_path / "bad.png").write_bytes(b"not an image")
        with pytest.raises(SourceNotReady, match="fitting one on the training images failed: none of the 1"):
            QualityScorer.service(base, api_key="key-a", fit_paths=[str(tmp_path / "bad.png")])
        paths = sorted(str(p) for p in images.rglob("*.png"))
        QualityScorer.service(base, api_key="key-a", fit_paths=paths, fit_num=4).close()
        generator = GeneratorClient(base, api_key="key-b")
        assert ensure_basis(generator, str(images), 4).images == 4  # generate-dataset's fit, as tenant B
        assert ensure_basis(generator, str(images), 4) is None
        def current(route: str, key: str) -> str:
            return httpx.get(base + route, headers={"X-API-Key": key}).json()["basis_id"]

        # each tenant's fit is its own: A has a scorer basis, B a generator basis, neither the other's
        assert current("/score/basis", "key-a") != "per-image" and current("/basis", "key-b") != "per-image"
        assert current("/basis", "key-a") == "per-image" and current("/score/basis", "key-b") == "per-image"
    finally:
        proc.stop()
