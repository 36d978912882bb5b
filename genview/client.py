"""HTTP clients for the generator and scorer services (httpx), with retries and backoff."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch
from safetensors.torch import save

from genview.image_files import read_bytes
from genview.pca_fit import sample_paths
from genview.schemas import BasisFitResult, BasisInfo, BatchScoreResult, GenerationJobDocument, InputRef
from genview.store import sha256_hex

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
REFUSED_IMAGE = frozenset({400, 413, 415})  # `POST /inputs` answers for an image it will not store


def jpeg_pairs_body(pairs: torch.Tensor, quality: int = 95) -> bytes:
    """A `/score/batch` body of JPEG-encoded crops: `pairs_jpeg` (the files, concatenated) and `lengths` [N, 2]."""
    from PIL import Image

    files = []
    for image in pairs.flatten(0, 1):
        buf = io.BytesIO()
        Image.fromarray(image.numpy()).save(buf, format="JPEG", quality=quality)
        files.append(buf.getvalue())
    lengths = torch.tensor([len(f) for f in files], dtype=torch.int64).view(-1, 2)
    return save({"pairs_jpeg": torch.frombuffer(bytearray(b"".join(files)), dtype=torch.uint8), "lengths": lengths})


def _form(fields: dict) -> dict[str, str]:
    """`POST /generate` fields (or `GET /views/lookup` query parameters) as text; None leaves a field out."""
    return {k: str(v) for k, v in fields.items() if v is not None}


class ServiceUnavailable(RuntimeError):
    """The service could not be reached or kept failing after all retries."""


class ServiceClient:
    """Base: one pooled httpx client, API key, `request` with exponential backoff on transient errors; input
    uploads and the service's PCA basis (read, fit, fit on a sample of training images)."""

    basis_route: str  # where the service's PCA basis is: `/basis` (generator) or `/score/basis` (scorer)

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 300.0, retries: int = 5,
                 backoff_s: float = 0.5):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.retries, self.backoff_s = retries, backoff_s

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        """Send, retrying connection errors and 429/5xx; 4xx errors are raised at once (HTTPStatusError)."""
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, url, **kwargs)
                if response.status_code not in RETRY_STATUS:
                    response.raise_for_status()
                    return response
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2 ** attempt)
        raise ServiceUnavailable(f"{method} {self.http.base_url}{url} failed {self.retries + 1} times: {problem}")

    def close(self) -> None:
        self.http.close()

    def upload_input(self, image: bytes) -> str:
        """Store an image as an input (`POST /inputs`); its key, `inputs/<sha256>`."""
        return InputRef.model_validate(self.request("POST", "/inputs", files={"image": ("image", image)}).json()).key

    def basis(self) -> BasisInfo:
        """This caller's current PCA basis version ('per-image' when there is none) and its versions."""
        return BasisInfo.model_validate(self.request("GET", self.basis_route).json())

    def fit_basis(self, num: int, keys: list[str] | None = None, wait_s: float = 3600.0) -> BasisFitResult:
        """Fit the service's PCA basis on its worker (`POST …/basis/fit`) and wait for the job's result."""
        job = self.request("POST", f"{self.basis_route}/fit", json={"num": num, "keys": keys}).json()
        deadline = time.monotonic() + wait_s
        while job["status"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = self.request("GET", f"{self.basis_route}/jobs/{job['job_id']}").json()
        if job["status"] != "done":
            raise ServiceUnavailable(f"basis fit job {job['job_id']} ended {job['status']}: {job.get('error')}")
        return BasisFitResult.model_validate(job["result"])

    def wait_for_basis(self, basis_id: str, timeout_s: float = 120.0) -> None:
        """Block until the service resolves this caller's requests to basis version `basis_id`."""
        deadline = time.monotonic() + timeout_s
        while self.basis().basis_id != basis_id:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"{self.http.base_url} did not pick up PCA basis {basis_id} within "
                                         f"{timeout_s:.0f} s")
            time.sleep(0.5)

    def fit_basis_on(self, paths: Sequence[str], num: int, seed: int = 0, wait_s: float = 3600.0,
                     concurrency: int = 8) -> BasisFitResult:
        """Fit the service's basis on a seeded sample of `num` of `paths`: upload them (`POST /inputs`), fit on
        their keys, and return once the API serves the new basis. Images the API refuses are skipped (logged)."""
        sample = sample_paths(paths, num, seed)
        with ThreadPoolExecutor(concurrency, thread_name_prefix="upload") as pool:
            keys = [k for k in pool.map(self._upload_for_fit, sample) if k is not None]
        if not keys:
            raise ValueError(f"none of the {len(sample)} sampled images could be stored as an input")
        result = self.fit_basis(len(keys), keys, wait_s=wait_s)
        self.wait_for_basis(result.basis_id, timeout_s=min(wait_s, 120.0))
        return result

    def _upload_for_fit(self, path: str) -> str | None:
        try:
            return self.upload_input(read_bytes(path))
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in REFUSED_IMAGE:
                raise
            log.warning("%s left out of the basis fit: the service refused it (%s)", path, exc.response.text[:200])
            return None


class GeneratorClient(ServiceClient):
    """`POST /generate`, `GET /views/…` and the generator's basis (`/basis`)."""

    basis_route = "/basis"

    def lookup(self, sha: str, **fields) -> GenerationJobDocument | None:
        """The cached result of the image with SHA-256 `sha` under `fields` (`GET /views/lookup`, no upload);
        None when there is none (or, with API keys, the input is not this key's)."""
        try:
            response = self.request("GET", "/views/lookup", params={"sha256": sha, **_form(fields)})
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise
        return GenerationJobDocument.model_validate(response.json())

    def generate(self, image: bytes, wait_s: float = 600.0, **fields) -> GenerationJobDocument:
        """The finished job document of one image (waits for it); `fields` are `POST /generate` form fields.
        A cached result is looked up by the image's hash first: the image is uploaded only on a miss."""
        doc = self.lookup(sha256_hex(image), **fields)
        if doc is not None:
            return doc
        doc = GenerationJobDocument.model_validate(self.request(
            "POST", "/generate", params={"wait": "true", "timeout": str(wait_s)},
            files={"image": ("image", image)}, data=_form(fields)).json())
        deadline = time.monotonic() + wait_s
        while doc.status not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(1.0)
            doc = GenerationJobDocument.model_validate(self.request("GET", f"/jobs/{doc.job_id}").json())
        if doc.status != "done":
            raise ServiceUnavailable(f"generation job {doc.job_id} ended {doc.status}: {doc.error}")
        return doc

    def view(self, key: str) -> bytes:
        """The bytes of a generated view by its store key."""
        return self.request("GET", f"/views/{key.removeprefix('views/')}").content


class ScorerClient(ServiceClient):
    """`POST /score/batch` and the scorer's basis (`/score/basis`)."""

    basis_route = "/score/basis"

    def score_batch(self, pairs: torch.Tensor, gamma: float = 1.0, jpeg_quality: int | None = None) -> BatchScoreResult:
        """s_f, s_b, q, w of uint8 pairs [N, 2, H, W, 3], sent raw or, with `jpeg_quality`, as JPEG crops (~10× smaller)."""
        body = save({"pairs": pairs.contiguous()}) if jpeg_quality is None else jpeg_pairs_body(pairs, jpeg_quality)
        return BatchScoreResult.model_validate(self.request(
            "POST", "/score/batch", params={"gamma": str(gamma)}, content=body,
            headers={"Content-Type": "application/octet-stream"}).json())
