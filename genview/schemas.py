"""Typed documents shared by the library, both services, the client, `generate-dataset`, the gallery and the trainer."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, TypeAdapter,
                      ValidationError, WithJsonSchema, model_validator)

from genview.method.noise import NoisePolicy, parse_noise_policy
from genview.queue.base import DONE, Job
from genview.store import DEFAULT_OWNER, INPUT_KEY_PATTERN, params_hash

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


def _policy(value: object) -> NoisePolicy:
    return value if isinstance(value, NoisePolicy) else parse_noise_policy(value)


# The request's policy, parsed once; its canonical text (`NoisePolicy.spec`) only in JSON.
NoisePolicyField = Annotated[NoisePolicy, BeforeValidator(_policy), PlainSerializer(lambda p: p.spec, return_type=str),
                             WithJsonSchema({"type": "string", "description": "noise policy: 'adaptive', "
                                             "'adaptive:per-image', 'random' or 'constant:L'"})]


class GenerationParams(BaseModel):
    """Everything that determines the generated views of one input image (its hash is the cache identity)."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model: str
    noise_policy: NoisePolicyField
    basis: str | None = Field(None, description="id of the PCA basis version the request resolved at submit time "
                              "(adaptive policies only); None for a policy that uses no fitted basis")
    num_views: int = 1
    seed: int = 0
    steps: int = 20
    guidance_scale: float = 10.0
    prompt: str = ""
    size: int = 512

    @property
    def hash(self) -> str:
        """Cache identity of these parameters (part of every view key). The policy is hashed under its
        first name, `noise`, so views stored before the rename stay valid."""
        fields = self.model_dump(mode="json")
        fields["noise"] = fields.pop("noise_policy")
        return params_hash(fields)


class ViewRecord(BaseModel):
    """What was decided for one image's views, under the same names wherever it is kept: the stored result
    (`GenerationResult`), a shard's record, a manifest row (`ManifestRow`) and a gallery item."""

    fg_ratio: float = Field(description="foreground proportion p (Eq. 7)")
    fg_basis: FgBasis = Field(description="'fitted' (global PCA basis) or 'per-image' (the image's own PCA)")
    basis_id: str | None = Field(None, description="the basis version used, null when none was (fg_basis per-image)")
    noise_level: int = Field(description="the chosen embedding noise level l (Eq. 8 for the adaptive policy)")


class GenerationResult(ViewRecord):
    """The stored result of one (input, parameters): its view record, policy, views and foreground map."""

    noise_policy: NoisePolicyField
    seed: int = Field(description="the request seed; each view's own seed is derived from it (view_seed)")
    size: int
    views: list[ViewRef]
    fg_map: str = Field(description="store key of the foreground map image")

    def object_keys(self) -> list[str]:
        """The store objects this document names (a result is only valid while they all exist)."""
        return [*(v.key for v in self.views), self.fg_map]


MODEL_FIELD = Field(None, description="the model serving this API ('tiny': small random weights, meaningless pictures)")
GENERATE, SCORE, FIT_BASIS = "generate", "score", "fit-basis"  # the job kinds (`kind` of every queue payload)


class GenerateJob(BaseModel):
    """Queue payload of a generation: the input's SHA-256 (its bytes are stored under `inputs/`) and parameters."""

    kind: Literal[GENERATE] = GENERATE
    sha: str = Field(pattern=r"^[0-9a-f]{64}$")
    params: GenerationParams
    tenant: str | None = Field(None, description="who submitted it (only they see or cancel it)")


class ScoreJob(BaseModel):
    """Queue payload of a scoring job: the stored pairs body, the basis it is keyed on, whether to cache."""

    kind: Literal[SCORE] = SCORE
    body: str = Field(description="id of the transient pairs body (`score_body_key`)")
    cache: bool = Field(description="single pairs: keep the answer under `score_key(tenant, body, phash)`")
    phash: str
    basis: str | None = Field(description="id of the basis version resolved at submit time; None: per-image, by name")
    tenant: str


MAX_FIT_IMAGES = 100_000  # the most inputs one basis fit reads


def _json_integer(value: object) -> object:
    """A JSON integer as JSON Schema reads it (`3` or `3.0`), never `true` or `"3"` (pydantic's lax mode takes both)."""
    if isinstance(value, (bool, str)):
        raise ValueError("must be an integer")
    return value


class FitBasisRequest(BaseModel):
    """`POST /basis/fit`: fit on `num` of the tenant's stored inputs or on the given input keys (its own)."""

    num: Annotated[int, BeforeValidator(_json_integer)] = Field(1000, ge=1, le=MAX_FIT_IMAGES,
                                                                description="how many of your inputs to sample")
    keys: list[Annotated[str, Field(pattern=INPUT_KEY_PATTERN)]] | None = Field(
        None, min_length=1, max_length=MAX_FIT_IMAGES, description="fit on exactly these inputs (`inputs/<sha256>`)")


class FitBasisJob(FitBasisRequest):
    """Queue payload of a basis fit: whose inputs it samples (`tenant`; None: every input, an open service),
    whose basis version it becomes (`owner`), and the fewest usable images it accepts."""

    kind: Literal[FIT_BASIS] = FIT_BASIS
    tenant: str | None = None
    owner: str = Field(DEFAULT_OWNER, description="the basis owner: a tenant, or the operator's default")
    min_images: int = Field(1, ge=1)


JobPayload = Annotated[GenerateJob | ScoreJob | FitBasisJob, Field(discriminator="kind")]
_PAYLOAD = TypeAdapter(JobPayload)
INVALID_PAYLOAD = "invalid_payload"


class InvalidPayload(ValueError):
    """A queue payload that is no JobPayload: the job fails for good (a retry cannot fix it)."""


def parse_payload(payload: object) -> GenerateJob | ScoreJob | FitBasisJob:
    """The typed payload of a job read from the queue; InvalidPayload saying what is wrong."""
    try:
        return _PAYLOAD.validate_python(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors())
        raise InvalidPayload(f"{INVALID_PAYLOAD}: {problems}") from None


def to_queue(payload: GenerateJob | ScoreJob | FitBasisJob) -> dict:
    """A payload as the queue stores it (JSON)."""
    return payload.model_dump(mode="json")


R = TypeVar("R")


class JobDocument(BaseModel, Generic[R]):
    """A queued job as every service reports it: status, timestamps, deliveries, error, and its result once done."""

    job_id: str
    status: JobStatus
    created: float | None = Field(None, description="submission time, Unix seconds")
    updated: float | None = Field(None, description="last change, Unix seconds")
    deliveries: int = Field(0, description="how often a worker was handed the job")
    error: str | None = None
    result: R | None = None

    @classmethod
    def of(cls, job: Job, error: str | None = None, **extra):
        """The document of a queue job (`error`: the job's error as clients may see it)."""
        return cls(job_id=job.job_id, status=job.status, created=job.created, updated=job.updated,
                   deliveries=job.deliveries, error=error, result=job.result if job.status == DONE else None, **extra)


COMPAT = "deprecated (one release): the same field of `result`, repeated for older clients; read `result`"
COMPAT_FIELDS = ("fg_ratio", "fg_basis", "basis_id", "noise_level", "noise_policy", "seed", "size", "views", "fg_map")


class GenerationJobDocument(JobDocument[GenerationResult]):
    """`POST /generate` and `GET /jobs/{id}`. The result's fields are also repeated at the top level (`COMPAT`)."""

    model: str | None = MODEL_FIELD
    cached: bool = False
    fg_ratio: float | None = Field(None, description=COMPAT)
    fg_basis: FgBasis | None = Field(None, description=COMPAT)
    basis_id: str | None = Field(None, description=COMPAT)
    noise_level: int | None = Field(None, description=COMPAT)
    noise_policy: NoisePolicyField | None = Field(None, description=COMPAT)
    seed: int | None = Field(None, description=COMPAT)
    size: int | None = Field(None, description=COMPAT)
    views: list[ViewRef] | None = Field(None, description=COMPAT)
    fg_map: str | None = Field(None, description=COMPAT)

    @model_validator(mode="after")
    def _compatibility_view(self) -> GenerationJobDocument:
        if self.result is not None:
            for name in COMPAT_FIELDS:
                setattr(self, name, getattr(self.result, name))
        return self


class PairScores(BaseModel):
    """Stored scores of a batch of pairs: s_f, s_b (Eq. 11), q (Eq. 12), one per pair."""

    s_f: list[float]
    s_b: list[float]
    q: list[float]
    fg_basis: FgBasis
    basis_id: str | None = Field(None, description="the basis version used, null for per-image scores")


class ScoreResult(BaseModel):
    """`POST /score`: the scores of one pair."""

    s_f: float
    s_b: float
    q: float
    fg_basis: FgBasis
    basis_id: str | None = Field(None, description="the basis version used, null for per-image scores")
    cached: bool = False
    model: str | None = MODEL_FIELD


class BatchScoreResult(PairScores):
    """`POST /score/batch`: the scores plus the weights w (Eq. 13) for `gamma` (batches are never cached)."""

    model: str | None = MODEL_FIELD
    gamma: float
    w: list[float]


class ScoreJobDocument(JobDocument[PairScores]):
    """`GET /score/jobs/{id}` and a 202 answer of the scorer."""


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


class BasisVersion(BaseModel):
    """One immutable PCA basis version: its id (a content fingerprint), how it was made, when."""

    basis_id: str
    images: int = Field(0, description="images it was fitted on (0: imported with a given threshold)")
    threshold: float
    created: float = Field(description="Unix seconds")


class BasisInfo(BaseModel):
    """`GET /basis`: the basis version the caller's requests resolve to now, and the caller's versions."""

    encoder_id: str
    basis_id: str = Field(description="the current basis version (yours, else the operator's default), or "
                          "'per-image' when there is none")
    source: Literal["own", "default"] | None = Field(None, description="whose version is current: yours or the "
                                                     "operator's read-only default (null: none)")
    default_id: str | None = Field(None, description="the operator's published default version, if any")
    versions: list[BasisVersion] = Field([], description="your versions, oldest first (any of them, or the default, "
                                         "can be pinned with `PUT …/basis/current`)")


class PinBasisRequest(BaseModel):
    """`PUT /basis/current`: make one of your versions (or the operator's default) your current basis."""

    basis_id: str = Field(pattern=r"^[0-9a-f]{16}$")


class BasisFitResult(BaseModel):
    """The result of a basis fit job: which basis was saved, from how many images."""

    encoder_id: str
    basis_id: str
    key: str = Field(description="store key of the saved basis")
    images: int
    threshold: float


class FitJobDocument(JobDocument[BasisFitResult]):
    """`POST /basis/fit` and `GET /basis/jobs/{id}` (and the scorer's): a basis fit's status, its result once done."""

    images: int | None = Field(None, description="at submit: how many inputs the fit will use (at most)")


class InputRef(BaseModel):
    """`POST /inputs`: a stored input image, by content (the key `POST /basis/fit` and `/score/basis/fit` take)."""

    key: str = Field(description="store key of the input, `inputs/<sha256>`")
    sha256: str = Field(description="SHA-256 of the image bytes, 64 lowercase hex characters")
