"""Scorer worker: scores the pairs of many requests in shared encoder passes and caches each answer."""

from __future__ import annotations

import json
import logging

import torch

from genview.basis import PER_IMAGE, BasisCache
from genview.queue import Delivery, JobQueue
from genview.scoring import PairScorer
from genview.store import ObjectNotFound, ObjectStore, input_key, score_key
from services.scorer.pairs import decode_pairs

log = logging.getLogger(__name__)


class ScorerWorker:
    """Turns scoring jobs (a stored pairs tensor each) into stored {s_f, s_b, q} documents."""

    def __init__(self, scorer: PairScorer, queue: JobQueue, store: ObjectStore, basis_refresh_s: float = 10.0):
        self.scorer, self.queue, self.store = scorer, queue, store
        self.bases = BasisCache(store, scorer.encoder.encoder_id, basis_refresh_s)

    def handle(self, deliveries: list[Delivery]) -> None:
        """Complete or fail every delivery; jobs with the same image size and basis share forward passes."""
        groups: dict[tuple, list[tuple[Delivery, torch.Tensor]]] = {}
        for d in deliveries:
            try:
                cached = self.store.get(score_key(d.payload["sha"], d.payload["phash"]))
                self.queue.complete(d, json.loads(cached))
                continue
            except ObjectNotFound:
                pass
            try:
                pairs = decode_pairs(self.store.get(input_key(d.payload["sha"])))
            except Exception as exc:
                self.queue.fail(d, f"cannot read pairs {d.payload.get('sha')}: {type(exc).__name__}: {exc}")
                continue
            groups.setdefault((tuple(pairs.shape[2:]), d.payload["basis"]), []).append((d, pairs))
        for (_, basis_id), items in groups.items():
            try:
                quality = self.scorer.score(torch.cat([p for _, p in items]), self.bases.matching(basis_id))
            except Exception as exc:  # e.g. out of memory: the jobs are retried
                log.exception("scoring failed for %d jobs", len(items))
                for d, _ in items:
                    self.queue.fail(d, f"scoring failed: {type(exc).__name__}: {exc}")
                continue
            start = 0
            for d, pairs in items:
                part = slice(start, start + pairs.shape[0])
                start += pairs.shape[0]
                result = {"s_f": quality.s_f[part].tolist(), "s_b": quality.s_b[part].tolist(),
                          "q": quality.q[part].tolist(), "fg_basis": "per-image" if basis_id == PER_IMAGE else "fitted",
                          "basis_id": basis_id}
                key = score_key(d.payload["sha"], d.payload["phash"])
                self.store.put(key, json.dumps(result).encode())
                self.queue.complete(d, json.loads(self.store.get(key)))
