"""SCB metrics: support recall of learned attention and total-variation distance of predictions."""

from __future__ import annotations

import torch


def support_recall(attention: torch.Tensor, support: torch.Tensor, weights: torch.Tensor | None = None) -> float:
    """Mean over query tokens k of |top_{|S_k|}(|attention_k|) & S_k| / |S_k|, with S_k = supp(q^(k)).

    Ties at the cut-off are broken uniformly at random *in expectation* (exact expected recall), so a flat attention
    row scores the chance level |S_k| / T instead of whatever order topk happens to return. `weights` (N,) weights
    the query tokens (e.g. mu); default uniform. Rows with an empty support are skipped.
    """
    scores = attention.detach().abs().to(torch.float64)
    support = support.to(torch.bool)
    if scores.shape != support.shape or scores.dim() != 2:
        raise ValueError(f"attention and support must both be (N, T), got {tuple(scores.shape)}, {tuple(support.shape)}")
    size = support.sum(1)
    keep = size > 0
    if not keep.any():
        raise ValueError("every support is empty")
    scores, support, size = scores[keep], support[keep], size[keep]
    cutoff = scores.sort(1, descending=True).values.gather(1, (size - 1)[:, None])  # |S_k|-th largest value
    above = scores > cutoff
    tied = scores == cutoff
    hits_above = (above & support).sum(1).double()
    free_slots = size.double() - above.sum(1).double()  # slots left for tied entries
    hits_tied = free_slots * (tied & support).sum(1).double() / tied.sum(1).double()
    recall = (hits_above + hits_tied) / size.double()
    if weights is None:
        return recall.mean().item()
    w = weights.detach().to(torch.float64)[keep]
    return (recall * w).sum().item() / w.sum().item()


def off_support_mass(attention: torch.Tensor, support: torch.Tensor) -> float:
    """Mean over query tokens of sum_{t not in S_k} |a_kt| / sum_t |a_kt|: how much attention leaks off the support
    (0 = perfectly sparse; top-k recall cannot see this, the l1 prox is meant to drive it down)."""
    scores = attention.detach().abs().to(torch.float64)
    if scores.shape != support.shape:
        raise ValueError(f"shapes differ: {tuple(scores.shape)} vs {tuple(support.shape)}")
    total = scores.sum(1)
    off = (scores * ~support.to(torch.bool)).sum(1)
    keep = total > 0
    return (off[keep] / total[keep]).mean().item() if keep.any() else 1.0


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over rows of TV(p_i, q_i) = 0.5 * sum_j |p_ij - q_ij|."""
    if p.shape != q.shape:
        raise ValueError(f"shapes differ: {tuple(p.shape)} vs {tuple(q.shape)}")
    return (0.5 * (p.detach().double() - q.detach().double()).abs().sum(-1)).mean().item()
