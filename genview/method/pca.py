"""PCA foreground basis of an encoder's patch tokens: the basis, its streaming fitter, one orientation rule.

Orientation (one rule, used by the fitter and the per-image fallback): foreground is the side of the first
component whose mean projection is higher on the centre of the token grid than on its border.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from genview.method.defaults import FG_FRACTION



@dataclass(frozen=True, eq=False)
class PCABasis:
    """First principal component of patch tokens, oriented so foreground projects high."""

    mean: Tensor
    component: Tensor
    threshold: float

    def __post_init__(self) -> None:
        """Check shapes and store mean/component as contiguous float32 CPU tensors."""
        mean = torch.as_tensor(self.mean).detach().to("cpu", torch.float32).contiguous()
        component = torch.as_tensor(self.component).detach().to("cpu", torch.float32).contiguous()
        if mean.ndim != 1 or component.shape != mean.shape or mean.numel() == 0:
            raise ValueError(
                f"PCA basis needs mean and component of the same shape [D], got "
                f"{tuple(mean.shape)} and {tuple(component.shape)}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(component).all()):
            raise ValueError("PCA basis mean and component must be finite")
        if abs(float(component.norm()) - 1.0) > 1e-3:
            raise ValueError(f"PCA component must have unit norm, got {float(component.norm()):.6f}")
        threshold = float(self.threshold)
        if not math.isfinite(threshold):
            raise ValueError(f"PCA threshold must be finite, got {threshold}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "component", component)
        object.__setattr__(self, "threshold", threshold)

    @property
    def dim(self) -> int:
        """Token width D."""
        return self.mean.numel()

    def project(self, tokens: Tensor) -> Tensor:
        """Projection of tokens [..., D] on the oriented first component -> [...]."""
        if tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens have width {tokens.shape[-1]}, the PCA basis expects {self.dim}")
        mean = self.mean.to(tokens.device)
        component = self.component.to(tokens.device)
        return (tokens.float() - mean) @ component

    def to_bytes(self) -> bytes:
        """Deterministic safetensors encoding with tensors mean, component, threshold."""
        threshold = torch.tensor(self.threshold, dtype=torch.float64)
        return save_safetensors({"mean": self.mean, "component": self.component, "threshold": threshold})

    @classmethod
    def from_bytes(cls, data: bytes) -> PCABasis:
        """Inverse of to_bytes; ValueError on anything that is not a saved PCA basis."""
        try:
            tensors = load_safetensors(bytes(data))
        except Exception as exc:
            raise ValueError(f"not a safetensors PCA basis: {exc}") from exc
        missing = {"mean", "component", "threshold"} - tensors.keys()
        if missing:
            raise ValueError(f"PCA basis file lacks tensors {sorted(missing)}")
        if tensors["threshold"].numel() != 1:
            shape = tuple(tensors["threshold"].shape)
            raise ValueError(f"PCA threshold must be one number, got shape {shape}")
        return cls(tensors["mean"], tensors["component"], float(tensors["threshold"].reshape(())))

    @property
    def fingerprint(self) -> str:
        """First 16 hex characters of the sha256 of to_bytes()."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16]


def centre_border_masks(grid: int) -> tuple[Tensor, Tensor]:
    """Row-major bool masks [grid*grid]: central block of side ceil(grid/2), outermost ring."""
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    side = math.ceil(grid / 2)
    start = (grid - side) // 2
    index = torch.arange(grid)
    in_centre = (index >= start) & (index < start + side)
    on_edge = (index == 0) | (index == grid - 1)
    centre = in_centre[:, None] & in_centre[None, :]
    border = on_edge[:, None] | on_edge[None, :]
    return centre.flatten(), border.flatten()


def centre_is_higher(centre_mean: Tensor, border_mean: Tensor) -> Tensor:
    """The orientation rule: True where the centre's mean projection is >= the border's (keep the sign)."""
    return centre_mean >= border_mean


def orientation_sign(projections: Tensor, grid: int) -> float:
    """+1.0 if the mean projection over centre positions is >= that over border positions, else -1.0."""
    if projections.shape[-1] != grid * grid:
        raise ValueError(
            f"projections have {projections.shape[-1]} positions, grid {grid} needs {grid * grid}"
        )
    centre, border = centre_border_masks(grid)
    flat = projections.reshape(-1, grid * grid).double().cpu()
    return 1.0 if centre_is_higher(flat[:, centre].mean(), flat[:, border].mean()) else -1.0


class PCAFitter:
    """Streaming PCA over patch tokens: moments, centre/border sums and a reservoir sample of tokens."""

    def __init__(self, dim: int, grid: int, max_sample_tokens: int = 200_000, seed: int = 0):
        if dim < 1 or grid < 1 or max_sample_tokens < 1:
            raise ValueError("dim, grid and max_sample_tokens must all be >= 1")
        self.dim = dim
        self.grid = grid
        self.max_sample_tokens = max_sample_tokens
        self.centre, self.border = centre_border_masks(grid)
        self.generator = torch.Generator().manual_seed(seed)
        self.images = 0
        self.tokens_seen = 0
        self.sum: Tensor | None = None
        self.sum_outer: Tensor | None = None
        self.centre_sum: Tensor | None = None
        self.border_sum: Tensor | None = None
        self.sample: Tensor | None = None

    @property
    def num_images(self) -> int:
        """Number of images passed to update so far."""
        return self.images

    def update(self, tokens: Tensor) -> None:
        """Accumulate a batch of patch tokens [B, grid*grid, D]."""
        expected = (self.grid * self.grid, self.dim)
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != expected:
            raise ValueError(f"tokens must be [B, {expected[0]}, {expected[1]}], got {tuple(tokens.shape)}")
        if self.sum is None:
            self._allocate(tokens.device)
        x = tokens.detach().to(self.sum.device, torch.float64)
        flat = x.reshape(-1, self.dim)
        self.sum += flat.sum(0)
        self.sum_outer += flat.T @ flat
        self.centre_sum += x[:, self.centre.to(x.device)].sum((0, 1))
        self.border_sum += x[:, self.border.to(x.device)].sum((0, 1))
        self._reservoir_add(flat.float())
        self.images += tokens.shape[0]
        self.tokens_seen += flat.shape[0]

    def _allocate(self, device: torch.device) -> None:
        """Zeroed accumulators on the device of the first batch."""
        self.sum = torch.zeros(self.dim, dtype=torch.float64, device=device)
        self.sum_outer = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=device)
        self.centre_sum = torch.zeros_like(self.sum)
        self.border_sum = torch.zeros_like(self.sum)
        self.sample = torch.empty(0, self.dim, dtype=torch.float32, device=device)

    def _reservoir_add(self, flat: Tensor) -> None:
        """Reservoir sampling (Algorithm R) of tokens [N, D], vectorised over the batch."""
        room = self.max_sample_tokens - self.sample.shape[0]
        if room > 0:
            self.sample = torch.cat([self.sample, flat[:room]])
            flat = flat[room:]
        if flat.shape[0] == 0:
            return
        first = max(self.tokens_seen, self.max_sample_tokens)  # stream index of flat[0]
        positions = torch.arange(first, first + flat.shape[0], dtype=torch.float64)
        uniform = torch.rand(flat.shape[0], generator=self.generator, dtype=torch.float64)
        slots = (uniform * (positions + 1)).long()  # uniform in 0..position
        keep = slots < self.max_sample_tokens
        if not keep.any():
            return
        # Later tokens overwrite earlier ones in the same slot, as in the sequential algorithm.
        last_writer = torch.full((self.max_sample_tokens,), -1, dtype=torch.long)
        last_writer.scatter_reduce_(0, slots[keep], torch.arange(flat.shape[0])[keep], reduce="amax")
        filled = (last_writer >= 0).nonzero().squeeze(1)
        self.sample[filled.to(self.sample.device)] = flat[last_writer[filled].to(flat.device)]

    def fit(self, fg_fraction: float = FG_FRACTION) -> PCABasis:
        """Top covariance eigenvector, oriented centre-high, threshold a at quantile 1 - fg_fraction."""
        if self.tokens_seen == 0:
            raise ValueError("cannot fit a PCA basis: no tokens were seen")
        if not 0.0 < fg_fraction < 1.0:
            raise ValueError(f"fg_fraction must be in (0, 1), got {fg_fraction}")
        mean = self.sum / self.tokens_seen
        covariance = self.sum_outer / self.tokens_seen - torch.outer(mean, mean)
        component = torch.linalg.eigh(covariance).eigenvectors[:, -1]
        centre_count = self.images * int(self.centre.sum())
        border_count = self.images * int(self.border.sum())
        centre_projection = (self.centre_sum / centre_count - mean) @ component
        border_projection = (self.border_sum / border_count - mean) @ component
        if not centre_is_higher(centre_projection, border_projection):
            component = -component
        unthresholded = PCABasis(mean, component / component.norm(), 0.0)
        projections = unthresholded.project(self.sample)
        threshold = torch.quantile(projections, 1.0 - fg_fraction)
        return PCABasis(unthresholded.mean, unthresholded.component, float(threshold))


def fit_pca_basis(tokens: Tensor, grid: int, fg_fraction: float = FG_FRACTION) -> PCABasis:
    """PCA basis fitted in one pass over tokens [B, T, D] (all tokens kept for the threshold)."""
    fitter = PCAFitter(tokens.shape[-1], grid, max_sample_tokens=max(1, tokens.shape[0] * tokens.shape[1]))
    fitter.update(tokens)
    return fitter.fit(fg_fraction)


def per_image_projections(tokens: Tensor, grid: int) -> Tensor:
    """Fallback: each image's tokens [B, T, D] on its own oriented first principal component -> [B, T].

    With X the centred tokens and u the top eigenvector (eigenvalue λ) of the small Gram matrix X Xᵀ,
    the first component is v = Xᵀu/√λ and the projections are X v = √λ·u: one batched T×T eigh, done on
    the CPU (cuSOLVER batches only matrices up to 32×32 and would loop over the images one by one).
    """
    if tokens.ndim != 3:
        raise ValueError(f"per-image tokens must be [B, T, D], got {tuple(tokens.shape)}")
    centred = tokens.float() - tokens.float().mean(1, keepdim=True)
    eigenvalues, eigenvectors = torch.linalg.eigh((centred @ centred.transpose(1, 2)).cpu())
    projections = (eigenvectors[:, :, -1] * eigenvalues[:, -1:].clamp_min(0).sqrt()).to(tokens.device)
    centre, border = centre_border_masks(grid)
    keep = centre_is_higher(projections[:, centre.to(tokens.device)].mean(1),
                            projections[:, border.to(tokens.device)].mean(1))
    return torch.where(keep[:, None], projections, -projections)


def basis_from_official(vectors: np.ndarray | Tensor, mean: np.ndarray | Tensor, threshold: float) -> PCABasis:
    """A basis from the official repository's saved PCA: `pca_vectors` [K, D] (row 0 = first component,
    unit norm, sign as its authors chose it), `mean_vectors` [D] (or [1, D]) and the threshold a on the raw
    projections (x − mean)·v, exactly as the official code thresholds them."""
    vectors = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
    mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(-1)
    first = vectors.reshape(-1, vectors.shape[-1])[0] if vectors.ndim else vectors
    return PCABasis(mean, first, threshold)
