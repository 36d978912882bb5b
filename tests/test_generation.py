"""ViewGenerator on the tiny preset: Eq. 7 → 8 → 9 in batched calls, per-image seeds, the basis rule."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from genview.generation import BasisRequired, ViewGenerator, ViewRequest
from genview.method.noise import LEVELS, level_seed, random_noise_level, view_seed
from genview.method.pca import fit_pca_basis
from genview.models.unclip import UnclipGenerator
from genview.schemas import GenerationParams
from genview.store import sha256_hex
from harness.images import png_bytes


@pytest.fixture(scope="module")
def views(model_cache):
    return ViewGenerator(UnclipGenerator.load("tiny", "cpu", model_cache), max_batch=4)


def _image(seed: int) -> tuple[Image.Image, str]:
    data = png_bytes(64, 56, seed=seed)
    return Image.open(io.BytesIO(data)).convert("RGB"), sha256_hex(data)


def _params(noise: str = "adaptive", basis: str = "per-image", **kw) -> GenerationParams:
    return GenerationParams(model="tiny", noise_policy=noise, basis=basis, steps=2, size=40, **kw)


def test_view_seeds_differ_per_image_and_view_and_are_reproducible():
    a, b = "a" * 64, "b" * 64
    seeds = {view_seed(a, 0, 0), view_seed(a, 0, 1), view_seed(b, 0, 0), view_seed(a, 1, 0)}
    assert len(seeds) == 4
    assert view_seed(a, 0, 0) == view_seed(a, 0, 0) and 0 <= view_seed(a, 0, 0) < 2 ** 63


def test_random_policy_draws_per_image_over_all_five_levels(views):
    shas = [sha256_hex(str(i).encode()) for i in range(200)]
    img = Image.new("RGB", (8, 8))
    requests = [ViewRequest(img, sha, _params("random"), None) for sha in shas]
    levels = views.levels(requests, torch.zeros(len(requests)))
    counts = {level: levels.count(level) for level in LEVELS}
    assert set(levels) == set(LEVELS) and min(counts.values()) >= 20, counts
    assert levels == [random_noise_level(level_seed(s, 0)) for s in shas]


def test_same_request_seed_gives_different_noise_per_image(views):
    img, _ = _image(1)
    one, two = views.generate([ViewRequest(img, "1" * 64, _params("constant:200"), None),
                               ViewRequest(img, "2" * 64, _params("constant:200"), None)])
    assert one.seeds != two.seeds
    # Same pixels, same level, same request seed: only the derived seeds differ, and so do the views.
    assert np.abs(np.asarray(one.views[0], int) - np.asarray(two.views[0], int)).max() > 2
    again = views.generate([ViewRequest(img, "1" * 64, _params("constant:200"), None)])[0]
    assert np.array_equal(np.asarray(again.views[0]), np.asarray(one.views[0]))


def test_adaptive_without_basis_is_refused_unless_per_image_is_asked_for(views):
    img, sha = _image(2)
    with pytest.raises(BasisRequired, match="fit-pca"):
        views.generate([ViewRequest(img, sha, _params("adaptive"), None)])
    out = views.generate([ViewRequest(img, sha, _params("auto:per-image", num_views=2), None)])[0]
    assert out.fg_basis == "per-image" and abs(out.fg_ratio - 0.4) < 0.01
    assert out.noise_level == 100 and len(out.views) == 2  # p = 102/256 < 0.4: the "constant" per-image level and out.views[0].size == (40, 40)
    assert out.fg_map.size == (40, 40) and out.fg_map.mode == "L"


class CountingBasis:
    """Wraps a fitted basis and counts projection calls."""

    def __init__(self, basis):
        self.basis, self.calls = basis, 0

    def __getattr__(self, name):
        return getattr(self.basis, name)

    def project(self, tokens):
        self.calls += 1
        return self.basis.project(tokens)


def test_a_fitted_basis_projects_the_whole_batch_in_one_call(views):
    images = [_image(10 + i) for i in range(3)]
    tokens = views.unclip.encode([im for im, _ in images]).tokens
    basis = fit_pca_basis(tokens, views.unclip.grid)
    counting = CountingBasis(basis)
    requests = [ViewRequest(im, sha, _params(basis=basis.fingerprint), counting) for im, sha in images]
    ratios, _, kinds = views.foreground(requests, tokens)
    assert counting.calls == 1 and kinds == ["fitted"] * 3
    expected = (basis.project(tokens) > basis.threshold).float().mean(1)
    torch.testing.assert_close(ratios, expected)
    out = views.generate(requests)
    assert [o.noise_level for o in out] == [100 * min(4, int(float(r) * 5 + 1e-6)) for r in expected]
