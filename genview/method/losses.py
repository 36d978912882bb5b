"""Per-sample SSL losses and the quality-weighted loss (GenView Eq. 2–4, 14).

Ready-made SSL losses reduce to a batch mean, which cannot be weighted per pair, so every loss
here returns one value per sample ``[B]``; the trainer combines them with Eq. 14,
``weighted_loss(per_sample, w)`` = mean_i w_i L_i, the weights being constants (detached) with
mean 1 (``quality.quality_weights``). Every loss computes in float32 with autocast off, whatever the
input dtype or the caller's autocast (``@in_fp32``), and does no I/O.

Which loss each method uses (the caller symmetrises over the two views where the method does):

- MoCo v2: ``info_nce(q, k, t, queue)`` (negatives from the key queue); k from the momentum encoder.
- MoCo v3: ``info_nce(q1, k2, t) + info_nce(q2, k1, t)`` with in-batch negatives (the official code
  also multiplies by 2t); across ranks the keys of the global batch (``all_keys``, ``offset``).
- SimCLR: ``nt_xent(z1, z2, t)`` (InfoNCE over the 2N embeddings of the global batch).
- SimSiam: ``0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)`` (-cos form).
- BYOL: ``byol_loss(p1, z2') + byol_loss(p2, z1')`` (2 - 2cos form, z' from the target network).
- SwAV: ``swav_loss(scores1, scores2)`` with Sinkhorn-Knopp codes (2 global views);
  ``swapped_prediction(scores, codes)`` for multi-crop (codes of the global crops, all crops predicted).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

SumFn = Optional[Callable[[Tensor], Tensor]]
Loss = TypeVar("Loss", bound=Callable[..., Tensor])


def _fp32(value: Any) -> Any:
    """Floating tensors (also inside lists and tuples) as float32; anything else unchanged."""
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_fp32(v) for v in value)
    return value


def _device_type(values: Sequence[Any]) -> str:
    """The device type of the first tensor among `values` (searched inside lists and tuples)."""
    for value in values:
        if isinstance(value, Tensor):
            return value.device.type
        if isinstance(value, (list, tuple)) and (found := _device_type(value)):
            return found
    return ""


def in_fp32(loss: Loss) -> Loss:
    """Run `loss` on float32 copies of its tensor arguments with autocast disabled on their device (bf16/fp16
    training keeps exact, finite losses)."""
    @functools.wraps(loss)
    def wrapper(*args: Any, **kwargs: Any) -> Tensor:
        device = _device_type([*args, *kwargs.values()]) or "cpu"
        with torch.autocast(device, enabled=False):
            return loss(*_fp32(args), **{k: _fp32(v) for k, v in kwargs.items()})
    return wrapper  # type: ignore[return-value]


def weighted_loss(per_sample: Tensor, weights: Tensor | None = None) -> Tensor:
    """Quality-weighted loss L = mean_i w_i L_i with w detached; plain mean when w is None (Eq. 14)."""
    if per_sample.dim() != 1 or per_sample.shape[0] == 0:
        raise ValueError(f"per-sample losses must be a non-empty [B] tensor, got {tuple(per_sample.shape)}")
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ValueError(
            f"weights {tuple(weights.shape)} do not match per-sample losses {tuple(per_sample.shape)}"
        )
    return (weights.detach().to(per_sample.dtype) * per_sample).mean()


@in_fp32
def info_nce(
    q: Tensor, k: Tensor, temperature: float, queue: Tensor | None = None, all_keys: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """InfoNCE per sample [B] with positive k_i for q_i; in-batch or queue negatives (Eq. 2).

    In-batch negatives across ranks: `all_keys` [N, D] holds the keys of the global batch, this rank's
    k being rows offset … offset+B−1 (MoCo v3's gathered keys); the positive of q_i is row offset+i.
    """
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be [B, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    q = F.normalize(q, dim=1)
    if queue is None:
        keys = k if all_keys is None else all_keys
        if keys.dim() != 2 or keys.shape[1] != q.shape[1] or not 0 <= offset <= keys.shape[0] - q.shape[0]:
            raise ValueError(f"keys {tuple(keys.shape)} cannot hold this batch of {q.shape[0]} at offset {offset}")
        logits = q @ F.normalize(keys, dim=1).t() / temperature
        labels = torch.arange(q.shape[0], device=q.device) + offset
    else:
        if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
            raise ValueError(f"queue must be [K, {q.shape[1]}], got {tuple(queue.shape)}")
        k = F.normalize(k, dim=1)
        negatives = F.normalize(queue.detach(), dim=1)
        positive = (q * k).sum(dim=1, keepdim=True)
        logits = torch.cat([positive, q @ negatives.t()], dim=1) / temperature
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels, reduction="none")


@in_fp32
def nt_xent(
    z1: Tensor, z2: Tensor, temperature: float, gathered: tuple[Tensor, Tensor] | None = None, offset: int = 0
) -> Tensor:
    """SimCLR NT-Xent per pair [B]: mean of both directions over 2N-2 negatives (Eq. 2).

    N = B in one process; across ranks `gathered` = (z1, z2) of the global batch [N, D] each (gathered
    with gradient), this rank's pairs being rows offset … offset+B−1, as SimCLR's cross-replica concat.
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be [B, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    all1, all2 = (z1, z2) if gathered is None else gathered
    b, n = z1.shape[0], all1.shape[0]
    if all1.shape != all2.shape or all1.shape[1] != z1.shape[1] or not 0 <= offset <= n - b:
        raise ValueError(f"gathered {tuple(all1.shape)} cannot hold this batch of {b} at offset {offset}")
    anchors = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    candidates = F.normalize(torch.cat([all1, all2], dim=0), dim=1)
    logits = anchors @ candidates.t() / temperature
    idx = torch.arange(b, device=z1.device) + offset
    rows = torch.arange(2 * b, device=z1.device)
    logits = logits.index_put((rows, torch.cat([idx, idx + n])), torch.tensor(float("-inf"), device=z1.device))
    per_view = F.cross_entropy(logits, torch.cat([idx + n, idx]), reduction="none")
    return 0.5 * (per_view[:b] + per_view[b:])


@in_fp32
def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Negative cosine -cos(p_i, stopgrad z_i) per sample [B], SimSiam form (Eq. 3)."""
    if p.dim() != 2 or p.shape != z.shape:
        raise ValueError(f"p and z must both be [B, D], got {tuple(p.shape)} and {tuple(z.shape)}")
    return -F.cosine_similarity(p, z.detach(), dim=1)


@in_fp32
def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL form of the negative cosine 2 - 2cos(p_i, stopgrad z_i) per sample [B] (Eq. 3)."""
    return 2.0 + 2.0 * negative_cosine(p, z)


def _reduce(t: Tensor, world_size_sum: SumFn) -> Tensor:
    """Sum of t over ranks via world_size_sum (identity when None)."""
    return t if world_size_sum is None else world_size_sum(t)


@torch.no_grad()
def sinkhorn_knopp(
    scores: Tensor, epsilon: float = 0.05, iterations: int = 3, world_size_sum: SumFn = None
) -> Tensor:
    """SwAV codes Q [B, K] (rows sum to 1) from prototype scores [B, K] by Sinkhorn-Knopp (Eq. 4).

    Follows the official ``distributed_sinkhorn``; ``world_size_sum(t)`` must return t summed over
    ranks (e.g. a wrapper around ``dist.all_reduce``). Before exponentiating, the scores are shifted
    by one scalar common to all ranks (the mean over ranks of the local maxima), and the iterations
    run in float64: a common factor cancels in the first normalisation, so the codes are those of
    the official code, without its float32 overflow (scores/epsilon above ~88) or underflow to an
    all-zero prototype (spread of scores/epsilon above ~87; float64 holds ~700). Returned as float32.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, K], got {tuple(scores.shape)}")
    s = scores.detach().double() / epsilon
    ones = torch.ones((), dtype=s.dtype, device=s.device)
    shift = _reduce(s.max().reshape(()), world_size_sum) / _reduce(ones, world_size_sum)
    q = torch.exp(s - shift).t()  # [K, B]
    k = q.shape[0]
    b = _reduce(torch.tensor(float(q.shape[1]), dtype=s.dtype, device=s.device), world_size_sum)
    q /= _reduce(q.sum(), world_size_sum)
    for _ in range(iterations):
        q /= _reduce(q.sum(dim=1, keepdim=True), world_size_sum)  # each prototype: total 1/K
        q /= k
        q /= q.sum(dim=0, keepdim=True)  # each sample: total 1/B
        q /= b
    q *= b
    return q.t().float()


@in_fp32
def swapped_prediction(scores: Sequence[Tensor], codes: Sequence[Tensor], temperature: float = 0.1) -> Tensor:
    """SwAV's swapped prediction per sample [B] over multi-crop (Eq. 4).

    codes[a] are the Sinkhorn-Knopp codes of crop a (the crops used for assignment, the first len(codes));
    each is predicted from every other crop v: mean over a of (1/(V−1)) Σ_{v≠a} −Σ_k q_a,k log p_v,k.
    """
    if len(scores) < 2 or not 1 <= len(codes) <= len(scores):
        raise ValueError(f"need ≥ 2 crops and 1 … {len(scores)} code sets, got {len(scores)} and {len(codes)}")
    log_p = [F.log_softmax(s / temperature, dim=1) for s in scores]
    total = 0.0
    for a, q in enumerate(codes):
        total = total + sum(-(q * log_p[v]).sum(dim=1) for v in range(len(scores)) if v != a) / (len(scores) - 1)
    return total / len(codes)


@in_fp32
def swav_loss(
    scores1: Tensor,
    scores2: Tensor,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    world_size_sum: SumFn = None,
) -> Tensor:
    """SwAV swapped prediction per sample [B] for two crops, codes from Sinkhorn-Knopp without gradient (Eq. 4)."""
    if scores1.dim() != 2 or scores1.shape != scores2.shape:
        raise ValueError(
            f"scores1 and scores2 must both be [B, K], got {tuple(scores1.shape)} and {tuple(scores2.shape)}"
        )
    codes = [sinkhorn_knopp(s, epsilon, iterations, world_size_sum) for s in (scores1, scores2)]
    return swapped_prediction([scores1, scores2], codes, temperature)
