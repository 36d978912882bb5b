"""Generator worker: encodes a micro-batch once, picks a noise level per image, generates all views together."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import torch
from PIL import Image

from genview.basis import PER_IMAGE, BasisCache
from genview.images import encode_png, load_rgb
from genview.method.foreground import foreground_proportion, per_image_projections, proportion_above_quantile
from genview.method.quality import foreground_map
from genview.method.noise import noise_levels
from genview.models.unclip import UnclipGenerator
from genview.queue import Delivery, JobQueue
from genview.settings import Settings
from genview.store import ObjectNotFound, ObjectStore, input_key, view_key
from services.generator.jobs import GenerationParams, fg_map_key, meta_key

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """One accepted delivery with its decoded input."""

    delivery: Delivery
    sha: str
    params: GenerationParams
    image: Image.Image


@dataclass
class _Sample:
    """One view to generate: job index, view index, and what the pipeline needs."""

    job: int
    view: int
    level: int
    seed: int


def foreground_map_png(projections: torch.Tensor, grid: int, size: int) -> bytes:
    """The min-max normalised token projections as a grayscale PNG of side `size` (white = foreground)."""
    fg = foreground_map(projections.reshape(1, grid, grid))[0]
    img = Image.fromarray((fg * 255).round().to(torch.uint8).numpy())
    return encode_png(img.resize((size, size), Image.Resampling.NEAREST))


class GeneratorWorker:
    """Turns generation jobs into stored views and result documents."""

    def __init__(self, settings: Settings, generator: UnclipGenerator, queue: JobQueue, store: ObjectStore):
        self.settings, self.generator, self.queue, self.store = settings, generator, queue, store
        self.bases = BasisCache(store, generator.encoder_id, settings.basis_refresh_s)

    def handle(self, deliveries: list[Delivery]) -> None:
        """Complete or fail every delivery of the batch."""
        jobs = [job for job in map(self._accept, deliveries) if job is not None]
        for i in range(0, len(jobs), self.settings.max_batch_size):
            chunk = jobs[i:i + self.settings.max_batch_size]
            try:
                results = self._run(chunk)
            except Exception as exc:  # e.g. out of memory: every job of the chunk is retried
                log.exception("generation failed for %d jobs", len(chunk))
                for job in chunk:
                    self.queue.fail(job.delivery, f"generation failed: {type(exc).__name__}: {exc}")
                continue
            for job, result in zip(chunk, results):
                self.queue.complete(job.delivery, result)

    def _accept(self, delivery: Delivery) -> _Job | None:
        """Decode the job's input, or finish it at once (cached result, bad input)."""
        try:
            sha, params = GenerationParams.from_payload(delivery.payload)
            cached = self.store.get(meta_key(sha, params))
            self.queue.complete(delivery, json.loads(cached))
            return None
        except ObjectNotFound:
            pass
        except Exception as exc:  # malformed payload
            self.queue.fail(delivery, f"bad job payload: {type(exc).__name__}: {exc}")
            return None
        try:
            image = load_rgb(self.store.get(input_key(sha)), self.settings.max_pixels)
        except Exception as exc:
            self.queue.fail(delivery, f"cannot read input {sha}: {type(exc).__name__}: {exc}")
            return None
        return _Job(delivery, sha, params, image)

    def _foreground(self, jobs: list[_Job], tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per job: foreground proportion p (Eq. 7) and token projections, with the basis it was keyed on."""
        ratios, projections = [], []
        for job, tok in zip(jobs, tokens):
            basis = self.bases.matching(job.params.basis)
            if basis is not None:
                ratios.append(foreground_proportion(tok[None], basis)[0])
                projections.append(basis.project(tok))
            else:
                proj = per_image_projections(tok[None], self.generator.grid)
                ratios.append(proportion_above_quantile(proj, self.settings.fg_fraction)[0])
                projections.append(proj[0])
        return torch.stack(ratios).cpu(), torch.stack(projections).cpu()

    def _run(self, jobs: list[_Job]) -> list[dict]:
        """Encode once, choose levels (Eq. 8), generate every view in shared pipeline calls, store them."""
        encoded = self.generator.encode([j.image for j in jobs])
        fg, projections = self._foreground(jobs, encoded.tokens)
        levels = [int(noise_levels(j.params.policy, fg[i:i + 1], [j.params.seed])[0]) for i, j in enumerate(jobs)]
        samples = [_Sample(i, v, levels[i], j.params.seed + v) for i, j in enumerate(jobs)
                   for v in range(j.params.num_views)]
        views: dict[tuple[int, int], Image.Image] = {}
        groups: dict[tuple[int, float], list[_Sample]] = {}
        for s in samples:
            groups.setdefault((jobs[s.job].params.steps, jobs[s.job].params.guidance_scale), []).append(s)
        for (steps, guidance), group in groups.items():
            for k in range(0, len(group), self.settings.max_batch_size):
                part = group[k:k + self.settings.max_batch_size]
                images = self.generator.generate(
                    encoded.embeds[[s.job for s in part]], torch.tensor([s.level for s in part]),
                    [s.seed for s in part], [jobs[s.job].params.prompt for s in part], steps, guidance)
                views.update({(s.job, s.view): img for s, img in zip(part, images)})
        return [self._store(j, views, i, float(fg[i]), levels[i], projections[i]) for i, j in enumerate(jobs)]

    def _store(self, job: _Job, views: dict, i: int, fg_ratio: float, level: int, projections: torch.Tensor) -> dict:
        """Write the job's views, foreground map and result document (write-once: a rerun changes nothing)."""
        fg_map = fg_map_key(job.sha, job.params)
        self.store.put(fg_map, foreground_map_png(projections, self.generator.grid, job.params.size))
        keys = []
        for v in range(job.params.num_views):
            key = view_key(job.sha, job.params.hash, v)
            img = views[(i, v)].resize((job.params.size, job.params.size), Image.Resampling.LANCZOS)
            self.store.put(key, encode_png(img))
            keys.append({"key": key})
        basis = job.params.basis
        result = {"fg_ratio": fg_ratio, "fg_basis": "per-image" if basis == PER_IMAGE else "fitted",
                  "basis_id": basis, "noise_level": level, "noise_policy": job.params.noise,
                  "seed": job.params.seed, "size": job.params.size, "views": keys, "fg_map": fg_map}
        self.store.put(meta_key(job.sha, job.params), json.dumps(result).encode())
        return json.loads(self.store.get(meta_key(job.sha, job.params)))
