"""Generated views on the training side: a local view cache, and a prefetcher that fills it ahead of the sampler."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from genview.client import ServiceUnavailable

log = logging.getLogger(__name__)


class ViewCache:
    """One generated view per image index, as files: `{i}.img` (the view) or `{i}.missing` (fallback)."""

    def __init__(self, folder: str | os.PathLike, poll_s: float = 0.02):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.poll_s = poll_s

    def path(self, index: int) -> Path:
        return self.folder / f"{index}.img"

    def marker(self, index: int) -> Path:
        return self.folder / f"{index}.missing"

    def has(self, index: int) -> bool:
        return self.path(index).exists()

    def put(self, index: int, data: bytes) -> None:
        """Write atomically (temp file, then rename) so a reader never sees part of a view."""
        tmp = self.folder / f".{index}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.path(index))

    def mark_missing(self, index: int) -> None:
        self.marker(index).touch()

    def clear_markers(self) -> None:
        for marker in self.folder.glob("*.missing"):
            marker.unlink(missing_ok=True)

    def wait(self, index: int) -> bytes | None:
        """The view's bytes once the prefetcher has it, or None if it was marked missing (fallback)."""
        while True:
            try:
                return self.path(index).read_bytes()
            except FileNotFoundError:
                if self.marker(index).exists():
                    return None
            time.sleep(self.poll_s)


class ViewPrefetcher:
    """Walks the sampler's order ahead of training and gets each image's generated view into the cache.

    `fetch(index)` returns the view's bytes: from the generator service, or from the store (a manifest).
    At most `lookahead` samples beyond the consumed position are requested, `concurrency` at a time.
    `wait` mode retries with backoff until the generator answers; `fallback` mode marks a view missing
    after the client's own retries, and training uses the original image instead (counted).
    """

    def __init__(self, fetch: Callable[[int], bytes], cache: ViewCache, lookahead: int, concurrency: int = 8,
                 mode: str = "wait", max_backoff_s: float = 30.0):
        self.fetch, self.cache = fetch, cache
        self.lookahead, self.mode, self.max_backoff_s = lookahead, mode, max_backoff_s
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="prefetch")
        self.slots = threading.Semaphore(concurrency)
        self.consumed = 0
        self.progress = threading.Condition()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start_epoch(self, order: list[int]) -> None:
        """Begin prefetching this rank's order for a new epoch (the previous walk is finished or abandoned)."""
        self.stop_walk()
        self.cache.clear_markers()
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

    def _walk(self, order: list[int]) -> None:
        for position, index in enumerate(order):
            with self.progress:
                while position >= self.consumed + self.lookahead and not self.stopping.is_set():
                    self.progress.wait(0.5)
            if self.stopping.is_set():
                return
            if self.cache.has(index):
                continue
            self.slots.acquire()
            self.pool.submit(self._fetch, index)

    def _fetch(self, index: int) -> None:
        try:
            delay = 0.5
            while not self.stopping.is_set():
                try:
                    self.cache.put(index, self.fetch(index))
                    return
                except (ServiceUnavailable, OSError) as exc:
                    if self.mode == "fallback":
                        log.warning("view %d unavailable, training on the original: %s", index, exc)
                        self.cache.mark_missing(index)
                        return
                    log.warning("view %d unavailable, retrying in %.1f s: %s", index, delay, exc)
                    self.stopping.wait(delay)
                    delay = min(delay * 2, self.max_backoff_s)
        except Exception as exc:  # a bad image or a 4xx answer: never block training on it
            log.error("view %d cannot be generated, training on the original: %s", index, exc)
            self.cache.mark_missing(index)
        finally:
            self.slots.release()
