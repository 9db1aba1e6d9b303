"""The token-group rule of `masks.allowed` in interval form, for the backends that skip disallowed keys.

For the layout the segmenter produces (optional [CLS], then the query span, then the document span, padding on one
side) the keys a query row may attend to are at most three intervals: its share of [CLS], of the query span and of
the document span (a band of +-window for document rows). FlexAttention's `mask_mod` then costs a few integer
comparisons instead of a table lookup per score (3.4x faster on CPU), the block-sparsity of a `BlockMask` follows
from interval arithmetic instead of an O(L^2) dense evaluation, and the banded backend reads its band and its
global ([CLS] + query) keys from the same numbers. `tests/test_backends.py` checks that the intervals reproduce
`masks.dense_mask` exactly; layouts that are not contiguous return None and the backends fall back to the rule
itself.

One deliberate difference: padding rows get a dummy interval (the row's own position) instead of "every real key".
Their outputs are ignored downstream; a dense row per padding token would cost O(L) per row and defeat the sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..masks import CLS, DOC, PAD, QUERY, flags_tensor


@dataclass
class RowIntervals:
    """Allowed keys of every query row as three half-open intervals (empty when hi <= lo)."""

    lo: torch.Tensor  # (B, L, 3) int64: starts of the row's [CLS], query and document key intervals
    hi: torch.Tensor  # (B, L, 3) int64: ends (exclusive)
    starts: torch.Tensor  # (B, 4) int64: start of real tokens, [CLS], query span, document span
    ends: torch.Tensor  # (B, 4) int64: the matching ends (exclusive)
    row_group: torch.Tensor  # (B, L) int64 group of each row (PAD = -1)

    @property
    def global_start(self) -> torch.Tensor:
        """(B,) first [CLS]/query position: the global keys (and rows) are [global_start, global_end)."""
        return self.starts[:, 1]

    @property
    def global_end(self) -> torch.Tensor:
        return self.ends[:, 2]


def _span(member: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first, count, contiguous) of the True positions of each row."""
    count = member.sum(1)
    length = member.shape[1]
    first = torch.where(member, pos, length).amin(1)
    last = torch.where(member, pos, -1).amax(1)
    contiguous = (count == 0) | (last - first + 1 == count)
    return torch.where(count > 0, first, 0), count, contiguous


def row_intervals(groups: torch.Tensor, flags: dict[str, bool], window: int | None) -> RowIntervals | None:
    """Intervals for a (B, L) int8 group tensor, or None when the groups are not laid out contiguously
    ([CLS] | query | document | with padding only at the ends)."""
    batch, length = groups.shape
    device = groups.device
    pos = torch.arange(length, device=device)
    g = groups.long()

    real_start, real_count, real_ok = _span(g >= 0, pos)
    spans, ok = [], real_ok
    cursor = real_start
    for group in (CLS, QUERY, DOC):
        first, count, contiguous = _span(g == group, pos)
        start = torch.where(count > 0, first, cursor)
        # Each present group must start where the previous one ended: the groups tile the real tokens in order.
        ok = ok & contiguous & (start == cursor)
        spans.append((start, start + count))
        cursor = start + count
    ok = ok & (cursor == real_start + real_count)
    if not bool(ok.all()):
        return None

    starts = torch.stack([real_start] + [s for s, _ in spans], 1)
    ends = torch.stack([real_start + real_count] + [e for _, e in spans], 1)
    table = flags_tensor(flags, device)  # [row group, key group]
    row_group = g
    allowed = table[row_group.clamp(min=0)]  # (B, L, 3)

    lo = starts[:, None, 1:].expand(batch, length, 3).clone()
    hi = ends[:, None, 1:].expand(batch, length, 3).clone()
    if window is not None:
        doc_row = row_group == DOC
        band_lo = torch.maximum(lo[..., 2], pos - window)
        band_hi = torch.minimum(hi[..., 2], pos + window + 1)
        lo[..., 2] = torch.where(doc_row, band_lo, lo[..., 2])
        hi[..., 2] = torch.where(doc_row, band_hi, hi[..., 2])
    hi = torch.where(allowed, hi, lo)

    pad_row = (row_group == PAD)[..., None]
    own = pos[None, :, None].expand(batch, length, 3)
    dummy_lo = own
    dummy_hi = torch.cat([own[..., :1] + 1, own[..., 1:]], -1)  # interval 0 = [i, i+1), others empty
    lo = torch.where(pad_row, dummy_lo, lo)
    hi = torch.where(pad_row, dummy_hi, hi)
    return RowIntervals(lo=lo, hi=hi, starts=starts, ends=ends, row_group=row_group)


def dense_from_intervals(iv: RowIntervals, kv_length: int | None = None) -> torch.Tensor:
    """(B, 1, L, Lk) bool mask of the intervals (tests, and the dense fallbacks)."""
    length = iv.lo.shape[1] if kv_length is None else kv_length
    kv = torch.arange(length, device=iv.lo.device)[None, None, :, None]
    inside = (kv >= iv.lo[:, :, None, :]) & (kv < iv.hi[:, :, None, :])
    return inside.any(-1)[:, None]
