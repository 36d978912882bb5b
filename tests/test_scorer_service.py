"""Scorer end to end: `genview scorer-api` → Redis → `genview scorer-worker` → store, against the in-process scorer."""

from __future__ import annotations

import io
import subprocess

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save

from genview.method.quality import quality_weights
from genview.models.scorer_encoder import ScorerEncoder
from genview.scoring import PairScorer
from services.scorer.pairs import pair_from_images
from harness.images import png_bytes
from harness.processes import genview_cmd, service_env, start_api, start_worker

pytestmark = pytest.mark.slow  # end-to-end: API and worker processes on Redis


@pytest.fixture(scope="module")
def scorer_service(redis_url, model_cache, tmp_path_factory):
    """One scorer API and worker for the module (Redis db 1, a file store)."""
    logs = tmp_path_factory.mktemp("scorer")
    env = service_env(scorer_model="tiny", device="cpu", model_cache=model_cache, redis_url=redis_url,
                      store_url=f"file://{logs / 'store'}", max_score_pairs="8", max_batch_wait_ms="20",
                      min_fit_images="1")
    api, base = start_api("scorer-api", env, logs)
    worker = start_worker("scorer-worker", env, logs)
    yield base, env
    worker.stop()
    api.stop()


@pytest.fixture(scope="module")
def local(model_cache):
    return PairScorer(ScorerEncoder.load("tiny", "cpu", model_cache))


def _rgb(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB")))


PER_IMAGE = {"basis": "per-image"}  # asked for by name: no fitted basis is needed


def _score(base: str, original: bytes, view: bytes, params: dict | None = None) -> httpx.Response:
    return httpx.post(f"{base}/score", files={"original": ("o.png", original), "view": ("v.png", view)},
                      params=PER_IMAGE if params is None else params, timeout=60)


@pytest.fixture(scope="module")
def scorer_base(scorer_service):
    return scorer_service[0]


def test_without_a_basis_scoring_is_409_unless_per_image_is_asked_for(scorer_base):
    """The one basis rule: the scorer answers as the generator does (same error body and hint)."""
    from genview.basis import BASIS_HINT

    pair = save({"pairs": torch.zeros(1, 2, 32, 32, 3, dtype=torch.uint8)})
    for r in (_score(scorer_base, png_bytes(seed=1), png_bytes(seed=2), params={}),
              httpx.post(f"{scorer_base}/score/batch", content=pair, timeout=60)):
        assert r.status_code == 409 and r.json() == {"error": "basis_required", "detail": BASIS_HINT}, r.text
    per_image = httpx.post(f"{scorer_base}/score/batch", params=PER_IMAGE, content=pair, timeout=60).json()
    assert per_image["fg_basis"] == "per-image" and per_image["basis_id"] is None
    assert httpx.get(f"{scorer_base}/score/basis").json()["basis_id"] == "per-image"


def test_identical_pair_scores_one_one_zero(scorer_base):
    image = png_bytes(200, 150, seed=3)
    r = _score(scorer_base, image, image)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["s_f"] == pytest.approx(1, abs=1e-5) and body["s_b"] == pytest.approx(1, abs=1e-5)
    assert body["q"] == pytest.approx(0, abs=1e-5) and body["fg_basis"] == "per-image"


def test_batch_agrees_with_single_pairs_and_with_in_process_scoring(scorer_base, local):
    images = [png_bytes(240, 200, seed=s) for s in range(10, 16)]
    pairs = torch.cat([pair_from_images(_rgb(images[i]), _rgb(images[i + 3])) for i in range(3)])
    gamma = 2.0
    r = httpx.post(f"{scorer_base}/score/batch", params={"gamma": gamma, **PER_IMAGE}, content=save({"pairs": pairs}),
                   timeout=60)
    assert r.status_code == 200, r.text
    batch = r.json()
    singles = [_score(scorer_base, images[i], images[i + 3]).json() for i in range(3)]
    expected = local.score(pairs, None, per_image=True)
    for key in ("s_f", "s_b", "q"):
        assert batch[key] == pytest.approx([s[key] for s in singles], abs=1e-5)
        assert batch[key] == pytest.approx(getattr(expected, key).tolist(), abs=1e-5)
    q = torch.tensor(batch["q"])
    assert batch["w"] == pytest.approx((3 * torch.softmax(gamma * q, 0)).tolist(), rel=1e-5)
    assert batch["w"] == pytest.approx(quality_weights(q, gamma).tolist())
    assert sum(batch["w"]) / 3 == pytest.approx(1.0)
    again = httpx.post(f"{scorer_base}/score/batch", params=PER_IMAGE, content=save({"pairs": pairs}), timeout=60).json()
    assert "cached" not in again and again["q"] == batch["q"] and again["gamma"] == 1.0  # scored again, not cached


BAD = [
    ("malformed", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", 400, "malformed_safetensors"),
    ("empty", b"", 400, "empty_body"),
    ("float", save({"pairs": torch.zeros(1, 2, 32, 32, 3)}), 422, "invalid_pairs"),
    ("shape", save({"pairs": torch.zeros(1, 3, 32, 32, 3, dtype=torch.uint8)}), 422, "invalid_pairs"),
    ("extra", save({"pairs": torch.zeros(1, 2, 32, 32, 3, dtype=torch.uint8), "x": torch.zeros(1)}), 422,
     "invalid_pairs"),
    ("too-many", save({"pairs": torch.zeros(9, 2, 32, 32, 3, dtype=torch.uint8)}), 413, "invalid_pairs"),
]


@pytest.mark.parametrize("name,body,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_batches_get_4xx_json(scorer_base, name, body, status, code):
    r = httpx.post(f"{scorer_base}/score/batch", params=PER_IMAGE, content=body, timeout=30)
    assert r.status_code == status and r.json()["error"] == code, r.text
    assert httpx.get(f"{scorer_base}/healthz").status_code == 200


def test_bad_images_and_parameters_get_4xx_and_service_keeps_answering(scorer_base):
    good = png_bytes(seed=1)
    assert _score(scorer_base, b"garbage!" * 20, good).json()["error"] == "undecodable_image"
    assert _score(scorer_base, good, b"").json()["error"] == "empty_image"
    ok_pairs = save({"pairs": torch.zeros(1, 2, 32, 32, 3, dtype=torch.uint8)})
    r = httpx.post(f"{scorer_base}/score/batch", params={"gamma": "nan", **PER_IMAGE}, content=ok_pairs)
    assert r.status_code == 422 and r.json()["error"] == "invalid_parameters"
    assert _score(scorer_base, good, png_bytes(seed=2)).status_code == 200


def test_fitted_scorer_basis_is_used(scorer_service, tmp_path):
    base, env = scorer_service
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(64, 64, seed=70 + i))
    done = subprocess.run(genview_cmd("fit-pca", "--encoder", "scorer", "--images", str(tmp_path)), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    basis_id = httpx.get(f"{base}/score/basis").json()["basis_id"]
    assert basis_id in done.stdout
    r = _score(base, png_bytes(seed=80), png_bytes(seed=81), params={})
    assert r.status_code == 200 and (r.json()["fg_basis"], r.json()["basis_id"]) == ("fitted", basis_id), r.text
    r = _score(base, png_bytes(seed=80), png_bytes(seed=81))  # per-image by name: no basis used, none reported
    assert (r.json()["fg_basis"], r.json()["basis_id"]) == ("per-image", None)
