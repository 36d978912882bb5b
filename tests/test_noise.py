"""Noise-level policies: adaptive buckets (Eq. 8), constant, explicit and random (Table 7)."""

from __future__ import annotations

import pytest
import torch

from genview.method.noise import (
    LEVELS,
    MAX_NOISE_LEVEL,
    NoisePolicy,
    adaptive_noise_level,
    noise_levels,
    parse_noise_policy,
)


def test_adaptive_buckets_of_eq_8():
    p = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], dtype=torch.float64)
    expected = [0, 0, 100, 100, 200, 200, 300, 300, 400, 400, 400]
    assert adaptive_noise_level(p).tolist() == expected
    assert adaptive_noise_level(p.float()).tolist() == expected
    assert adaptive_noise_level(p).dtype == torch.int64


def test_adaptive_boundaries_are_exact():
    assert 0.6 / 0.2 < 3  # the float trap Eq. 8 must not fall into
    assert adaptive_noise_level(torch.tensor([0.2, 0.4, 0.6, 0.8])).tolist() == [100, 200, 300, 400]
    below = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64) - 1e-3
    assert adaptive_noise_level(below).tolist() == [0, 100, 200, 300]
    # Real proportions are k / 256: 51/256 = 0.199 and 52/256 = 0.203 straddle the first boundary.
    assert adaptive_noise_level(torch.tensor([51 / 256, 52 / 256, 205 / 256])).tolist() == [0, 100, 400]


def test_adaptive_rejects_proportions_outside_0_1():
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError):
            adaptive_noise_level(torch.tensor([bad]))


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("auto", "adaptive"),
        (" Adaptive ", "adaptive"),
        ("RANDOM", "random"),
        ("constant:300", "constant:300"),
        (" Constant: 300 ", "constant:300"),
        ("constant:0", "constant:0"),
        (250, "constant:250"),
        ("999", "constant:999"),
        (0, "constant:0"),
    ],
)
def test_parse_noise_policy_spellings(spec, canonical):
    policy = parse_noise_policy(spec)
    assert policy.spec == canonical
    assert parse_noise_policy(policy.spec) == policy
    assert policy.needs_foreground == (canonical == "adaptive")


@pytest.mark.parametrize(
    "spec",
    [5000, -1, 1000, "constant:abc", "foo", "constant:1000", "1000", "constant:", "constant:-5", "-1", "", True,
     3.5],
)
def test_parse_noise_policy_errors(spec):
    with pytest.raises(ValueError):
        parse_noise_policy(spec)


def test_policy_rejects_levels_that_do_not_fit_its_kind():
    assert MAX_NOISE_LEVEL == 999
    with pytest.raises(ValueError):
        NoisePolicy("constant")
    with pytest.raises(ValueError):
        NoisePolicy("random", 100)
    with pytest.raises(ValueError):
        NoisePolicy("sometimes")


def test_adaptive_levels_follow_the_foreground_proportion():
    policy = parse_noise_policy("adaptive")
    levels = noise_levels(policy, torch.tensor([0.05, 0.39, 0.4, 1.0]), [0, 1, 2, 3])
    assert levels.tolist() == [0, 100, 200, 400] and levels.dtype == torch.int64
    with pytest.raises(ValueError):
        noise_levels(policy, None, [0])
    with pytest.raises(ValueError):
        noise_levels(policy, torch.tensor([0.5, 0.5]), [0])


def test_constant_and_explicit_levels_repeat():
    assert noise_levels(parse_noise_policy("constant:300"), None, [4, 5, 6]).tolist() == [300, 300, 300]
    assert noise_levels(parse_noise_policy(750), torch.tensor([0.9, 0.1]), [1, 2]).tolist() == [750, 750]
    assert noise_levels(parse_noise_policy("random"), None, []).shape == (0,)


def test_random_levels_are_seeded_per_sample():
    policy = parse_noise_policy("random")
    seeds = list(range(100))
    levels = noise_levels(policy, None, seeds)
    assert levels.dtype == torch.int64
    assert torch.equal(levels, noise_levels(policy, None, seeds))
    assert set(levels.tolist()) == set(LEVELS)  # 100 draws reach all 5 levels
    # The documented recipe, so any component can reproduce a sample's level from its seed.
    for seed in (0, 37, 12345):
        index = torch.randint(len(LEVELS), (1,), generator=torch.Generator().manual_seed(seed))
        assert noise_levels(policy, None, [seed]).tolist() == [LEVELS[int(index)]]
    # A sample's level depends on its own seed only, not on its batch neighbours.
    assert noise_levels(policy, None, [seeds[37]]).tolist() == [levels[37].item()]
    assert noise_levels(policy, None, [99, 37, 5]).tolist() == levels[[99, 37, 5]].tolist()


def test_per_image_adaptive_is_asked_for_by_name():
    policy = parse_noise_policy("auto:per-image")
    assert policy == NoisePolicy("adaptive", per_image=True) and policy.spec == "adaptive:per-image"
    assert parse_noise_policy(policy.spec) == policy and policy.needs_foreground
    assert not parse_noise_policy("auto").per_image
    with pytest.raises(ValueError):
        NoisePolicy("random", per_image=True)
