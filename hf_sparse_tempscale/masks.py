"""The attention rule over token groups: one index-based definition shared by every backend."""

from __future__ import annotations

import torch

from .config import PATTERNS

CLS, QUERY, DOC, PAD = 0, 1, 2, -1
GROUP_NAMES = {"cls": CLS, "query": QUERY, "doc": DOC}


def flags_tensor(flags: dict[str, bool], device=None) -> torch.Tensor:
    """(3, 3) bool table indexed [query-side group, key-side group]; the diagonal is always allowed."""
    table = torch.eye(3, dtype=torch.bool)
    for name, value in flags.items():
        src, dst = name.split("_")
        table[GROUP_NAMES[src], GROUP_NAMES[dst]] = bool(value)
    return table.to(device)


def allowed(groups: torch.Tensor, table: torch.Tensor, window: int | None, b, q, kv) -> torch.Tensor:
    """Whether query token `q` may attend to key `kv` in example `b`.

    Works with broadcastable index tensors (dense masks) and with scalar tensor indices (flex `mask_mod`).
    Pad rows see every real key so that no row is empty (their outputs are ignored downstream).
    """
    gq = groups[b, q].long()
    gk = groups[b, kv].long()
    key_real = gk >= 0
    rule = table[gq.clamp(min=0), gk.clamp(min=0)]
    if window is not None:
        in_band = (q - kv).abs() <= window
        rule = rule & (in_band | (gq != DOC) | (gk != DOC))
    return key_real & (rule | (gq < 0))


def dense_mask(groups: torch.Tensor, flags: dict[str, bool], window: int | None) -> torch.Tensor:
    """(B, 1, L, L) boolean mask, True = may attend."""
    batch, length = groups.shape
    device = groups.device
    b = torch.arange(batch, device=device)[:, None, None]
    idx = torch.arange(length, device=device)
    return allowed(groups, flags_tensor(flags, device), window, b, idx[None, :, None], idx[None, None, :])[:, None]


def window_mask(seq_len: int, window: int, device=None) -> torch.Tensor:
    """(L, L) band |i - j| <= window for a single text without [CLS] (all document tokens)."""
    groups = torch.full((1, seq_len), DOC, dtype=torch.int8, device=device)
    return dense_mask(groups, PATTERNS["full"], window)[0, 0]
