"""Scorer worker: scores the pairs of many requests in shared encoder passes and caches each answer;
fits the scorer's PCA basis for `fit-basis` jobs."""

from __future__ import annotations

import logging

import torch

from genview.basis import BasisStore
from genview.images import MAX_PIXELS
from genview.pca_fit import run_fit_job
from genview.queue import Delivery, JobQueue
from genview.schemas import INVALID_PAYLOAD, FitBasisJob, PairScores, ScoreJob
from genview.scoring import PairScorer
from genview.store import ObjectNotFound, ObjectStore, score_body_key, score_key
from services.scorer.pairs import decode_fit_input, decode_pairs
from services.workers import fail_job, finish_fit_job, typed_payloads

log = logging.getLogger(__name__)


class ScorerWorker:
    """Turns scoring jobs (a stored pairs tensor each) into stored PairScores documents."""

    def __init__(self, scorer: PairScorer, queue: JobQueue, store: ObjectStore, fg_fraction: float | None = None,
                 max_pixels: int = MAX_PIXELS):
        self.scorer, self.queue, self.store = scorer, queue, store
        self.bases = BasisStore(store, scorer.encoder.encoder_id)  # versions by id, the ones in use kept decoded
        self.fit_options = {"max_pixels": max_pixels, **({"fg_fraction": fg_fraction} if fg_fraction else {})}

    def handle(self, deliveries: list[Delivery]) -> None:
        """Complete or fail every delivery; jobs with the same image size and basis share forward passes."""
        groups: dict[tuple, list[tuple[Delivery, ScoreJob, torch.Tensor]]] = {}
        for d, job in typed_payloads(self.queue, deliveries):
            if isinstance(job, FitBasisJob):
                self.fit(d, job)
            elif not isinstance(job, ScoreJob):
                self.queue.fail(d, f"{INVALID_PAYLOAD}: a scorer worker runs no {job.kind!r} jobs", permanent=True)
            elif (pairs := self._pairs(d, job)) is not None:
                groups.setdefault((tuple(pairs.shape[2:]), job.basis), []).append((d, job, pairs))
        for (_, basis_id), items in groups.items():
            self._score_group(basis_id, items)

    def _pairs(self, d: Delivery, job: ScoreJob) -> torch.Tensor | None:
        """The job's pairs to score, or None when it is finished already (a cached answer, or failed)."""
        try:
            if job.cache:
                self.queue.complete(d, self._stored(job))
                return None
        except ObjectNotFound:
            pass
        except Exception as exc:
            self._fail(d, job, f"bad scoring job: {type(exc).__name__}: {exc}")
            return None
        try:
            return decode_pairs(self.store.get(score_body_key(job.tenant, job.body)))
        except Exception as exc:
            self._fail(d, job, f"cannot read pairs {job.body}: {type(exc).__name__}: {exc}")
            return None

    def _score_group(self, basis_id: str | None, items: list[tuple[Delivery, ScoreJob, torch.Tensor]]) -> None:
        """One scoring call for jobs sharing image size and basis version (None: per-image, asked for by name)."""
        try:
            basis = None if basis_id is None else self.bases.load(basis_id)  # the version it was accepted with
            quality = self.scorer.score(torch.cat([p for _, _, p in items]), basis, per_image=basis_id is None)
        except Exception as exc:  # e.g. out of memory: the jobs are retried (a basis that is not stored: for good)
            log.exception("scoring failed for %d jobs", len(items))
            for d, job, _ in items:
                self._fail(d, job, "scoring failed", exc)
            return
        start = 0
        for d, job, pairs in items:
            part = slice(start, start + pairs.shape[0])
            start += pairs.shape[0]
            result = PairScores(s_f=quality.s_f[part].tolist(), s_b=quality.s_b[part].tolist(),
                                q=quality.q[part].tolist(), fg_basis="per-image" if basis_id is None else "fitted",
                                basis_id=basis_id)
            if job.cache:
                self.store.put(score_key(job.tenant, job.body, job.phash), result.model_dump_json().encode())
            self.queue.complete(d, result.model_dump())
            self.store.delete(score_body_key(job.tenant, job.body))  # bodies are transient: scored, then gone

    def _fail(self, delivery: Delivery, job: ScoreJob, error: str, exc: Exception | None = None) -> None:
        """Fail a scoring job; once it has failed for good its transient body goes too."""
        final = fail_job(self.queue, delivery, error, exc) if exc else self.queue.fail(delivery, error)
        if final:
            try:
                self.store.delete(score_body_key(job.tenant, job.body))
            except Exception:  # the store is down too: the body stays until a lifecycle rule removes it
                log.warning("could not delete the body of failed job %s", delivery.job_id, exc_info=True)

    def _stored(self, job: ScoreJob) -> dict:
        """The stored scores of a cached job; ObjectNotFound when there are none yet."""
        return PairScores.model_validate_json(self.store.get(score_key(job.tenant, job.body, job.phash))).model_dump()

    def fit(self, delivery: Delivery, job: FitBasisJob) -> None:
        """A `fit-basis` job: fit the scorer's basis on stored inputs (images or pair bodies), save it."""
        finish_fit_job(self.queue, delivery, lambda: run_fit_job(
            job, self.store, self.scorer.encoder, decode=decode_fit_input,
            batch_size=self.scorer.max_batch, **self.fit_options))
