"""Noise levels for the unCLIP image embedding: adaptive (Eq. 8), constant and random (paper Table 7)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

LEVELS: tuple[int, ...] = (0, 100, 200, 300, 400)
# The unCLIP noising scheduler has 1000 train timesteps, so valid levels are 0..999.
MAX_NOISE_LEVEL = 999
POLICY_KINDS = ("adaptive", "constant", "random")
PER_IMAGE_SUFFIX = ":per-image"  # 'auto:per-image': adaptive with each image's own PCA (no fitted basis)
POLICY_PATTERN = (rf"^(?:(?:auto|adaptive)(?:{PER_IMAGE_SUFFIX})?|random"
                  rf"|(?:constant:)?[0-9]{{1,{len(str(MAX_NOISE_LEVEL))}}})$")
"""The canonical spellings `parse_noise_policy` accepts, as a regex (0..999 is every 1–3 digit number)."""


def adaptive_noise_level(p: Tensor) -> Tensor:
    """Adaptive noise level (Eq. 8): l = 100 * floor(p / 0.2), capped at 400 -> int64."""
    p = torch.as_tensor(p, dtype=torch.float64)
    if not torch.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("foreground proportions must lie in [0, 1]")
    # p * 5 instead of p / 0.2, plus a tiny slack, so that 0.6 / 0.2 = 2.9999999999999996 gives bucket 3.
    bucket = torch.floor(p * 5 + 1e-6).clamp(max=len(LEVELS) - 1)
    return bucket.long() * 100


def check_level(level: int) -> int:
    """A noise level validated to lie in 0..MAX_NOISE_LEVEL."""
    if isinstance(level, bool) or not isinstance(level, int):
        raise ValueError(f"noise level must be an integer, got {level!r}")
    if not 0 <= level <= MAX_NOISE_LEVEL:
        raise ValueError(f"noise level must be in 0..{MAX_NOISE_LEVEL}, got {level}")
    return level


@dataclass(frozen=True)
class NoisePolicy:
    """How to choose the embedding noise level of each sample: adaptive, constant or random."""

    kind: str
    level: int | None = None
    per_image: bool = False  # adaptive only: p from the image's own PCA, asked for by name

    def __post_init__(self) -> None:
        """Reject unknown kinds and levels that do not fit the kind."""
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"noise policy kind must be one of {POLICY_KINDS}, got {self.kind!r}")
        if self.per_image and self.kind != "adaptive":
            raise ValueError("only the adaptive noise policy has a per-image variant")
        if self.kind == "constant":
            check_level(self.level)
        elif self.level is not None:
            raise ValueError(f"a {self.kind} noise policy takes no level, got {self.level}")

    @property
    def spec(self) -> str:
        """Canonical text: 'adaptive', 'adaptive:per-image', 'constant:L' or 'random'."""
        if self.kind == "constant":
            return f"constant:{self.level}"
        return self.kind + (PER_IMAGE_SUFFIX if self.per_image else "")

    @property
    def needs_foreground(self) -> bool:
        """Whether the policy needs the foreground proportion p (adaptive only)."""
        return self.kind == "adaptive"


def parse_level(text: str) -> int:
    """An explicit noise level from its decimal text."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"noise level must be an integer in 0..{MAX_NOISE_LEVEL}, got {text!r}")
    return check_level(int(text))


def parse_noise_policy(spec: str | int) -> NoisePolicy:
    """Policy from 'auto'/'adaptive', 'auto:per-image', 'random', 'constant:L', or a level L (int or digits).

    The one parser of noise policies: the generator API, `generate-dataset` and the trainer's
    `--noise-policy` all call it.
    """
    if isinstance(spec, int) and not isinstance(spec, bool):
        return NoisePolicy("constant", check_level(spec))
    if not isinstance(spec, str):
        raise ValueError(f"noise policy must be a string or an integer level, got {spec!r}")
    text = spec.strip().lower()
    if text in ("auto", "adaptive"):
        return NoisePolicy("adaptive")
    if text in ("auto" + PER_IMAGE_SUFFIX, "adaptive" + PER_IMAGE_SUFFIX):
        return NoisePolicy("adaptive", per_image=True)
    if text == "random":
        return NoisePolicy("random")
    if text.startswith("constant:"):
        return NoisePolicy("constant", parse_level(text.removeprefix("constant:").strip()))
    if text.isascii() and text.isdigit():
        return NoisePolicy("constant", parse_level(text))
    raise ValueError(
        f"unknown noise policy {spec!r}: use 'adaptive' (or 'auto'), 'auto:per-image', 'random', 'constant:L' "
        f"or a level L in 0..{MAX_NOISE_LEVEL}"
    )


def _derived_seed(sha: str, request_seed: int, tag: str) -> int:
    """A 63-bit seed from the input's SHA-256, the request seed and a tag."""
    digest = hashlib.sha256(f"{sha}:{int(request_seed)}:{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def view_seed(sha: str, request_seed: int, view_index: int) -> int:
    """The seed of one generated view (embedding noise and initial latents): differs per image and per view."""
    return _derived_seed(sha, request_seed, f"view{int(view_index)}")


def level_seed(sha: str, request_seed: int) -> int:
    """The seed of the `random` policy's level draw for one image (one draw per image)."""
    return _derived_seed(sha, request_seed, "level")


def random_noise_level(seed: int) -> int:
    """A level drawn uniformly from LEVELS (paper Table 7), determined by the seed."""
    generator = torch.Generator().manual_seed(seed)
    return LEVELS[int(torch.randint(len(LEVELS), (1,), generator=generator))]


def noise_levels(policy: NoisePolicy, fg_ratio: Tensor | None, seeds: list[int]) -> Tensor:
    """One noise level per sample -> int64 [B] on the CPU, B = len(seeds)."""
    if policy.kind == "adaptive":
        if fg_ratio is None:
            raise ValueError("the adaptive noise policy needs the foreground proportions")
        if fg_ratio.shape != (len(seeds),):
            raise ValueError(f"fg_ratio has shape {tuple(fg_ratio.shape)}, expected ({len(seeds)},)")
        return adaptive_noise_level(fg_ratio.detach().cpu())
    if policy.kind == "constant":
        return torch.full((len(seeds),), policy.level, dtype=torch.int64)
    return torch.tensor([random_noise_level(seed) for seed in seeds], dtype=torch.int64)
