"""The generation job: parameters, cache identity, and the result document (shared by API and worker)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from genview.method.noise import NoisePolicy, parse_noise_policy
from genview.store import params_hash, view_meta_key


@dataclass(frozen=True)
class GenerationParams:
    """Everything that determines the generated views of one input image."""

    model: str
    noise: str  # canonical noise policy spec
    basis: str  # PCA basis fingerprint, or 'per-image'
    num_views: int = 1
    seed: int = 0
    steps: int = 20
    guidance_scale: float = 10.0
    prompt: str = ""
    size: int = 512

    @property
    def policy(self) -> NoisePolicy:
        return parse_noise_policy(self.noise)

    @property
    def hash(self) -> str:
        """Cache identity of these parameters (part of every view key)."""
        return params_hash(asdict(self))

    def to_payload(self, sha: str) -> dict:
        """The queue payload of a job for input `sha`."""
        return {"sha": sha, "params": asdict(self)}

    @classmethod
    def from_payload(cls, payload: dict) -> tuple[str, GenerationParams]:
        """Inverse of to_payload."""
        return payload["sha"], cls(**payload["params"])


def meta_key(sha: str, params: GenerationParams) -> str:
    """Where the result document of (input, params) lives."""
    return view_meta_key(sha, params.hash)


def fg_map_key(sha: str, params: GenerationParams) -> str:
    """Where the foreground map of (input, params) lives (a PNG, served by /views like the views)."""
    return f"views/{sha}/{params.hash}/fg.png"


def cache_job_id(sha: str, params: GenerationParams) -> str:
    """The job id under which a cached result is reported (no queue job exists for it)."""
    return f"{sha}.{params.hash}"
