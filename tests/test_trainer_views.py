"""The trainer's view path as library objects: content-keyed cache, prefetcher modes, manifest source, pairs (Eq. 6)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from genview.method.noise import parse_noise_policy
from genview.store import ObjectStore, sha256_hex
from genview.training.pairs import Crop, PairDataset, positive_views, uses_generated
from genview.training.views import (ManifestViewSource, ServiceViewSource, SourceNotReady, ViewCache, ViewMissing,
                                    ViewPrefetcher, content_key)
from harness.images import png_bytes
from harness.ports import free_port


class DictSource:
    """A ViewSource over a dict {path: view bytes}; a path it lacks is a ViewMissing; `down` raises OSError."""

    def __init__(self, views: dict[str, bytes], phash: str = "p1"):
        self.views, self.phash, self.down, self.fetched = views, phash, False, []

    def check(self):
        pass

    def key(self, path, image):
        return content_key(image, self.phash)

    def fetch(self, path, image):
        if self.down:
            raise OSError("store down")
        self.fetched.append(path)
        if path not in self.views:
            raise ViewMissing(f"no view for {path}")
        return self.views[path]

    def close(self):
        pass


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / "data" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(png_bytes(20, 16, seed=i))
        paths.append(str(p))
    return paths


def _until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_content_key_is_input_hash_plus_parameter_hash():
    assert content_key(b"abc", "ff00") == f"{sha256_hex(b'abc')}-ff00"
    assert content_key(b"abc", "ff00") != content_key(b"abd", "ff00") != content_key(b"abc", "ff01")


def test_service_keys_need_the_generator_checked_first():
    a = ServiceViewSource("http://127.0.0.1:9", parse_noise_policy("adaptive"), 20, 512, 0)
    with pytest.raises(RuntimeError, match="check"):
        a.key("x.png", b"img")
    a.close()


def test_unreachable_generator_is_refused_within_seconds():
    source = ServiceViewSource(f"http://127.0.0.1:{free_port()}", parse_noise_policy("constant:100"), 2, 40, 0)
    start = time.monotonic()
    with pytest.raises(SourceNotReady, match="unreachable"):
        source.check()
    assert time.monotonic() - start < 5
    source.close()


def test_prefetcher_fills_the_cache_along_the_order_within_the_lookahead(images, tmp_path):
    source = DictSource({p: f"view{i}".encode() for i, p in enumerate(images)})
    cache = ViewCache(tmp_path / "cache")
    prefetcher = ViewPrefetcher(source, images, cache, lookahead=2, concurrency=1)
    prefetcher.start_epoch([5, 4, 3, 2, 1, 0])
    _until(lambda: len(source.fetched) == 2)
    time.sleep(0.1)  # nothing beyond the lookahead is requested while training has consumed nothing
    assert source.fetched == [images[5], images[4]]
    prefetcher.advance(6)
    _until(lambda: len(source.fetched) == 6)
    key = content_key(open(images[0], "rb").read(), "p1")
    _until(lambda: cache.has(key))
    assert cache.wait(key) == b"view0"
    prefetcher.start_epoch([0, 1])  # cached views are not fetched again
    prefetcher.advance(2)
    prefetcher.thread.join(10)  # the walk has passed both positions
    assert not prefetcher.thread.is_alive()
    prefetcher.pool.shutdown(wait=True)  # and every fetch it submitted has run
    prefetcher.close()
    assert len(source.fetched) == 6


def test_a_view_cached_under_other_parameters_is_never_reused(images, tmp_path):
    cache = ViewCache(tmp_path / "cache")
    old = DictSource({p: b"old" for p in images}, phash="constant100")
    prefetcher = ViewPrefetcher(old, images, cache, lookahead=10)
    prefetcher.start_epoch([0])
    _until(lambda: cache.has(content_key(open(images[0], "rb").read(), "constant100")))
    prefetcher.close()
    new = DictSource({p: b"new" for p in images}, phash="adaptive")
    prefetcher = ViewPrefetcher(new, images, cache, lookahead=10)
    prefetcher.start_epoch([0])
    key = content_key(open(images[0], "rb").read(), "adaptive")
    _until(lambda: cache.has(key))
    prefetcher.close()
    assert cache.wait(key) == b"new" and new.fetched == [images[0]]


def _dataset(images, source, cache, alpha=1.0):
    crops = [Crop(lambda x: x[:, :8, :8], "original"), Crop(lambda x: x[:, :8, :8], "generated")]
    return PairDataset(images, crops, source, cache, alpha=alpha)


def test_wait_mode_missing_view_fails_the_run(images, tmp_path):
    source = DictSource({})  # the store holds none of the views
    cache = ViewCache(tmp_path / "cache")
    prefetcher = ViewPrefetcher(source, images, cache, lookahead=10, mode="wait")
    prefetcher.start_epoch([0, 1])
    with pytest.raises(ViewMissing, match="no view for"):
        _dataset(images, source, cache)[0]
    prefetcher.close()
    assert prefetcher.failure and "no view for" in prefetcher.failure


def test_fallback_mode_trains_on_the_original_and_says_so(images, tmp_path):
    source = DictSource({})
    source.down = True
    cache = ViewCache(tmp_path / "cache")
    prefetcher = ViewPrefetcher(source, images, cache, lookahead=10, mode="fallback")
    prefetcher.start_epoch([2])
    (original, view), index, generated, fell_back = _dataset(images, source, cache)[2]
    prefetcher.close()
    assert index == 2 and fell_back and not generated and torch.equal(original, view)
    assert prefetcher.failure is None


def test_pair_dataset_uses_the_generated_view_for_generated_crops(images, tmp_path):
    view = png_bytes(20, 16, seed=99)
    source, cache = DictSource({}), ViewCache(tmp_path / "cache")
    cache.put(content_key(open(images[1], "rb").read(), "p1"), view)
    (original, generated), _, used, fell_back = _dataset(images, source, cache)[1]
    assert used and not fell_back and not torch.equal(original, generated)
    (a, b), _, used, _ = _dataset(images, source, cache, alpha=0.0)[1]  # α = 0: plain SSL on the original
    assert not used and torch.equal(a, b)


def test_positive_views_eq6_by_hand():
    x, x_plus = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)
    t, t_plus = (lambda v: v + 10), (lambda v: v * 3)
    p, p_plus, local = positive_views(x, x_plus, [Crop(t, "original"), Crop(t_plus, "generated"), Crop(t, "original")])
    assert p.tolist() == [[[10, 10], [10, 10]]] and p_plus.tolist() == [[[3, 3], [3, 3]]]
    assert torch.equal(local, p)
    assert uses_generated(0.5, 0.49) and not uses_generated(0.5, 0.5) and not uses_generated(0.0, 0.0)


def _manifest(tmp_path, images, store, drop_view=False, wrong_sha=False):
    rows = []
    for i, path in enumerate(images):
        sha = sha256_hex(open(path, "rb").read())
        key = f"views/{sha}/{'a' * 32}/0.png"
        if not (drop_view and i == 0):
            store.put(key, png_bytes(8, 8, seed=50 + i))
        rows.append({"path": f"{i}.png", "sha256": "0" * 64 if wrong_sha else sha, "views": [key]})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(manifest)


def test_manifest_source_checks_the_store_and_detects_changed_images(images, tmp_path):
    store = ObjectStore(f"file://{tmp_path / 'store'}")
    root = str(tmp_path / "data")
    source = ManifestViewSource(_manifest(tmp_path, images, store), root, store)
    source.check()
    image = open(images[3], "rb").read()
    assert source.key(images[3], image) == content_key(image, "a" * 32)
    assert source.fetch(images[3], image) == store.get(f"views/{sha256_hex(image)}/{'a' * 32}/0.png")

    empty = ObjectStore(f"file://{tmp_path / 'empty-store'}")
    with pytest.raises(SourceNotReady, match="does not hold"):
        ManifestViewSource(str(tmp_path / "manifest.jsonl"), root, empty).check()
    with pytest.raises(SourceNotReady, match="missing or empty"):
        ManifestViewSource(str(tmp_path / "none.jsonl"), root, store).check()
    stale = ManifestViewSource(_manifest(tmp_path, images, store, wrong_sha=True), root, store)
    with pytest.raises(ViewMissing, match="changed"):
        stale.fetch(images[3], image)
