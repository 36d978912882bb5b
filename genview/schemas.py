"""Typed documents shared by the library, both services, the client, `generate-dataset`, the gallery and the trainer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genview.method.noise import NoisePolicy, parse_noise_policy
from genview.store import params_hash

FgBasis = Literal["fitted", "per-image"]
JobStatus = str  # queued | running | done | failed (genview.queue)


class ErrorBody(BaseModel):
    """The one JSON shape of every error answer."""

    error: str = Field(description="machine-readable error code")
    detail: Any = Field(description="what is wrong (text, or a list of field problems)")


class ViewRef(BaseModel):
    """A stored generated view (or foreground map): its store key and, in API answers, its URL."""

    key: str
    url: str | None = None


class GenerationParams(BaseModel):
    """Everything that determines the generated views of one input image (its hash is the cache identity)."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model: str
    noise: str = Field(description="canonical noise policy spec (see parse_noise_policy)")
    basis: str = Field(description="PCA basis fingerprint, or 'per-image'")
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
        return params_hash(self.model_dump())

    def to_payload(self, sha: str) -> dict:
        """The queue payload of a job for input `sha`."""
        return {"sha": sha, "params": self.model_dump()}

    @classmethod
    def from_payload(cls, payload: dict) -> tuple[str, GenerationParams]:
        """Inverse of to_payload."""
        return payload["sha"], cls.model_validate(payload["params"])


class GenerationResult(BaseModel):
    """The stored result of one (input, parameters): foreground ratio, level, views, foreground map."""

    fg_ratio: float = Field(description="foreground proportion p (Eq. 7)")
    fg_basis: FgBasis = Field(description="'fitted' (global PCA basis) or 'per-image' (the image's own PCA)")
    basis_id: str
    noise_level: int = Field(description="embedding noise level l (Eq. 8 for the adaptive policy)")
    noise_policy: str
    seed: int = Field(description="the request seed; each view's own seed is derived from it (view_seed)")
    size: int
    views: list[ViewRef]
    fg_map: str = Field(description="store key of the foreground map image")


MODEL_FIELD = Field(None, description="the model serving this API ('tiny': small random weights, meaningless pictures)")


class JobDocument(BaseModel):
    """The body of `POST /generate` and `GET /jobs/{id}`: status, and the result fields once done."""

    job_id: str
    status: JobStatus
    model: str | None = MODEL_FIELD
    cached: bool = False
    error: str | None = None
    fg_ratio: float | None = None
    fg_basis: FgBasis | None = None
    basis_id: str | None = None
    noise_level: int | None = None
    noise_policy: str | None = None
    seed: int | None = None
    size: int | None = None
    views: list[ViewRef] | None = None
    fg_map: str | None = None

    @classmethod
    def build(cls, job_id: str, status: str, result: GenerationResult | dict | None = None, cached: bool = False,
              error: str | None = None, base_url: str | None = None, model: str | None = None) -> JobDocument:
        """A job document; with `base_url`, each view gets its `/views/...` URL."""
        fields = {}
        if result:
            res = GenerationResult.model_validate(result)
            views = [ViewRef(key=v.key, url=f"{base_url.rstrip('/')}/views/{v.key.removeprefix('views/')}"
                             if base_url else v.url) for v in res.views]
            fields = {**res.model_dump(exclude={"views"}), "views": views}
        return cls(job_id=job_id, status=status, cached=cached, error=error, model=model, **fields)


class PairScores(BaseModel):
    """Stored scores of a batch of pairs: s_f, s_b (Eq. 11), q (Eq. 12), one per pair."""

    s_f: list[float]
    s_b: list[float]
    q: list[float]
    fg_basis: FgBasis
    basis_id: str


class ScoreResult(BaseModel):
    """`POST /score`: the scores of one pair."""

    s_f: float
    s_b: float
    q: float
    fg_basis: FgBasis
    basis_id: str
    cached: bool = False
    model: str | None = MODEL_FIELD


class BatchScoreResult(PairScores):
    """`POST /score/batch`: the scores plus the weights w (Eq. 13) for `gamma` (batches are never cached)."""

    model: str | None = MODEL_FIELD
    gamma: float
    w: list[float]


class ScoreJobDocument(BaseModel):
    """`GET /score/jobs/{id}` and a 202 answer of the scorer."""

    job_id: str
    status: JobStatus
    result: PairScores | None = None
    error: str | None = None


class ManifestRow(BaseModel):
    """One line of `generate-dataset`'s JSON-lines manifest."""

    path: str = Field(description="image path relative to the dataset folder")
    views: list[str] = Field(description="store keys of the generated views")
    sha256: str | None = Field(None, description="SHA-256 of the original (checked by readers when given)")
    fg_ratio: float | None = None
    noise_level: int | None = None
    fg_map: str | None = None
    seed: int | None = None
    fg_basis: FgBasis | None = None
    q: float | list[float] | None = None


class BasisInfo(BaseModel):
    """`GET /basis`: the PCA basis requests are keyed on now."""

    encoder_id: str
    basis_id: str = Field(description="fingerprint of the fitted basis, or 'per-image' when none is fitted")


class FitBasisJob(BaseModel):
    """Queue payload of a basis fit (`POST /basis/fit`): fit on `num` stored inputs or the given input keys."""

    kind: Literal["fit-basis"] = "fit-basis"
    num: int = Field(1000, ge=1)
    keys: list[str] | None = None


class BasisFitResult(BaseModel):
    """The result of a basis fit job: which basis was saved, from how many images."""

    encoder_id: str
    basis_id: str
    key: str = Field(description="store key of the saved basis")
    images: int
    threshold: float


class InputRef(BaseModel):
    """`POST /inputs`: a stored input image, by content (the key `POST /basis/fit` and `/score/basis/fit` take)."""

    key: str = Field(description="store key of the input, `inputs/<sha256>`")
    sha256: str = Field(description="SHA-256 of the image bytes, 64 lowercase hex characters")
