"""The scorer's basis rule (a fitted basis unless per-image is asked for) and its worker's fit-basis jobs."""

from __future__ import annotations

import pytest
import torch

from genview.basis import DEFAULT_OWNER, BasisRequired, BasisStore
from genview.method.pca import fit_pca_basis
from genview.models.scorer_encoder import ScorerEncoder
from genview.queue import MemoryJobQueue
from genview.schemas import BasisFitResult, FitBasisJob, to_queue
from genview.scoring import PairScorer
from genview.store import ObjectStore, input_key, sha256_hex
from services.scorer.pairs import encode_pairs
from harness.images import png_bytes


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return PairScorer(ScorerEncoder.load("tiny", device="cpu", cache=str(tmp_path_factory.mktemp("scorer"))), 16)


def _pairs(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 2, 40, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_scoring_needs_a_fitted_basis_unless_per_image_is_asked_for(scorer):
    pairs = _pairs(3, 0)
    with pytest.raises(BasisRequired, match="fit-pca --encoder scorer"):
        scorer.score(pairs, None)
    per_image = scorer.score(pairs, None, per_image=True)
    basis = fit_pca_basis(scorer.encoder.tokens(pairs.flatten(0, 1)), scorer.encoder.grid)
    fitted = scorer.score(pairs, basis)
    assert per_image.q.shape == fitted.q.shape == (3,) and not torch.allclose(per_image.q, fitted.q)
    torch.testing.assert_close(scorer.score(pairs, basis, per_image=True).q, per_image.q)


def test_fit_job_fits_on_stored_images_and_pair_bodies(scorer):
    from services.scorer.worker import ScorerWorker

    store, queue = ObjectStore("memory://scorer-fit-test"), MemoryJobQueue("score", max_deliveries=1)
    keys = []
    for data in (png_bytes(48, 40, seed=1), encode_pairs(_pairs(2, 1)), b"neither"):
        keys.append(input_key(sha256_hex(data)))
        store.put(keys[-1], data)
    worker = ScorerWorker(scorer, queue, store)
    job_id, _ = queue.submit(to_queue(FitBasisJob(num=10)))
    worker.handle(queue.claim("t", 1, 0))
    job = queue.get(job_id)
    assert job.status == "done", job.error
    result = BasisFitResult.model_validate(job.result)
    assert result.images == 1 + 4  # one image, two pairs of two crops; the unreadable body is skipped
    assert BasisStore(store, scorer.encoder.encoder_id).current(DEFAULT_OWNER).fingerprint == result.basis_id
    bad_id, _ = queue.submit(to_queue(FitBasisJob(num=1, keys=[keys[2]])))
    worker.handle(queue.claim("t", 1, 0))
    bad = queue.get(bad_id)  # nothing usable: fails for good at once, saying why
    assert (bad.status, bad.deliveries) == ("failed", 1) and "too_few_images" in bad.error, bad.error


def test_batch_bodies_are_transient_unhashed_and_never_inputs(scorer, tmp_path):
    """A batch body waits under a random id (not its hash), is deleted once scored, or once its job failed for
    good; nothing of it lands under inputs/ (nor is served by /inputs), and no answer is cached."""
    from fastapi.testclient import TestClient

    from genview.settings import Settings
    from services.scorer.app import create_app
    from services.scorer.worker import ScorerWorker

    settings = Settings(model="tiny", scorer_model="tiny", store_url=f"file://{tmp_path}/s", score_timeout_s=0.05)
    queue, store = MemoryJobQueue("transient", max_deliveries=1), ObjectStore(settings.store_url)
    pairs = _pairs(2, 3)
    BasisStore(store, scorer.encoder.encoder_id).save(
        fit_pca_basis(scorer.encoder.tokens(pairs.flatten(0, 1)), scorer.encoder.grid), DEFAULT_OWNER)
    body, api = encode_pairs(pairs), TestClient(create_app(settings, queue, store))
    worker = ScorerWorker(scorer, queue, store)
    jobs = [api.post("/score/batch", content=body).json()["job_id"] for _ in range(2)]
    assert len(set(jobs)) == 2  # the same body twice: two jobs, no dedup by content
    ids = [queue.get(j).payload["body"] for j in jobs]
    assert sha256_hex(body) not in ids and all(store.exists(f"score-bodies/public/{i}") for i in ids)
    store.put(f"score-bodies/public/{ids[1]}", b"corrupt", overwrite=True)
    worker.handle(queue.claim("w", 4, 0))
    assert [queue.get(j).status for j in jobs] == ["done", "failed"]
    assert not list((tmp_path / "s").glob("score-bodies/*/*"))  # scored, or failed for good: gone either way
    assert not list((tmp_path / "s").glob("inputs/*")) and not list((tmp_path / "s").glob("scores/*"))


def test_score_answers_are_cached_per_tenant(scorer, tmp_path):
    """B never gets `cached: true` (nor A's job) for a pair A scored; each tenant's own repeat is cached."""
    from fastapi.testclient import TestClient

    from genview.settings import Settings
    from services.scorer.app import create_app
    from services.scorer.worker import ScorerWorker

    settings = Settings(model="tiny", scorer_model="tiny", store_url=f"file://{tmp_path}/s", score_timeout_s=0.05,
                        api_keys="key-a,key-b")
    queue, store = MemoryJobQueue("cache"), ObjectStore(settings.store_url)
    api, worker = TestClient(create_app(settings, queue, store)), ScorerWorker(scorer, queue, store)
    files = {"original": ("o.png", png_bytes(seed=1)), "view": ("v.png", png_bytes(seed=2))}

    def score(key: str):
        return api.post("/score", files=files, headers={"X-API-Key": key}, params={"basis": "per-image"})

    first = score("key-a")
    assert first.status_code == 202
    worker.handle(queue.claim("w", 4, 0))
    again = score("key-a")
    assert again.status_code == 200 and again.json()["cached"] is True and again.json()["basis_id"] is None
    other = score("key-b")
    assert other.status_code == 202 and other.json()["job_id"] != first.json()["job_id"]
    worker.handle(queue.claim("w", 4, 0))
    theirs = score("key-b").json()
    assert theirs["cached"] is True and theirs["q"] == again.json()["q"]
