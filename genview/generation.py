"""ViewGenerator: Eq. 7 → Eq. 8 → Eq. 9 on a batch of decoded images (no queue, store or HTTP).

Used by the generator worker, the GPU benchmark and the batch (Ray) path alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from genview.basis import BasisRequired, require_basis, uses_fitted_basis
from genview.method.foreground import proportion_above, proportion_above_quantile
from genview.method.noise import level_seed, noise_levels, view_seed
from genview.method.defaults import FG_FRACTION
from genview.method.pca import PCABasis, per_image_projections
from genview.method.quality import foreground_map
from genview.models.unclip import UnclipGenerator
from genview.schemas import GenerationParams

__all__ = ["BasisRequired", "GeneratedViews", "ViewGenerator", "ViewRequest", "require_basis", "uses_fitted_basis"]

@dataclass(frozen=True)
class ViewRequest:
    """One decoded input image, its SHA-256, its parameters and the basis they were keyed on (None: none)."""

    image: Image.Image
    sha: str
    params: GenerationParams
    basis: PCABasis | None


@dataclass
class GeneratedViews:
    """The views (resized to params.size), p (Eq. 7), noise level (Eq. 8), foreground map and per-view seeds."""

    views: list[Image.Image]
    fg_ratio: float
    noise_level: int
    fg_map: Image.Image
    seeds: list[int]
    fg_basis: str  # "fitted" or "per-image": which estimate gave fg_ratio


@dataclass(frozen=True)
class _Sample:
    """One view to generate: request index, view index, level and seed."""

    request: int
    view: int
    level: int
    seed: int


def fg_map_image(projections: torch.Tensor, grid: int, size: int) -> Image.Image:
    """Min-max normalised token projections as a grayscale image of side `size` (white = foreground)."""
    fg = foreground_map(projections.reshape(1, grid, grid))[0]
    img = Image.fromarray((fg * 255).round().to(torch.uint8).numpy(), mode="L")
    return img.resize((size, size), Image.Resampling.NEAREST)


class ViewGenerator:
    """Generates adaptive unCLIP views for a batch of images in shared encoder and pipeline calls."""

    def __init__(self, unclip: UnclipGenerator, fg_fraction: float = FG_FRACTION, max_batch: int = 8,
                 pad_batches: bool = False):
        """`pad_batches`: fill every pipeline call up to max_batch samples (one shape for a compiled UNet)."""
        self.unclip, self.fg_fraction, self.max_batch = unclip, fg_fraction, max_batch
        self.pad_batches = pad_batches

    def foreground(self, requests: list[ViewRequest], tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """p (Eq. 7) [B], token projections [B, T] and the estimate used, in one call per distinct basis."""
        groups: dict[PCABasis | None, list[int]] = {}
        for i, r in enumerate(requests):
            per_image = r.basis is None or r.params.noise_policy.per_image
            groups.setdefault(None if per_image else r.basis, []).append(i)
        ratios = torch.empty(len(requests))
        projections = torch.empty(tokens.shape[:2])
        kinds = [""] * len(requests)
        for basis, idx in groups.items():
            sub = tokens[idx]
            if basis is None:
                proj = per_image_projections(sub, self.unclip.grid)
                ratios[idx] = proportion_above_quantile(proj, self.fg_fraction).cpu()
            else:
                proj = basis.project(sub)
                ratios[idx] = proportion_above(proj, basis.threshold).cpu()
            projections[idx] = proj.float().cpu()
            for i in idx:
                kinds[i] = "per-image" if basis is None else "fitted"
        return ratios, projections, kinds

    def levels(self, requests: list[ViewRequest], ratios: torch.Tensor) -> list[int]:
        """One noise level per request: Eq. 8 from p, the constant, or a per-image random draw."""
        return [int(noise_levels(r.params.noise_policy, ratios[i:i + 1], [level_seed(r.sha, r.params.seed)])[0])
                for i, r in enumerate(requests)]

    def generate(self, requests: list[ViewRequest]) -> list[GeneratedViews]:
        """Encode once, estimate p and the level per image, generate every view in batched pipeline calls."""
        for r in requests:
            require_basis(r.params.noise_policy, r.basis is not None)
        if not requests:
            return []
        encoded = self.unclip.encode([r.image for r in requests])
        ratios, projections, kinds = self.foreground(requests, encoded.tokens)
        levels = self.levels(requests, ratios)
        samples = [_Sample(i, v, levels[i], view_seed(r.sha, r.params.seed, v))
                   for i, r in enumerate(requests) for v in range(r.params.num_views)]
        images = self._generate_samples(requests, encoded.embeds, samples)
        out = []
        for i, r in enumerate(requests):
            mine = [s for s in samples if s.request == i]
            size = r.params.size
            views = [images[(i, s.view)].resize((size, size), Image.Resampling.LANCZOS) for s in mine]
            out.append(GeneratedViews(views, float(ratios[i]), levels[i],
                                      fg_map_image(projections[i], self.unclip.grid, size),
                                      [s.seed for s in mine], kinds[i]))
        return out

    def _generate_samples(self, requests: list[ViewRequest], embeds: torch.Tensor,
                          samples: list[_Sample]) -> dict[tuple[int, int], Image.Image]:
        """Pipeline calls of up to max_batch samples sharing steps and guidance (levels may differ, Eq. 9)."""
        groups: dict[tuple[int, float], list[_Sample]] = {}
        for s in samples:
            p = requests[s.request].params
            groups.setdefault((p.steps, p.guidance_scale), []).append(s)
        views: dict[tuple[int, int], Image.Image] = {}
        for (steps, guidance), group in groups.items():
            for k in range(0, len(group), self.max_batch):
                part = group[k:k + self.max_batch]
                padded = part + part[-1:] * (self.max_batch - len(part)) if self.pad_batches else part
                images = self.unclip.generate(
                    embeds[[s.request for s in padded]], torch.tensor([s.level for s in padded]),
                    [s.seed for s in padded], [requests[s.request].params.prompt for s in padded], steps, guidance)
                views.update({(s.request, s.view): img for s, img in zip(part, images)})
        return views
