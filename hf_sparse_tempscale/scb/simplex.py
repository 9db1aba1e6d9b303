"""Euclidean projection onto the probability simplex (sort-based; Held et al. 1974, Duchi et al. 2008)."""

from __future__ import annotations

import torch


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Project each row of `v` (..., n) onto {p : p >= 0, sum p = 1} in Euclidean distance."""
    n = v.shape[-1]
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(-1) - 1
    ks = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
    # rho = largest k with u_k - (css_k / k) > 0; it always exists (k = 1 satisfies it).
    cond = (u - css / ks) > 0
    rho = n - 1 - cond.flip(-1).to(torch.int64).argmax(-1, keepdim=True)
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0)
