"""HTTP clients for the generator and scorer services (httpx), with retries and backoff."""

from __future__ import annotations

import time

import httpx
import torch
from safetensors.torch import save

from genview.schemas import BasisFitResult, BasisInfo, BatchScoreResult, JobDocument

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class ServiceUnavailable(RuntimeError):
    """The service could not be reached or kept failing after all retries."""


class ServiceClient:
    """Base: one pooled httpx client, API key, and `request` with exponential backoff on transient errors."""

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


class GeneratorClient(ServiceClient):
    """`POST /generate` and `GET /views/…`."""

    def generate(self, image: bytes, wait_s: float = 600.0, **fields) -> JobDocument:
        """The finished job document of one image (waits for it)."""
        data = {k: str(v) for k, v in fields.items() if v is not None}
        doc = JobDocument.model_validate(self.request(
            "POST", "/generate", params={"wait": "true", "timeout": str(wait_s)},
            files={"image": ("image", image)}, data=data).json())
        deadline = time.monotonic() + wait_s
        while doc.status not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(1.0)
            doc = JobDocument.model_validate(self.request("GET", f"/jobs/{doc.job_id}").json())
        if doc.status != "done":
            raise ServiceUnavailable(f"generation job {doc.job_id} ended {doc.status}: {doc.error}")
        return doc

    def basis(self) -> BasisInfo:
        """The PCA basis the generator keys requests on now."""
        return BasisInfo.model_validate(self.request("GET", "/basis").json())

    def fit_basis(self, num: int, keys: list[str] | None = None, wait_s: float = 3600.0) -> BasisFitResult:
        """Fit the generator's PCA basis on the server (`POST /basis/fit`) and wait for the result."""
        job = self.request("POST", "/basis/fit", json={"num": num, "keys": keys}).json()
        deadline = time.monotonic() + wait_s
        while job["status"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = self.request("GET", f"/basis/jobs/{job['job_id']}").json()
        if job["status"] != "done":
            raise ServiceUnavailable(f"basis fit job {job['job_id']} ended {job['status']}: {job.get('error')}")
        return BasisFitResult.model_validate(job["result"])

    def view(self, key: str) -> bytes:
        """The bytes of a generated view by its store key."""
        return self.request("GET", f"/views/{key.removeprefix('views/')}").content


class ScorerClient(ServiceClient):
    """`POST /score/batch`."""

    def score_batch(self, pairs: torch.Tensor, gamma: float = 1.0) -> BatchScoreResult:
        """s_f, s_b, q, w of uint8 pairs [N, 2, H, W, 3]."""
        return BatchScoreResult.model_validate(self.request(
            "POST", "/score/batch", params={"gamma": str(gamma)}, content=save({"pairs": pairs.contiguous()}),
            headers={"Content-Type": "application/octet-stream"}).json())
