"""`genview fit-pca --import-official`: the official repository's saved PCA becomes a basis with the same projections."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import torch

from genview.basis import DEFAULT_OWNER, BasisStore
from genview.method.foreground import foreground_proportion
from genview.method.pca import basis_from_official
from genview.models.presets import encoder_id
from genview.pca_fit import import_official
from genview.store import ObjectStore
from harness.processes import genview_cmd


def _official_arrays(tmp_path, dim: int = 12, seed: int = 0):
    """What the official code saves: sklearn-style components [K, D] (unit rows) and the mean [D]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    vectors, mean = q[:3].astype(np.float32), rng.normal(size=dim).astype(np.float32)
    np.save(tmp_path / "pca_vectors.npy", vectors)
    np.save(tmp_path / "mean_vectors.npy", mean)
    return vectors, mean


def test_imported_basis_projects_as_computed_by_hand(tmp_path):
    vectors, mean = _official_arrays(tmp_path)
    basis = import_official(str(tmp_path / "pca_vectors.npy"), str(tmp_path / "mean_vectors.npy"), 0.25)
    tokens = np.random.default_rng(1).normal(size=(2, 16, 12)).astype(np.float32)
    by_hand = (tokens - mean) @ vectors[0]  # the official code's first-component projection
    np.testing.assert_allclose(basis.project(torch.from_numpy(tokens)).numpy(), by_hand, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(foreground_proportion(torch.from_numpy(tokens), basis).numpy(),
                               (by_hand > 0.25).mean(1), atol=1e-7)
    assert basis.threshold == 0.25
    same = basis_from_official(vectors, mean[None], 0.25)  # a [1, D] mean is accepted too
    assert same.fingerprint == basis.fingerprint


@pytest.mark.slow  # a `genview` process (imports take most of its time)
def test_cli_imports_without_loading_a_model(tmp_path):
    _official_arrays(tmp_path)
    store_url = f"file://{tmp_path / 'store'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENVIEW_")}
    env.update(GENVIEW_STORE_URL=store_url, GENVIEW_SCORER_MODEL="no-such-model")
    done = subprocess.run(genview_cmd("fit-pca", "--encoder", "scorer", "--import-official", "--vectors",
                                      str(tmp_path / "pca_vectors.npy"), "--mean", str(tmp_path / "mean_vectors.npy"),
                                      "--threshold", "-0.5"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    stored = BasisStore(ObjectStore(store_url), encoder_id("scorer", "no-such-model")).current(DEFAULT_OWNER)
    expected = import_official(str(tmp_path / "pca_vectors.npy"), str(tmp_path / "mean_vectors.npy"), -0.5)
    assert stored is not None and stored.fingerprint == expected.fingerprint and stored.fingerprint in done.stdout


class FixedTokens:
    """A token encoder stand-in: image i of the stream gets tokens[i] (the protocol fit-pca uses)."""

    encoder_id, dim, grid = "fixed", 12, 4

    def __init__(self, tokens: torch.Tensor):
        self.tokens_left = list(tokens)

    def tokens(self, images: list) -> torch.Tensor:
        return torch.stack([self.tokens_left.pop(0) for _ in images])


def test_imported_basis_without_threshold_is_calibrated_on_images(tmp_path):
    from genview.pca_fit import threshold_on_images
    from harness.images import png_bytes

    _official_arrays(tmp_path)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        (tmp_path / f"{i}.png").write_bytes(png_bytes(16, 16, seed=i))
    tokens = torch.randn(3, 16, 12, generator=torch.Generator().manual_seed(3))
    basis = import_official(str(tmp_path / "pca_vectors.npy"), str(tmp_path / "mean_vectors.npy"), 0.0)
    calibrated = threshold_on_images(basis, paths, FixedTokens(tokens), fg_fraction=0.4, batch_size=2)
    expected = torch.quantile(basis.project(tokens).flatten(), 0.6)
    assert calibrated.threshold == pytest.approx(float(expected))
    assert foreground_proportion(tokens, calibrated).mean() == pytest.approx(0.4, abs=1 / 48)
