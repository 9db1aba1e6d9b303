"""FlexAttention backend: a block-sparse `BlockMask` built once per forward from the token-group rule.

GPU: training and inference (compiled Triton kernels). CPU: inference with the compiled C++ kernel; a CPU training
step, attention dropout (FlexAttention has none) and output_attentions fall back to the banded / dense paths, with a
one-time warning. Temperature is already folded into `scaling` by the core; T5's relative position bias (already
divided by tau) becomes a `score_mod`.

CPU notes (torch 2.13): the C++ flex kernel only compiles with static shapes (dynamic=True fails to build), so each
new (batch, length) compiles once (~15-25 s); lengths are padded up to a multiple of the block size to limit that.
The kernel evaluates `mask_mod` on every score of a partial block, so the rule is evaluated in its interval form
(`intervals.py`, identical to `masks.allowed`) and the block size follows the window (small blocks for small windows).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from ..masks import allowed, flags_tensor
from . import register_backend
from .intervals import RowIntervals, row_intervals

try:  # FlexAttention exists from torch 2.5 on
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # pragma: no cover - old torch
    BlockMask = None
    flex_attention = None

_WARNED: set[str] = set()
_COMPILED: dict[str, Any] = {}
# Whether to call the compiled kernel (tests switch this off to check the masks with the unfused reference).
COMPILE = True


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, stacklevel=3)


def flex_available() -> bool:
    return flex_attention is not None


def block_size_for(window: int | None, device) -> int:
    """Sparse block size: 128 on GPU (the Triton kernels' tile); on CPU the smallest power of two >= 2w+1, clamped
    to [32, 128], because a partial block evaluates the mask on every score."""
    if torch.device(device).type != "cpu":
        return 128
    if window is None:
        return 128
    size = 32
    while size < 2 * window + 1 and size < 128:
        size *= 2
    return size


def _padded_length(length: int, block: int, device) -> int:
    """CPU compiles per shape: pad to the block size so nearby lengths share one compiled kernel."""
    if torch.device(device).type != "cpu":
        return length
    return -(-length // block) * block


def _interval_block_mask(iv: RowIntervals, length: int, padded: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) int8 (B, 1, nq, nk) block tables from the row intervals: a block is 'full' when every row of
    the query block covers the whole key block, 'partial' when some row reaches into it."""
    batch = iv.lo.shape[0]
    device = iv.lo.device
    n_blocks = padded // block
    lo = torch.nn.functional.pad(iv.lo, (0, 0, 0, padded - length))  # rows past the end: empty intervals
    hi = torch.nn.functional.pad(iv.hi, (0, 0, 0, padded - length))
    k0 = torch.arange(n_blocks, device=device) * block  # key block starts
    k1 = torch.clamp(k0 + block, max=length)  # keys past the end are never allowed
    # overlap of each row's interval t with each key block: (B, Lp, nk, 3)
    end = torch.minimum(hi[:, :, None, :], k1[None, None, :, None])
    ov = (end - torch.maximum(lo[:, :, None, :], k0[None, None, :, None])).clamp(min=0)
    covered = ov.sum(-1)  # the three intervals are disjoint
    touched = (covered > 0).view(batch, n_blocks, block, n_blocks).any(2)
    full_rows = covered == block  # the whole key block is allowed for this row
    row_real = torch.arange(padded, device=device) < length
    full = (full_rows & row_real[None, :, None]).view(batch, n_blocks, block, n_blocks).all(2)
    full = full & (k0 + block <= length)[None, None, :]
    partial = touched & ~full
    return partial[:, None].to(torch.int8), full[:, None].to(torch.int8)


def _dense_block_mask(dense: torch.Tensor, padded: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) block tables from a dense (B, 1, L, L) bool mask (irregular layouts)."""
    length = dense.shape[-1]
    dense = torch.nn.functional.pad(dense, (0, padded - length, 0, padded - length))
    batch, n = dense.shape[0], padded // block
    sums = dense.view(batch, 1, n, block, n, block).sum((3, 5))
    full = sums == block * block
    return ((sums > 0) & ~full).to(torch.int8), full.to(torch.int8)


def _ordered(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense (B, H, nq, nk) 0/1 block table -> (num_blocks, indices), selected blocks first."""
    table = table.to(torch.int32)
    num = table.sum(-1).to(torch.int32)
    indices = torch.argsort(table, dim=-1, descending=True, stable=True).to(torch.int32)
    return num.contiguous(), indices.contiguous()


def build_block_mask(groups: torch.Tensor | None, flags: dict[str, bool], window: int | None,
                     padding: torch.Tensor | None, batch_size: int, length: int, device) -> "FlexMask":
    """The BlockMask of one forward (plus what the fallbacks need)."""
    device = torch.device(device)
    block = block_size_for(window if groups is not None else None, device)
    padded = _padded_length(length, block, device)
    if groups is None:  # not sparse: padding only (all keys real when no padding given)
        real = padding if padding is not None else torch.ones(batch_size, length, dtype=torch.bool, device=device)
        # One "document" group without a window is exactly "every real key".
        from ..masks import DOC, PAD

        groups_eff = torch.where(real, DOC, PAD).to(torch.int8)
        flags_eff, window_eff = {}, None
    else:
        groups_eff, flags_eff, window_eff = groups, flags, window
    iv = row_intervals(groups_eff, flags_eff, window_eff)
    if iv is not None:
        lo = torch.nn.functional.pad(iv.lo, (0, 0, 0, padded - length)).to(torch.int32)
        hi = torch.nn.functional.pad(iv.hi, (0, 0, 0, padded - length)).to(torch.int32)
        # separate contiguous tensors: the CPU kernel cannot take strided views of one buffer as mask inputs
        lo0, lo1, lo2 = (t.contiguous() for t in lo.unbind(-1))
        hi0, hi1, hi2 = (t.contiguous() for t in hi.unbind(-1))

        def mask_mod(b, h, q, kv):
            return (
                ((kv >= lo0[b, q]) & (kv < hi0[b, q]))
                | ((kv >= lo1[b, q]) & (kv < hi1[b, q]))
                | ((kv >= lo2[b, q]) & (kv < hi2[b, q]))
            )

        partial, full = _interval_block_mask(iv, length, padded, block)
    else:  # irregular layout: the rule itself
        table = flags_tensor(flags_eff, device)
        g_pad = torch.nn.functional.pad(groups_eff, (0, padded - length), value=-1)

        def mask_mod(b, h, q, kv):
            return allowed(g_pad, table, window_eff, b, q, kv) | ((q >= length) & (kv == q))

        from ..masks import dense_mask

        partial, full = _dense_block_mask(dense_mask(groups_eff, flags_eff, window_eff), padded, block)
    num, idx = _ordered(partial)
    full_num, full_idx = _ordered(full)
    bm = BlockMask.from_kv_blocks(
        num, idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(padded, padded)
    )
    return FlexMask(bm, groups, flags, window, padding, length, padded, iv)


@dataclass
class FlexMask:
    block_mask: Any
    groups: torch.Tensor | None
    flags: dict[str, bool]
    window: int | None
    padding: torch.Tensor | None
    length: int
    padded: int
    intervals: RowIntervals | None
    _fallback: dict[str, Any] = field(default_factory=dict)

    def fallback(self, name: str):
        """The mask of another backend for the same forward (built lazily, once)."""
        if name not in self._fallback:
            from . import get_backend

            self._fallback[name] = get_backend(name).build_mask(
                groups=self.groups, flags=self.flags, window=self.window, padding=self.padding,
                batch_size=self.block_mask.shape[0], q_length=self.length, kv_length=self.length,
                device=self.block_mask.kv_indices.device,
            )
        return self._fallback[name]


def _kernel(device: torch.device):
    """flex_attention compiled for the device (static shapes on CPU: the dynamic C++ kernel does not build)."""
    key = device.type
    if key not in _COMPILED:
        try:
            _COMPILED[key] = torch.compile(flex_attention, dynamic=False if key == "cpu" else None)
        except Exception as err:  # pragma: no cover - no compiler available
            _warn_once("compile", f"flex: torch.compile unavailable ({err}); using the unfused reference (slow)")
            _COMPILED[key] = flex_attention
    return _COMPILED[key]


class FlexBackend:
    name = "flex"

    def build_mask(self, *, groups, flags, window, padding, batch_size, q_length, kv_length, device):
        if not flex_available():
            raise RuntimeError("backend='flex' needs torch >= 2.5 (torch.nn.attention.flex_attention)")
        if q_length != kv_length:
            raise ValueError("backend='flex' handles encoder self-attention only (q_length == kv_length)")
        return build_block_mask(groups, flags, window, padding, batch_size, kv_length, device)

    def attend(self, module, query, key, value, mask: FlexMask, *, scaling, dropout, position_bias, need_weights):
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        grad = grad or (position_bias is not None and position_bias.requires_grad and torch.is_grad_enabled())
        reason = None
        if need_weights:
            reason = "eager"
        elif dropout > 0:
            _warn_once("dropout", "flex: FlexAttention has no attention dropout; this step uses the banded backend")
            reason = "banded"
        elif grad and query.device.type == "cpu":
            _warn_once("cpu-grad", "flex: no compiled CPU backward; CPU training steps use the banded backend")
            reason = "banded"
        if reason is not None:
            from . import get_backend

            return get_backend(reason).attend(
                module, query, key, value, mask.fallback(reason), scaling=scaling, dropout=dropout,
                position_bias=position_bias, need_weights=need_weights,
            )

        length, padded = mask.length, mask.padded
        if padded != length:
            pad = (0, 0, 0, padded - length)
            query, key, value = (torch.nn.functional.pad(t, pad) for t in (query, key, value))
        score_mod = None
        if position_bias is not None:
            bias = position_bias
            last = length - 1
            per_example = bias.shape[0] != 1

            def score_mod(score, b, h, q, kv):
                # clamp: rows/keys in the padded tail are masked anyway
                return score + bias[b if per_example else 0, h, torch.clamp(q, max=last), torch.clamp(kv, max=last)]

        fn = _kernel(query.device) if COMPILE else flex_attention
        out = fn(
            query, key, value, score_mod=score_mod, block_mask=mask.block_mask, scale=scaling,
            enable_gqa=query.shape[1] != key.shape[1],
        )
        return out[:, :, :length].transpose(1, 2).contiguous(), None


register_backend(FlexBackend())
