"""HTTP clients for the generator and scorer services (httpx), with retries and backoff."""

from __future__ import annotations

import io
import time

import httpx
import torch
from safetensors.torch import save

from genview.schemas import BasisFitResult, BasisInfo, BatchScoreResult, JobDocument

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


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

    def score_batch(self, pairs: torch.Tensor, gamma: float = 1.0, jpeg_quality: int | None = None) -> BatchScoreResult:
        """s_f, s_b, q, w of uint8 pairs [N, 2, H, W, 3], sent raw or, with `jpeg_quality`, as JPEG crops (~10× smaller)."""
        body = save({"pairs": pairs.contiguous()}) if jpeg_quality is None else jpeg_pairs_body(pairs, jpeg_quality)
        return BatchScoreResult.model_validate(self.request(
            "POST", "/score/batch", params={"gamma": str(gamma)}, content=body,
            headers={"Content-Type": "application/octet-stream"}).json())
