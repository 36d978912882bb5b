"""Per-sample SSL losses (Eq. 2–4), the weighted loss (Eq. 14): hand-worked cases, independent mean references."""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F

from genview.method.losses import (
    byol_loss,
    info_nce,
    negative_cosine,
    nt_xent,
    sinkhorn_knopp,
    swapped_prediction,
    swav_loss,
    weighted_loss,
)

B, D, K = 6, 8, 5
TEMP = 0.2


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


# ---------------------------------------------------------------- references (independent code)


def ref_sinkhorn(out: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """The official SwAV ``distributed_sinkhorn`` for one process, in float64."""
    Q = torch.exp(out.double() / epsilon).t()
    B_ = Q.shape[1]
    K_ = Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K_
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B_
    Q *= B_
    return Q.t()


def ref_swav_mean(s1: torch.Tensor, s2: torch.Tensor, t: float = 0.1) -> torch.Tensor:
    """The official SwAV loss loop for two crops (mean over the batch)."""
    output = [s1, s2]
    loss = 0.0
    for crop_id in range(2):
        with torch.no_grad():
            q = ref_sinkhorn(output[crop_id].detach()).float()
        subloss = 0.0
        for v in [i for i in range(2) if i != crop_id]:
            x = output[v] / t
            subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss += subloss / (2 - 1)
    return loss / 2


def ref_nt_xent_mean(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """NT-Xent written anchor by anchor from the SimCLR paper, averaged over the 2B anchors."""
    n = z1.shape[0]
    z = torch.cat([z1, z2]) / torch.cat([z1, z2]).norm(dim=1, keepdim=True)
    total = 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        num = torch.exp(z[a] @ z[pos] / t)
        den = sum(torch.exp(z[a] @ z[j] / t) for j in range(2 * n) if j != a)
        total = total - torch.log(num / den)
    return total / (2 * n)


# ---------------------------------------------------------------- Eq. 14


def test_weighted_loss_hand_value():
    # (0.5*1 + 1*2 + 1.5*3) / 3 = (0.5 + 2 + 4.5) / 3 = 7/3
    out = weighted_loss(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 1.5]))
    assert out.item() == pytest.approx(7 / 3)


def test_weighted_loss_none_is_plain_mean():
    x = torch.tensor([1.0, 2.0, 6.0])
    assert weighted_loss(x).item() == pytest.approx(3.0)
    assert weighted_loss(x, None).item() == pytest.approx(3.0)


def test_weighted_loss_weights_get_no_gradient():
    per = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = torch.tensor([0.5, 1.0, 1.5], requires_grad=True)
    weighted_loss(per, w).backward()
    assert w.grad is None
    assert torch.allclose(per.grad, torch.tensor([0.5, 1.0, 1.5]) / 3)


def test_weighted_loss_shape_checks():
    with pytest.raises(ValueError):
        weighted_loss(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError):
        weighted_loss(torch.ones(3, 1))
    with pytest.raises(ValueError):
        weighted_loss(torch.ones(0))


# ---------------------------------------------------------------- hand-computed cases


def test_info_nce_hand_case_in_batch():
    # q = k = I2, t = 1 -> logits [[1,0],[0,1]] -> each loss -log(e/(e+1)) = log(1 + e^-1)
    eye = torch.eye(2)
    out = info_nce(eye, eye, temperature=1.0)
    assert out.shape == (2,)
    assert torch.allclose(out, torch.full((2,), math.log(1 + math.exp(-1))))


def test_info_nce_hand_case_queue():
    # q = k = [1,0], queue = [[0,1],[-1,0]], t = 1 -> logits [1, 0, -1]
    # loss = -log(e / (e + 1 + e^-1)) = log(1 + e^-1 + e^-2)
    q = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    out = info_nce(q, q, temperature=1.0, queue=queue)
    assert out.item() == pytest.approx(math.log(1 + math.exp(-1) + math.exp(-2)), rel=1e-6)


def test_info_nce_normalises_inputs():
    eye = torch.eye(2)
    assert torch.allclose(info_nce(3 * eye, 0.5 * eye, 1.0), info_nce(eye, eye, 1.0))


def test_nt_xent_hand_case():
    # z1 = z2 = I2, t = 1. Anchor z1_0 = e1: positive z2_0 (sim 1); negatives z1_1, z2_1 (sim 0);
    # loss = -log(e / (e + 2)) = log(1 + 2 e^-1), the same for every anchor by symmetry.
    eye = torch.eye(2)
    out = nt_xent(eye, eye, temperature=1.0)
    assert torch.allclose(out, torch.full((2,), math.log(1 + 2 * math.exp(-1))))


def test_negative_cosine_and_byol_hand_cases():
    p = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[0.0, 3.0], [5.0, 0.0], [-1.0, -1.0]])  # orthogonal, identical dir, opposite
    assert torch.allclose(negative_cosine(p, z), torch.tensor([0.0, -1.0, 1.0]), atol=1e-6)
    assert torch.allclose(byol_loss(p, z), torch.tensor([2.0, 0.0, 4.0]), atol=1e-6)


# ---------------------------------------------------------------- all weights 1 == the usual mean loss


def test_info_nce_in_batch_matches_cross_entropy_mean():
    q, k = _randn(B, D, seed=1), _randn(B, D, seed=2)
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).t() / TEMP
    expected = F.cross_entropy(logits, torch.arange(B))
    got = weighted_loss(info_nce(q, k, TEMP), torch.ones(B))
    assert torch.allclose(got, expected, atol=1e-6)


def test_info_nce_queue_matches_moco_v2_mean():
    q, k, queue = _randn(B, D, seed=3), _randn(B, D, seed=4), F.normalize(_randn(16, D, seed=5), dim=1)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    l_pos = torch.einsum("nc,nc->n", qn, kn).unsqueeze(-1)
    l_neg = torch.einsum("nc,kc->nk", qn, queue)
    logits = torch.cat([l_pos, l_neg], dim=1) / TEMP
    expected = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
    got = weighted_loss(info_nce(q, k, TEMP, queue=queue), torch.ones(B))
    assert torch.allclose(got, expected, atol=1e-6)


def test_nt_xent_matches_reference_mean():
    z1, z2 = _randn(B, D, seed=6), _randn(B, D, seed=7)
    got = weighted_loss(nt_xent(z1, z2, TEMP), torch.ones(B))
    assert torch.allclose(got, ref_nt_xent_mean(z1, z2, TEMP), atol=1e-5)


def test_negative_cosine_matches_mean():
    p, z = _randn(B, D, seed=8), _randn(B, D, seed=9)
    got = weighted_loss(negative_cosine(p, z), torch.ones(B))
    assert torch.allclose(got, -F.cosine_similarity(p, z.detach()).mean(), atol=1e-6)


def test_byol_loss_matches_mean():
    p, z = _randn(B, D, seed=10), _randn(B, D, seed=11)
    expected = (2 - 2 * (F.normalize(p, dim=-1) * F.normalize(z, dim=-1)).sum(dim=-1)).mean()
    got = weighted_loss(byol_loss(p, z), torch.ones(B))
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(byol_loss(p, z), 2 + 2 * negative_cosine(p, z), atol=1e-6)


def test_swav_matches_official_loop_mean():
    s1, s2 = 0.5 * _randn(B, K, seed=12), 0.5 * _randn(B, K, seed=13)
    got = weighted_loss(swav_loss(s1, s2), torch.ones(B))
    assert torch.allclose(got, ref_swav_mean(s1, s2), atol=1e-5)


# ---------------------------------------------------------------- gradients scale with the weights

LOSSES = {
    "info_nce": lambda a, b: info_nce(a, b, TEMP),
    "info_nce_queue": lambda a, b: info_nce(a, b, TEMP, queue=_randn(10, D, seed=20)),
    "nt_xent": lambda a, b: nt_xent(a, b, TEMP),
    "negative_cosine": negative_cosine,
    "byol": byol_loss,
    "swav": lambda a, b: swav_loss(a[:, :K], b[:, :K]),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_wrt_per_sample_is_w_over_b(name):
    a = _randn(B, D, seed=21).requires_grad_(True)
    b = _randn(B, D, seed=22).requires_grad_(True)
    per = LOSSES[name](a, b)
    assert per.shape == (B,)
    w = torch.ones(B)
    w[1] = 3.0
    (g,) = torch.autograd.grad(weighted_loss(per, w), per, retain_graph=True)
    assert torch.allclose(g, w / B)
    w_norm = w * B / w.sum()  # normalised to mean 1, as quality_weights gives
    (g,) = torch.autograd.grad(weighted_loss(per, w_norm), per)
    assert torch.allclose(g, w_norm / B)


@pytest.mark.parametrize("fn", [negative_cosine, byol_loss], ids=["negative_cosine", "byol"])
def test_cosine_losses_gradient_on_p_scales_with_weight(fn):
    # Rows 0 and 1 have identical inputs; samples do not interact, so grad p_1 = 3 * grad p_0.
    p = _randn(B, D, seed=30)
    z = _randn(B, D, seed=31)
    p[1], z[1] = p[0], z[0]
    p.requires_grad_(True)
    z.requires_grad_(True)
    w = torch.tensor([1.0, 3.0, 1.0, 1.0, 1.0, 1.0])
    weighted_loss(fn(p, z), w).backward()
    assert p.grad[0].abs().sum() > 0
    assert torch.allclose(p.grad[1], 3 * p.grad[0], atol=1e-7)
    assert z.grad is None  # stop-gradient on the target


# ---------------------------------------------------------------- Sinkhorn-Knopp


def test_sinkhorn_rows_and_columns():
    scores = F.normalize(_randn(8, 4, seed=40), dim=1)  # cosine-like scores in [-1, 1]
    q = sinkhorn_knopp(scores, iterations=50)
    assert q.shape == (8, 4)
    # each sample: a distribution over prototypes (exact, the last step normalises samples)
    assert torch.allclose(q.sum(dim=1), torch.ones(8), atol=1e-5)
    # each prototype: equal share B/K = 2 after enough iterations
    assert torch.allclose(q.sum(dim=0), torch.full((4,), 2.0), atol=1e-3)
    assert (q >= 0).all()


def test_sinkhorn_matches_official_reference():
    scores = F.normalize(_randn(B, K, seed=41), dim=1)
    for it in (1, 3, 10):
        expected = ref_sinkhorn(scores, iterations=it).float()
        assert torch.allclose(sinkhorn_knopp(scores, iterations=it), expected, atol=1e-5)


def test_sinkhorn_deterministic_and_no_grad():
    scores = _randn(B, K, seed=42).requires_grad_(True)
    q1 = sinkhorn_knopp(scores)
    q2 = sinkhorn_knopp(scores)
    assert torch.equal(q1, q2)
    assert not q1.requires_grad


def test_sinkhorn_large_scores_do_not_overflow():
    # scores/eps in [-200, 200]: exp overflows float32 at the top and underflows it to 0 at the bottom.
    scores = 10 * F.normalize(_randn(B, K, seed=43), dim=1)
    q = sinkhorn_knopp(scores)
    assert torch.isfinite(q).all()
    assert torch.allclose(q, ref_sinkhorn(scores).float(), atol=1e-5)
    # Shifted by +50: scores/eps up to 1200 overflow even float64 without the common shift. The
    # official algorithm is invariant to a global shift (it cancels in the first normalisation).
    q_shifted = sinkhorn_knopp(scores + 50)
    assert torch.isfinite(q_shifted).all()
    assert torch.allclose(q_shifted, q, atol=1e-5)


class _ThreadAllReduce:
    """A sum over `n` threads standing in for ranks: each call blocks until every rank gives its part."""

    def __init__(self, n: int):
        self.n = n
        self.parts: list = []
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(n)
        self.result = None

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.parts.append(t.clone())
        if self.barrier.wait() == 0:
            self.result = torch.stack(self.parts).sum(dim=0)
            self.parts = []
        self.barrier.wait()
        out = self.result.clone()
        self.barrier.wait()
        return out


def test_sinkhorn_distributed_equals_whole_batch():
    # Two "ranks" each holding half the batch give the codes of the whole batch on one process.
    scores = F.normalize(_randn(8, K, seed=44), dim=1) * 3
    whole = sinkhorn_knopp(scores)
    reducer = _ThreadAllReduce(2)
    halves = [scores[:4], scores[4:]]
    results = [None, None]

    def run(r):
        results[r] = sinkhorn_knopp(halves[r], world_size_sum=reducer)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    assert torch.allclose(torch.cat(results), whole, atol=1e-5)


# ---------------------------------------------------------------- SwAV


def test_swav_peaked_identical_scores_small_loss():
    # Sample i scores 1 on prototype i mod K, 0 elsewhere: codes ~ one-hot on that prototype and
    # softmax(s/0.1) puts e^10 / (e^10 + K - 1) on it, so L_i ~ (K-1) e^-10 ~ 2e-4.
    scores = F.one_hot(torch.arange(2 * K) % K, K).float()
    peaked = swav_loss(scores, scores.clone())
    assert peaked.shape == (2 * K,)
    assert (peaked < 1e-2).all()
    flat = swav_loss(_randn(2 * K, K, seed=50) * 0.1, _randn(2 * K, K, seed=51) * 0.1)
    assert flat.mean() > 10 * peaked.mean()


def test_swav_gradient_flows_to_scores_not_codes():
    s1 = F.normalize(_randn(B, K, seed=52), dim=1).requires_grad_(True)
    s2 = F.normalize(_randn(B, K, seed=53), dim=1).requires_grad_(True)
    t = 0.1
    weighted_loss(swav_loss(s1, s2, temperature=t)).backward()
    assert s1.grad is not None and s1.grad.abs().sum() > 0
    q1, q2 = sinkhorn_knopp(s1), sinkhorn_knopp(s2)
    # With the codes constant: d/ds1 of mean_i 0.5 * -sum_k q2 log softmax(s1/t)
    #   = 0.5 (softmax(s1/t) - q2) / (t B)
    expected1 = 0.5 * (torch.softmax(s1.detach() / t, dim=1) - q2) / (t * B)
    expected2 = 0.5 * (torch.softmax(s2.detach() / t, dim=1) - q1) / (t * B)
    assert torch.allclose(s1.grad, expected1, atol=1e-6)
    assert torch.allclose(s2.grad, expected2, atol=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: info_nce(torch.ones(2, 3), torch.ones(3, 3), 0.1),
        lambda: info_nce(torch.ones(2, 3), torch.ones(2, 3), 0.1, queue=torch.ones(4, 2)),
        lambda: nt_xent(torch.ones(2, 3), torch.ones(2, 4), 0.1),
        lambda: negative_cosine(torch.ones(2, 3), torch.ones(3)),
        lambda: sinkhorn_knopp(torch.ones(3)),
        lambda: swav_loss(torch.ones(2, 3), torch.ones(2, 4)),
    ],
    ids=["info_nce", "queue", "nt_xent", "negative_cosine", "sinkhorn", "swav"],
)
def test_shape_errors(call):
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------- global negatives and multi-crop


def test_info_nce_with_gathered_keys_equals_the_whole_batch():
    # A "rank" holding rows 3..5 of the queries, with the keys of all 6, gets those rows' losses of one process.
    q, k = _randn(B, D, seed=60), _randn(B, D, seed=61)
    whole = info_nce(q, k, TEMP)
    part = info_nce(q[3:], k[3:], TEMP, all_keys=k, offset=3)
    assert torch.allclose(part, whole[3:], atol=1e-6)
    with pytest.raises(ValueError):
        info_nce(q[3:], k[3:], TEMP, all_keys=k, offset=4)


def test_nt_xent_with_gathered_embeddings_equals_the_whole_batch():
    z1, z2 = _randn(B, D, seed=62), _randn(B, D, seed=63)
    whole = nt_xent(z1, z2, TEMP)
    for offset in (0, 2, 4):
        part = nt_xent(z1[offset:offset + 2], z2[offset:offset + 2], TEMP, gathered=(z1, z2), offset=offset)
        assert torch.allclose(part, whole[offset:offset + 2], atol=1e-6)


def test_swapped_prediction_three_crops_by_hand():
    # codes of crops 0 and 1; each predicted from the two other crops, averaged: ½[(H(q0,p1)+H(q0,p2))/2 + (H(q1,p0)+H(q1,p2))/2]
    s = [_randn(B, K, seed=70 + i) for i in range(3)]
    q = [torch.softmax(_randn(B, K, seed=80 + i), dim=1) for i in range(2)]
    t = 0.1
    h = lambda a, v: -(q[a] * F.log_softmax(s[v] / t, dim=1)).sum(dim=1)  # noqa: E731
    expected = 0.5 * ((h(0, 1) + h(0, 2)) / 2 + (h(1, 0) + h(1, 2)) / 2)
    assert torch.allclose(swapped_prediction(s, q, t), expected, atol=1e-6)
