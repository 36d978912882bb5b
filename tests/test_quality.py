"""Quality score (Eq. 10–13) on tiny planted maps whose values are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from genview.method.losses import weighted_loss
from genview.method.quality import (
    PairQuality,
    aggregate,
    background_map,
    foreground_map,
    normalise_map,
    pair_similarity,
    quality_score,
    quality_weights,
    score_pairs,
)

E1 = [1.0, 0.0]
E2 = [0.0, 1.0]

# Projections with the single foreground position at (1,1):
#   min 0, max 1 -> M^f = [[0,0],[0,1]] (sums to 1, unchanged by normalisation)
#   M^b = [[1,1],[1,0]] -> normalised [[1/3,1/3],[1/3,0]]
# so z^f = F[1,1] and z^b = mean of F[0,0], F[0,1], F[1,0].
FG_AT_11 = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])


def grid(a, b, c, d) -> torch.Tensor:
    """Feature map [1, 2, 2, C] with rows (a, b) and (c, d)."""
    return torch.tensor([[[a, b], [c, d]]])


def test_foreground_map_min_max_per_image():
    # image 0: min 1, max 9, span 8 -> (1-1)/8=0, (3-1)/8=.25, (5-1)/8=.5, (9-1)/8=1
    # image 1: min -2, max 2, span 4 -> 0, 0, 1, 0 (its own min/max, not image 0's)
    p = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[-2.0, -2.0], [2.0, -2.0]]])
    expected = torch.tensor([[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [1.0, 0.0]]])
    assert torch.equal(foreground_map(p), expected)


def test_foreground_map_constant_is_zero_without_nan():
    # max == min -> all 0 (official: (p - min) / (max - min + 1e-7)); the second image must be unaffected
    p = torch.tensor([[[7.0, 7.0], [7.0, 7.0]], [[0.0, 2.0], [4.0, 8.0]]])
    m = foreground_map(p)
    assert not torch.isnan(m).any()
    assert torch.equal(m[0], torch.zeros(2, 2))
    assert torch.equal(m[1], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))


def test_foreground_map_computes_in_float32():
    p = torch.tensor([[[1.0, 3.0], [5.0, 9.0]]], dtype=torch.float16)
    m = foreground_map(p)
    assert m.dtype == torch.float32
    assert torch.equal(m, torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))


def test_background_map_is_one_minus_foreground():
    fg = torch.tensor([[[0.0, 0.25], [0.5, 1.0]]])
    assert torch.equal(background_map(fg), torch.tensor([[[1.0, 0.75], [0.5, 0.0]]]))


def test_normalise_map_exact_values():
    # image 0: sum 1+3+0+4 = 8 -> 1/8, 3/8, 0, 4/8
    # image 1: sum 2 -> 0.5, 0.5, 0, 0 (own sum, not image 0's)
    m = torch.tensor([[[1.0, 3.0], [0.0, 4.0]], [[1.0, 1.0], [0.0, 0.0]]])
    n = normalise_map(m)
    assert torch.equal(n, torch.tensor([[[0.125, 0.375], [0.0, 0.5]], [[0.5, 0.5], [0.0, 0.0]]]))
    assert torch.allclose(n.sum(dim=(-2, -1)), torch.ones(2))


def test_normalise_map_all_zero_stays_zero():
    # official: m / (sum + 1e-7) = 0 everywhere, never NaN
    n = normalise_map(torch.zeros(1, 2, 2))
    assert torch.equal(n, torch.zeros(1, 2, 2))


def test_constant_projection_gives_empty_foreground_and_uniform_background():
    # constant -> M^f = 0, M^b = 1 everywhere -> normalised: 0 and 1/4
    fg = foreground_map(torch.full((1, 2, 2), 3.0))
    assert torch.equal(normalise_map(fg), torch.zeros(1, 2, 2))
    assert torch.equal(normalise_map(background_map(fg)), torch.full((1, 2, 2), 0.25))


def test_constant_map_gives_s_f_zero_as_the_official_code():
    # F = [[(1,0), (0,1)], [(1,1), (2,0)]], F+ = [[(0,1), (0,1)], [(1,0), (1,0)]], projections constant:
    #   z_f = 0 for both -> s_f = cos(0, 0) = 0
    #   z_b = mean F = (1, 0.5), mean F+ = (0.5, 0.5) -> s_b = (0.75) / (sqrt(1.25) * sqrt(0.5)) = 0.9486833
    #   q = s_f - s_b = -0.9486833
    f = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [2.0, 0.0]]]])
    f_plus = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]]])
    flat = torch.full((1, 2, 2), 5.0)
    pq = score_pairs(f, f_plus, flat, flat)
    assert pq.s_f.item() == 0.0
    assert pq.s_b.item() == pytest.approx(0.75 / (1.25 ** 0.5 * 0.5 ** 0.5), abs=1e-6)
    assert pq.q.item() == pytest.approx(-0.9486833, abs=1e-6)


def test_non_finite_pair_gets_weight_zero_and_the_rest_renormalise():
    # q = [0, ln 3, NaN, inf], gamma 1: finite pairs 1 : 3 -> n * softmax = 4 * (1/4, 3/4) = (1, 3); others 0
    w = quality_weights(torch.tensor([0.0, math.log(3.0), math.nan, math.inf]))
    assert torch.allclose(w, torch.tensor([1.0, 3.0, 0.0, 0.0]))
    assert w.sum().item() == pytest.approx(4.0)


def test_batch_without_a_finite_q_gives_nan_weights_and_a_skipped_step():
    # every weight NaN -> the weighted loss is NaN -> the trainer's non-finite guard skips the step
    w = quality_weights(torch.tensor([math.nan, -math.inf]))
    assert torch.isnan(w).all()
    assert not torch.isfinite(weighted_loss(torch.tensor([1.0, 2.0]), w))


def test_aggregate_planted():
    # image 0: F = [[(1,0,0), (0,2,0)], [(0,0,4), (1,1,1)]], w = [[.5,.25],[.25,0]]
    #   z = .5*(1,0,0) + .25*(0,2,0) + .25*(0,0,4) + 0 = (0.5, 0.5, 1.0)
    # image 1: same F, w = [[0,0],[0,1]] -> z = F[1,1] = (1, 1, 1)
    f0 = [[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 0.0, 4.0], [1.0, 1.0, 1.0]]]
    features = torch.tensor([f0, f0])
    weights = torch.tensor([[[0.5, 0.25], [0.25, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    assert torch.equal(aggregate(features, weights), torch.tensor([[0.5, 0.5, 1.0], [1.0, 1.0, 1.0]]))


def test_pair_similarity_and_quality_score():
    # rows: (1,0)·(1,1)/sqrt2 = 1/sqrt2; (1,0)·(0,3) = 0; (2,0)·(5,0) -> 1
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    z_plus = torch.tensor([[1.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    s = pair_similarity(z, z_plus)
    assert torch.allclose(s, torch.tensor([1 / math.sqrt(2), 0.0, 1.0]), atol=1e-6)
    assert torch.equal(quality_score(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 0.25])),
                       torch.tensor([-0.5, 0.75]))


def test_identical_pair_has_zero_quality():
    torch.manual_seed(0)
    features = torch.randn(2, 2, 2, 3)
    projections = torch.randn(2, 2, 2)
    pq = score_pairs(features, features.clone(), projections, projections.clone())
    assert isinstance(pq, PairQuality)
    assert torch.allclose(pq.s_f, torch.ones(2), atol=1e-6)
    assert torch.allclose(pq.s_b, torch.ones(2), atol=1e-6)
    assert torch.allclose(pq.q, torch.zeros(2), atol=1e-6)


def test_matching_background_different_foreground_is_negative():
    # all positions e1, except the generated view's foreground (1,1) is (1,1):
    #   z^f = e1, z^f+ = (1,1) -> s_f = 1/sqrt2
    #   z^b = z^b+ = e1        -> s_b = 1
    #   q = 1/sqrt2 - 1 ≈ -0.2929
    features = grid(E1, E1, E1, E1)
    features_plus = grid(E1, E1, E1, [1.0, 1.0])
    pq = score_pairs(features, features_plus, FG_AT_11, FG_AT_11.clone())
    assert torch.allclose(pq.s_f, torch.tensor([1 / math.sqrt(2)]), atol=1e-6)
    assert torch.allclose(pq.s_b, torch.tensor([1.0]), atol=1e-6)
    assert torch.allclose(pq.q, torch.tensor([1 / math.sqrt(2) - 1]), atol=1e-6)
    assert pq.q.item() < 0


def test_matching_foreground_different_background_is_positive():
    # foreground (1,1) is e2 in both -> s_f = 1
    # background of the original: e1, e1, e1 -> z^b = e1
    # background of the generated view: e2, e1, e1 -> z^b+ = (2/3, 1/3)
    #   s_b = (2/3) / sqrt(4/9 + 1/9) = 2/sqrt5 ≈ 0.8944
    #   q = 1 - 2/sqrt5 ≈ 0.1056
    features = grid(E1, E1, E1, E2)
    features_plus = grid(E2, E1, E1, E2)
    pq = score_pairs(features, features_plus, FG_AT_11, FG_AT_11.clone())
    assert torch.allclose(pq.s_f, torch.tensor([1.0]), atol=1e-6)
    assert torch.allclose(pq.s_b, torch.tensor([2 / math.sqrt(5)]), atol=1e-6)
    assert torch.allclose(pq.q, torch.tensor([1 - 2 / math.sqrt(5)]), atol=1e-6)
    assert pq.q.item() > 0


def test_each_image_uses_its_own_maps():
    # original: foreground at (1,1) = e2, background e1
    # generated: foreground moved to (0,0) = e2 (its own projections say so), background e1
    #   own maps: z^f = z^f+ = e2, z^b = z^b+ = e1 -> s_f = s_b = 1, q = 0
    #   (with the original's maps z^f+ would be e1 and s_f = 0)
    features = grid(E1, E1, E1, E2)
    features_plus = grid(E2, E1, E1, E1)
    fg_at_00 = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    pq = score_pairs(features, features_plus, FG_AT_11, fg_at_00)
    assert torch.allclose(pq.s_f, torch.tensor([1.0]), atol=1e-6)
    assert torch.allclose(pq.s_b, torch.tensor([1.0]), atol=1e-6)
    assert torch.allclose(pq.q, torch.tensor([0.0]), atol=1e-6)


def test_score_pairs_batch_independence():
    torch.manual_seed(1)
    f, fp = torch.randn(3, 2, 2, 3), torch.randn(3, 2, 2, 3)
    p, pp = torch.randn(3, 2, 2), torch.randn(3, 2, 2)
    batch = score_pairs(f, fp, p, pp)
    for i in range(3):
        alone = score_pairs(f[i : i + 1], fp[i : i + 1], p[i : i + 1], pp[i : i + 1])
        assert torch.allclose(batch.s_f[i : i + 1], alone.s_f, atol=1e-6)
        assert torch.allclose(batch.s_b[i : i + 1], alone.s_b, atol=1e-6)
        assert torch.allclose(batch.q[i : i + 1], alone.q, atol=1e-6)


def test_score_pairs_half_input_gives_float32():
    features = grid(E1, E1, E1, E2).half()
    features_plus = grid(E2, E1, E1, E2).half()
    pq = score_pairs(features, features_plus, FG_AT_11.half(), FG_AT_11.half())
    assert pq.q.dtype == torch.float32
    assert torch.allclose(pq.q, torch.tensor([1 - 2 / math.sqrt(5)]), atol=1e-6)


def test_score_pairs_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        score_pairs(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 4), FG_AT_11, FG_AT_11)
    with pytest.raises(ValueError):
        score_pairs(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 3), torch.zeros(1, 3, 2), FG_AT_11)


def test_quality_weights_hand_values():
    # q = [0, ln2], gamma 1: exp = [1, 2] -> softmax [1/3, 2/3] -> n=2 -> [2/3, 4/3], mean 1
    w = quality_weights(torch.tensor([0.0, math.log(2)]))
    assert torch.allclose(w, torch.tensor([2 / 3, 4 / 3]), atol=1e-6)
    assert torch.allclose(w.mean(), torch.tensor(1.0), atol=1e-6)
    # gamma 2: exp = [1, 4] -> softmax [1/5, 4/5] -> [0.4, 1.6]
    w2 = quality_weights(torch.tensor([0.0, math.log(2)]), gamma=2.0)
    assert torch.allclose(w2, torch.tensor([0.4, 1.6]), atol=1e-6)


def test_quality_weights_gamma_zero_is_all_ones():
    w = quality_weights(torch.tensor([-0.7, 0.1, 0.9, 0.3]), gamma=0.0)
    assert torch.allclose(w, torch.ones(4), atol=1e-6)


def test_quality_weights_detached():
    q = torch.tensor([0.2, -0.4, 0.6], requires_grad=True)
    w = quality_weights(q)
    assert not w.requires_grad
    assert w.grad_fn is None


def test_quality_weights_match_softmax_formula():
    torch.manual_seed(2)
    q = torch.randn(8)
    w = quality_weights(q, gamma=1.5)
    assert torch.allclose(w, 8 * torch.softmax(1.5 * q, dim=0), atol=1e-6)
    assert torch.allclose(w.mean(), torch.tensor(1.0), atol=1e-6)
    # higher quality -> larger weight
    assert torch.equal(torch.argsort(w), torch.argsort(q))
