"""Where the trainer's generated views come from (`ViewSource`), a content-keyed local cache, and the prefetcher.

A view is identified by its content key: the input image's SHA-256 plus a hash of everything that determines
the generated view (policy, seed, steps, size, model, basis). A run folder reused with another policy, model or
data folder therefore never serves a stale view.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from genview.client import GeneratorClient, ServiceClient, ServiceUnavailable
from genview.dataset_gen import read_manifest
from genview.basis import PER_IMAGE, uses_fitted_basis
from genview.image_files import read_bytes, relative_to, source_root
from genview.method.noise import NoisePolicy
from genview.store import ObjectStore, params_hash, sha256_hex

log = logging.getLogger(__name__)
TRANSIENT = (ServiceUnavailable, OSError)  # worth retrying: the service or the store is down for a while


class SourceNotReady(RuntimeError):
    """The view source cannot serve views (checked at start, so the run fails within seconds)."""


class ViewMissing(RuntimeError):
    """The source does not hold this image's view and will not produce it."""


class ViewSource(Protocol):
    """Generated views by image: `key` names the view's content, `fetch` gets its bytes."""

    def check(self) -> None:
        """Raise SourceNotReady (one clear line) if the source cannot serve views (run before anything slow)."""

    def key(self, path: str, image: bytes) -> str:
        """Content key of the view of this image: input SHA-256 + generation-parameter hash (a file name)."""

    def fetch(self, path: str, image: bytes) -> bytes:
        """The view's encoded bytes; TRANSIENT errors may be retried, ViewMissing may not."""

    def close(self) -> None:
        """Release connections."""


def content_key(image: bytes, phash: str) -> str:
    """`{sha256(image)}-{phash}`: the one naming rule of cached views."""
    return f"{sha256_hex(image)}-{phash}"


@dataclass(frozen=True)
class ServiceRequest:
    """The generation parameters the trainer sends with every image."""

    noise_policy: NoisePolicy
    steps: int
    size: int
    seed: int

    def form(self) -> dict[str, str]:
        """The `POST /generate` form fields (the policy as its canonical text)."""
        return {"noise_policy": self.noise_policy.spec, "steps": str(self.steps), "size": str(self.size),
                "seed": str(self.seed)}


class ServiceViewSource:
    """Views from the generator service (`GET /views/lookup`, on a miss `POST /generate`; then `GET /views/…`)."""

    def __init__(self, url: str, policy: NoisePolicy, steps: int, size: int, seed: int, retries: int = 3,
                 api_key: str | None = None):
        self.url = url
        self.request = ServiceRequest(policy, steps, size, seed)
        self.client = GeneratorClient(url, api_key=api_key, retries=retries)
        self.phash: str | None = None
        self.levels: dict[str, int] = {}  # noise level of each view fetched by this process, by image path

    def check(self) -> None:
        """The generator answers `/readyz`; its model and basis become part of every content key."""
        ready_check(self.client, "generator", self.url)
        self.phash = params_hash({**self.request.form(), **self.client.basis().model_dump(include={"encoder_id",
                                                                                                 "basis_id"})})

    @property
    def needs_basis(self) -> bool:
        """An adaptive policy against a generator with no fitted basis (it would answer 409 basis_required)."""

        return uses_fitted_basis(self.request.noise_policy) and self.client.basis().basis_id == PER_IMAGE

    def fit_basis(self, paths: Sequence[str], num: int, seed: int = 0) -> str:
        """Fit the generator's basis on a sample of `paths` through the service; `check()` again afterwards to
        key views on it."""
        return fit_service_basis(self.client, "generator", self.url, paths, num, seed)

    def key(self, path: str, image: bytes) -> str:
        if self.phash is None:
            raise RuntimeError("ServiceViewSource.check() must run before views are keyed")
        return content_key(image, self.phash)

    def fetch(self, path: str, image: bytes) -> bytes:
        doc = self.client.generate(image, **self.request.form())
        self.levels[path] = doc.result.noise_level
        return self.client.view(doc.result.views[0].key)

    def level(self, path: str) -> int | None:
        """The noise level of this image's view, when this process fetched it."""
        return self.levels.get(path)

    def close(self) -> None:
        self.client.close()


def fit_service_basis(client: ServiceClient, name: str, url: str, paths: Sequence[str], num: int,
                      seed: int = 0) -> str:
    """Fit a service's missing PCA basis on `num` sampled training images (uploaded with `POST /inputs`) and wait
    until its API serves it; the basis id, or SourceNotReady saying why it could not be fitted."""
    log.info("%s at %s has no fitted PCA basis: fitting one on %d training images", name, url, min(num, len(paths)))
    try:
        return client.fit_basis_on(paths, num, seed).basis_id
    except (ServiceUnavailable, httpx.HTTPStatusError, ValueError) as exc:
        detail = exc.response.text[:300] if isinstance(exc, httpx.HTTPStatusError) else str(exc)
        raise SourceNotReady(f"{name} at {url} has no fitted PCA basis and fitting one on the training images "
                             f"failed: {detail}") from None


def ready_check(client, name: str, url: str, timeout_s: float = 5.0) -> None:
    """SourceNotReady unless `url/readyz` answers 200 within `timeout_s` (no retries: fail within seconds)."""
    try:
        response = client.http.get("/readyz", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise SourceNotReady(f"{name} at {url} is unreachable: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise SourceNotReady(f"{name} at {url} is not ready (HTTP {response.status_code}): {response.text[:300]}")


def view_phash(view_key: str) -> str:
    """The parameter hash inside a stored view key `views/{sha}/{phash}/{i}.{ext}`."""
    parts = view_key.split("/")
    if len(parts) != 4 or parts[0] != "views":
        raise ValueError(f"not a view key: {view_key!r}")
    return parts[2]


class ManifestViewSource:
    """Views pre-generated by `genview generate-dataset`: manifest rows by relative path, bytes from the store."""

    def __init__(self, manifest: str, data_root: str, store: ObjectStore, check_first: int = 8):
        self.manifest, self.store, self.check_first = manifest, store, check_first
        self.root = source_root(data_root)
        self.rows = read_manifest(manifest)

    def relative(self, path: str) -> str:
        return relative_to(self.root, path) or path

    def check(self) -> None:
        """The manifest has rows and the store holds the views of its first rows."""
        if not self.rows:
            raise SourceNotReady(f"manifest {self.manifest} is missing or empty: run `genview generate-dataset`")
        try:
            self.store.ping()
        except Exception as exc:  # any failure: the store is unusable
            raise SourceNotReady(f"store {self.store.url} is unreachable: {type(exc).__name__}: {exc}") from None
        for row in list(self.rows.values())[:self.check_first]:
            if not self.store.exists(row.views[0]):
                raise SourceNotReady(f"store {self.store.url} does not hold {row.views[0]} (view of "
                                     f"{row.path} in {self.manifest}): wrong GENVIEW_STORE_URL?")

    def key(self, path: str, image: bytes) -> str:
        row = self.rows.get(self.relative(path))
        return content_key(image, view_phash(row.views[0]) if row else "no-row")

    def level(self, path: str) -> int | None:
        """The noise level of this image's view, from its manifest row."""
        row = self.rows.get(self.relative(path))
        return None if row is None else row.noise_level

    def fetch(self, path: str, image: bytes) -> bytes:
        row = self.rows.get(self.relative(path))
        if row is None:
            raise ViewMissing(f"manifest {self.manifest} has no row for {self.relative(path)}")
        if row.sha256 not in (None, sha256_hex(image)):
            raise ViewMissing(f"{path} changed since its view was generated (manifest {self.manifest})")
        try:
            return self.store.get(row.views[0])
        except KeyError:
            raise ViewMissing(f"store {self.store.url} does not hold {row.views[0]}") from None

    def close(self) -> None:
        pass


class ViewCache:
    """Generated views on local disk by content key, with this rank's marks for views that will not come.

    `{key}.img` is a view; `marks-{scope}/{key}.fallback` says "train on the original"; `marks-{scope}/{key}.error`
    holds the reason the run must stop (wait mode). Marks are per rank (`scope`) and cleared every epoch.
    """

    def __init__(self, folder: str | os.PathLike, scope: str = "0", poll_s: float = 0.02):
        self.folder = Path(folder)
        self.marks = self.folder / f"marks-{scope}"
        self.marks.mkdir(parents=True, exist_ok=True)
        self.poll_s = poll_s

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.img"

    def has(self, key: str) -> bool:
        return self.path(key).exists()

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        """Temp file, then rename: a reader never sees part of a file."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def put(self, key: str, data: bytes) -> None:
        """Store a view atomically."""
        self._write_atomic(self.path(key), data)

    def mark(self, key: str, error: str | None = None) -> None:
        """Mark a view as fallen back (error None) or as failing the run (error: the reason, written atomically)."""
        if error is None:
            (self.marks / f"{key}.fallback").touch()
        else:
            self._write_atomic(self.marks / f"{key}.error", error.encode())

    def clear_marks(self) -> None:
        for mark in self.marks.iterdir():
            mark.unlink(missing_ok=True)

    def wait(self, key: str) -> bytes | None:
        """The view's bytes once present, None if marked fallback; ViewMissing if marked as an error."""
        while True:
            try:
                return self.path(key).read_bytes()
            except FileNotFoundError:
                if (self.marks / f"{key}.fallback").exists():
                    return None
                if (self.marks / f"{key}.error").exists():
                    raise ViewMissing((self.marks / f"{key}.error").read_text()) from None
            time.sleep(self.poll_s)


class ViewPrefetcher:
    """Walks the sampler's order ahead of training and gets each image's view into the cache.

    At most `lookahead` samples beyond the consumed position are requested, `concurrency` at a time.
    Transient failures (service or store down): `wait` retries with backoff, `fallback` marks the view and
    training uses the original (counted). Anything else (a view the source does not hold, a 4xx answer):
    `wait` stops the run with the reason (`failure`), `fallback` marks the view.
    """

    def __init__(self, source: ViewSource, paths: Sequence[str], cache: ViewCache, lookahead: int,
                 concurrency: int = 8, mode: str = "wait", max_backoff_s: float = 30.0,
                 read: Callable[[str], bytes] = read_bytes):
        self.source, self.paths, self.cache, self.read = source, paths, cache, read
        self.lookahead, self.mode, self.max_backoff_s = lookahead, mode, max_backoff_s
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="prefetch")
        self.slots = threading.Semaphore(concurrency)
        self.keys: dict[int, str] = {}
        self.consumed = 0
        self.failure: str | None = None
        self.progress = threading.Condition()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start_epoch(self, order: Sequence[int]) -> None:
        """Begin prefetching this rank's order for a new epoch (the previous walk is finished or abandoned)."""
        self.stop_walk()
        self.cache.clear_marks()
        self.consumed = 0
        self.stopping.clear()
        self.thread = threading.Thread(target=self._walk, args=(list(order),), daemon=True, name="prefetch-walk")
        self.thread.start()

    def advance(self, consumed: int) -> None:
        """Training has taken `consumed` samples of this epoch's order."""
        with self.progress:
            self.consumed = consumed
            self.progress.notify_all()

    def stop_walk(self) -> None:
        self.stopping.set()
        with self.progress:
            self.progress.notify_all()
        if self.thread is not None:
            self.thread.join()

    def close(self) -> None:
        self.stop_walk()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.source.close()

    def _walk(self, order: list[int]) -> None:
        for position, index in enumerate(order):
            with self.progress:
                while position >= self.consumed + self.lookahead and not self.stopping.is_set():
                    self.progress.wait(0.5)
            if self.stopping.is_set():
                return
            if index in self.keys and self.cache.has(self.keys[index]):
                continue
            self.slots.acquire()
            self.pool.submit(self._fetch, index)

    def _fetch(self, index: int) -> None:
        key = None
        try:
            path = self.paths[index]
            image = self.read(path)
            key = self.keys[index] = self.source.key(path, image)
            if not self.cache.has(key):
                self._fetch_with_retries(index, key, path, image)
        except Exception as exc:  # not transient: fail the run (wait) or train on the original (fallback)
            self._give_up(index, key, f"{type(exc).__name__}: {exc}")
        finally:
            self.slots.release()

    def _fetch_with_retries(self, index: int, key: str, path: str, image: bytes) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            try:
                self.cache.put(key, self.source.fetch(path, image))
                return
            except TRANSIENT as exc:
                if self.mode == "fallback":
                    self._give_up(index, key, f"{type(exc).__name__}: {exc}")
                    return
                log.warning("view of %s unavailable, retrying in %.1f s: %s", path, delay, exc)
                self.stopping.wait(delay)
                delay = min(delay * 2, self.max_backoff_s)

    def _give_up(self, index: int, key: str | None, reason: str) -> None:
        path = self.paths[index]
        if self.mode == "fallback":
            log.warning("view of %s unavailable, training on the original: %s", path, reason)
        else:
            self.failure = self.failure or f"view of {path}: {reason}"
        if key is not None:
            self.cache.mark(key, None if self.mode == "fallback" else reason)
