"""PCA foreground estimation (Eq. 7) on planted token sets whose answer is known by hand."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save as save_safetensors

from genview.method.foreground import foreground_mask, foreground_proportion, foreground_proportion_per_image
from genview.method.pca import (
    PCABasis,
    PCAFitter,
    centre_border_masks,
    fit_pca_basis,
    orientation_sign,
    per_image_projections,
)

GRID = 4
DIRECTION = torch.tensor([1.0, 2.0, 2.0]) / 3.0  # unit vector v
OFFSET = torch.tensor([3.0, -1.0, 2.0])
# Grid-4 positions 5, 6, 9, 10 are the centre block; 1 and 2 are on the top border.
PLANTED_FOREGROUND = torch.zeros(GRID * GRID, dtype=torch.bool)
PLANTED_FOREGROUND[[1, 2, 5, 6, 9, 10]] = True  # 6 of 16 tokens


def planted_tokens(images: int, seed: int = 0) -> torch.Tensor:
    """Tokens [images, 16, 3]: OFFSET + v (foreground) or OFFSET - v (background) + noise orthogonal to v.

    The noise is centred within each group so it is uncorrelated with the foreground indicator,
    which makes v an exact eigenvector of the token covariance.
    """
    noise = 0.05 * torch.randn(images, GRID * GRID, 3, generator=torch.Generator().manual_seed(seed))
    noise -= (noise @ DIRECTION)[..., None] * DIRECTION
    for group in (PLANTED_FOREGROUND, ~PLANTED_FOREGROUND):
        noise[:, group] -= noise[:, group].mean((0, 1))
    along = torch.where(PLANTED_FOREGROUND, 1.0, -1.0)
    return OFFSET + along[None, :, None] * DIRECTION + noise


# Along v the mean token sits at (6 - 10) / 16 = -0.25, so foreground tokens project to 1.25 and
# background tokens to -0.75. With fg_fraction 6/16 = 0.375 the threshold is the 0.625 quantile of
# 16n projections: rank 0.625 * (16n - 1) = 10n - 0.625, i.e. 0.375 of the way from the last
# background value (-0.75) to the first foreground value (1.25): a = -0.75 + 0.375 * 2 = 0.
PLANTED_FRACTION = 6 / 16


def test_centre_and_border_masks_of_small_and_real_grids():
    centre, border = centre_border_masks(4)
    assert centre.nonzero().flatten().tolist() == [5, 6, 9, 10]
    assert border.nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 7, 8, 11, 12, 13, 14, 15]
    centre, border = centre_border_masks(16)
    rows, cols = centre.reshape(16, 16).nonzero().unbind(1)
    assert rows.unique().tolist() == list(range(4, 12)) and cols.unique().tolist() == list(range(4, 12))
    assert int(centre.sum()) == 64 and int(border.sum()) == 60
    assert not (centre & border).any()


def test_orientation_sign_compares_centre_with_border():
    centre, _ = centre_border_masks(GRID)
    bright_centre = centre.float()
    assert orientation_sign(bright_centre, GRID) == 1.0
    assert orientation_sign(-bright_centre, GRID) == -1.0
    assert orientation_sign(torch.stack([bright_centre, -3 * bright_centre]), GRID) == -1.0
    assert orientation_sign(torch.full((GRID * GRID,), 2.0), GRID) == 1.0  # tie -> +1
    with pytest.raises(ValueError):
        orientation_sign(torch.zeros(15), GRID)


def test_fit_recovers_planted_direction_threshold_and_proportion():
    tokens = planted_tokens(4)
    basis = fit_pca_basis(tokens, GRID, fg_fraction=PLANTED_FRACTION)
    assert torch.dot(basis.component, DIRECTION) == pytest.approx(1.0, abs=1e-5)  # oriented +v
    assert torch.allclose(basis.mean, tokens.reshape(-1, 3).mean(0), atol=1e-5)
    assert basis.threshold == pytest.approx(0.0, abs=1e-4)
    projections = basis.project(tokens)
    assert torch.allclose(projections[:, PLANTED_FOREGROUND], torch.tensor(1.25), atol=1e-4)
    assert torch.allclose(projections[:, ~PLANTED_FOREGROUND], torch.tensor(-0.75), atol=1e-4)
    assert torch.equal(foreground_mask(tokens, basis), PLANTED_FOREGROUND.expand(4, -1))
    assert foreground_proportion(tokens, basis).tolist() == [0.375] * 4


def test_flipped_data_flips_component_but_keeps_the_foreground():
    tokens = planted_tokens(4)
    basis = fit_pca_basis(tokens, GRID, fg_fraction=PLANTED_FRACTION)
    flipped = fit_pca_basis(-tokens, GRID, fg_fraction=PLANTED_FRACTION)
    assert torch.dot(flipped.component, DIRECTION) == pytest.approx(-1.0, abs=1e-5)
    assert torch.equal(foreground_mask(-tokens, flipped), foreground_mask(tokens, basis))


def test_foreground_on_the_border_is_oriented_the_other_way():
    # Background in the centre block, foreground on the 12 border tokens: the "bright" side in the
    # data (+v) is the border, so the rule must orient the component to -v (centre high) -- the
    # centre side is called foreground even though it is the smaller group.
    tokens = planted_tokens(2)
    centre, _ = centre_border_masks(GRID)
    along = torch.where(centre, -1.0, 1.0)
    tokens = tokens - (tokens @ DIRECTION)[..., None] * DIRECTION + along[None, :, None] * DIRECTION
    basis = fit_pca_basis(tokens, GRID)
    assert torch.dot(basis.component, DIRECTION) < -0.99


def test_streaming_fit_equals_one_shot_fit():
    tokens = planted_tokens(6, seed=3)
    fitter = PCAFitter(dim=3, grid=GRID)
    for chunk in (tokens[:1], tokens[1:4], tokens[4:]):
        fitter.update(chunk)
    assert fitter.num_images == 6
    streamed = fitter.fit(PLANTED_FRACTION)
    one_shot = fit_pca_basis(tokens, GRID, PLANTED_FRACTION)
    assert torch.allclose(streamed.mean, one_shot.mean, atol=1e-6)
    assert torch.allclose(streamed.component, one_shot.component, atol=1e-6)
    assert streamed.threshold == pytest.approx(one_shot.threshold, abs=1e-6)


def test_reservoir_is_bounded_deterministic_and_spread_over_the_stream():
    # Token t has all coordinates equal to t, so the sample tells which tokens it kept.
    values = torch.arange(100 * 16, dtype=torch.float32).reshape(100, 16, 1).expand(-1, -1, 2)

    def sampled(seed: int) -> torch.Tensor:
        fitter = PCAFitter(dim=2, grid=GRID, max_sample_tokens=200, seed=seed)
        for batch in values.split(7):
            fitter.update(batch)
        return fitter.sample[:, 0]

    first, again = sampled(0), sampled(0)
    assert first.shape == (200,) and torch.equal(first, again)
    assert first.unique().numel() == 200  # no token kept twice
    # Only filling would keep tokens 0..199 (mean 99.5); a uniform sample of 0..1599 has mean
    # 799.5 with standard error ~33, so +-160 is ~5 standard errors.
    assert abs(float(first.mean()) - 799.5) < 160
    assert not torch.equal(first, sampled(1))


def test_fit_and_update_reject_bad_input():
    fitter = PCAFitter(dim=3, grid=GRID)
    with pytest.raises(ValueError, match="no tokens"):
        fitter.fit()
    fitter.update(torch.zeros(0, 16, 3))
    with pytest.raises(ValueError, match="no tokens"):
        fitter.fit()
    with pytest.raises(ValueError):
        fitter.update(torch.zeros(2, 15, 3))
    with pytest.raises(ValueError):
        fitter.update(torch.zeros(2, 16, 4))
    fitter.update(planted_tokens(1))
    with pytest.raises(ValueError):
        fitter.fit(fg_fraction=1.0)


def test_threshold_is_strict_and_extremes_give_p_zero_and_one():
    # Projection on e1 of these tokens is just their first coordinate: 0.0, 0.5, 1.0, 2.0.
    tokens = torch.tensor([[[0.0, 9.0], [0.5, -1.0], [1.0, 0.0], [2.0, 3.0]]])
    mean, e1 = torch.zeros(2), torch.tensor([1.0, 0.0])
    assert foreground_mask(tokens, PCABasis(mean, e1, 0.5)).tolist() == [[False, False, True, True]]
    assert foreground_proportion(tokens, PCABasis(mean, e1, 0.5)).tolist() == [0.5]
    assert foreground_proportion(tokens, PCABasis(mean, e1, 2.0)).tolist() == [0.0]
    assert foreground_proportion(tokens, PCABasis(mean, e1, -0.1)).tolist() == [1.0]


def test_bytes_round_trip_and_stable_fingerprint():
    basis = fit_pca_basis(planted_tokens(4), GRID, PLANTED_FRACTION)
    data = basis.to_bytes()
    loaded = PCABasis.from_bytes(data)
    assert torch.equal(loaded.mean, basis.mean) and torch.equal(loaded.component, basis.component)
    assert loaded.threshold == basis.threshold
    assert loaded.to_bytes() == data
    assert basis.fingerprint == loaded.fingerprint == hashlib.sha256(data).hexdigest()[:16]
    rebuilt = PCABasis(basis.mean.clone(), basis.component.clone(), basis.threshold)
    assert rebuilt.fingerprint == basis.fingerprint
    moved = PCABasis(basis.mean, basis.component, basis.threshold + 0.125)
    assert moved.fingerprint != basis.fingerprint


def test_from_bytes_rejects_bad_data():
    with pytest.raises(ValueError, match="safetensors"):
        PCABasis.from_bytes(b"garbage")
    with pytest.raises(ValueError, match="threshold"):
        PCABasis.from_bytes(save_safetensors({"mean": torch.zeros(3), "component": torch.ones(3)}))
    with pytest.raises(ValueError, match="same shape"):
        PCABasis.from_bytes(
            save_safetensors(
                {"mean": torch.zeros(3), "component": torch.ones(2) / 2**0.5, "threshold": torch.tensor(0.0)}
            )
        )
    with pytest.raises(ValueError, match="unit norm"):
        unnormalised = {"mean": torch.zeros(3), "component": torch.ones(3), "threshold": torch.tensor(0.0)}
        PCABasis.from_bytes(save_safetensors(unnormalised))


def test_per_image_fallback_gives_the_per_image_quantile():
    tokens = torch.randn(3, 256, 32, generator=torch.Generator().manual_seed(0))
    # q = 0.6 over 256 distinct projections: linear-interpolation rank 0.6 * 255 = 153, so a is the
    # 0-based sorted value x_(153) and exactly the 102 values x_(154)..x_(255) lie strictly above it.
    assert foreground_proportion_per_image(tokens, grid=16).tolist() == [102 / 256] * 3
    assert orientation_sign(per_image_projections(tokens, 16)[0], 16) == 1.0
    with pytest.raises(ValueError):
        per_image_projections(tokens[0], grid=16)


def test_per_image_fallback_finds_the_planted_foreground():
    projections = per_image_projections(planted_tokens(1), GRID)[0]
    threshold = torch.quantile(projections, 1 - PLANTED_FRACTION)
    assert torch.equal(projections > threshold, PLANTED_FOREGROUND)
    flipped = per_image_projections(-planted_tokens(1), GRID)[0]  # sign of the data is irrelevant
    assert torch.equal(flipped > torch.quantile(flipped, 1 - PLANTED_FRACTION), PLANTED_FOREGROUND)
