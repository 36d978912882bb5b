"""The one job contract: every queue kind validates its payload when read; a malformed one fails for good with
`invalid_payload` and the worker process keeps serving (real Redis, real `genview *-worker` processes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genview.queue import DONE, FAILED, RedisJobQueue
from genview.schemas import (FitBasisJob, GenerateJob, GenerationParams, InvalidPayload, ScoreJob, parse_payload,
                             to_queue)
from genview.store import ObjectStore, input_key, score_body_key, sha256_hex
from harness.images import png_bytes
from harness.processes import service_env, start_worker
from services.generator.wiring import QUEUE_NAME as GENERATE
from services.scorer.pairs import encode_pairs
from services.scorer.wiring import QUEUE_NAME as SCORE

SHA = "a" * 64
PARAMS = GenerationParams(model="tiny", noise_policy="auto:per-image", steps=2, size=32)
MALFORMED = {
    "no kind": {"sha": SHA, "params": PARAMS.model_dump(mode="json")},
    "unknown kind": {"kind": "train", "sha": SHA},
    "generate, bad sha": {"kind": "generate", "sha": "not-a-sha", "params": PARAMS.model_dump(mode="json")},
    "generate, bad policy": {"kind": "generate", "sha": SHA, "params": {**PARAMS.model_dump(mode="json"),
                                                                       "noise_policy": "loud"}},
    "score, no body": {"kind": "score", "cache": False, "phash": "p", "basis": None, "tenant": "t"},
    "fit, num 0": {"kind": "fit-basis", "num": 0},
    "not an object": ["generate"],
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_each_malformed_payload_is_refused_with_a_reason(payload):
    with pytest.raises(InvalidPayload, match="^invalid_payload: "):
        parse_payload(payload)


def test_each_kind_round_trips_through_its_queue_form():
    for job in (GenerateJob(sha=SHA, params=PARAMS), ScoreJob(body="b", cache=True, phash="p", basis="x", tenant="t"),
                FitBasisJob(num=3, keys=["inputs/" + SHA])):
        assert parse_payload(to_queue(job)) == job


def _valid_job(kind: str, store: ObjectStore) -> dict:
    """A well-formed job of the queue `kind`, its inputs stored."""
    if kind == GENERATE:
        data = png_bytes(40, 40, seed=3)
        store.put(input_key(sha256_hex(data)), data)
        return to_queue(GenerateJob(sha=sha256_hex(data), params=PARAMS))
    pairs = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 2, 32, 32, 3), dtype=np.uint8))
    store.put(score_body_key("t", "body1"), encode_pairs(pairs))
    return to_queue(ScoreJob(body="body1", cache=False, phash="p", basis=None, tenant="t"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", [GENERATE, SCORE])
def test_a_worker_fails_malformed_jobs_for_good_and_keeps_serving(kind, fresh_redis_url, model_cache, tmp_path):
    store_url = f"file://{tmp_path / 'store'}"
    env = service_env(model="tiny", scorer_model="tiny", device="cpu", model_cache=model_cache,
                      redis_url=fresh_redis_url, store_url=store_url, max_deliveries="3", max_batch_wait_ms="20")
    queue = RedisJobQueue(fresh_redis_url, kind)
    bad = [queue.submit(payload)[0] for payload in MALFORMED.values() if isinstance(payload, dict)]
    other = GenerateJob(sha=SHA, params=PARAMS) if kind == SCORE else FitBasisJob(num=1)
    wrong_queue = queue.submit(to_queue(other))[0] if kind == SCORE else None
    worker = start_worker(f"{'generator' if kind == GENERATE else 'scorer'}-worker", env, tmp_path)
    try:
        for job_id in bad + ([wrong_queue] if wrong_queue else []):
            job = queue.wait(job_id, 120)
            assert (job.status, job.deliveries) == (FAILED, 1), (job, worker.tail())
            assert job.error.startswith("invalid_payload: "), job.error
        good = queue.submit(_valid_job(kind, ObjectStore(store_url)))[0]
        job = queue.wait(good, 120)
        assert job.status == DONE, (job, worker.tail())
        assert worker.popen.poll() is None, worker.tail()
    finally:
        worker.stop()
        queue.close()
