"""Banded backend: O(n*w) memory and time for windowed document attention, with autograd, on CPU and GPU.

Every row of a windowed pattern attends to at most: the global keys ([CLS] + query span, a handful of tokens) and a
band of +-w document keys. So the rows are cut into blocks of `c` consecutive positions; block n attends to the G
global keys plus the c + 2w keys around it. The band and the global keys of a row sit side by side in one row of
scores, so one softmax normalises over all of its allowed keys (the groups share one normaliser, exactly as in the
dense rule). The few global rows ([CLS], query tokens), which may see the whole sequence, are computed densely
(G x L) and written back.

Two kernels for the blocks, chosen by window (measured in benchmarks/attention_kernels.py):
- w <= 8 ("small"): a custom autograd Function on batched matmuls in a head-major layout where the windows of all
  blocks are one overlapping strided view (no copies of K/V per block); its backward is written out (dQ, dK, dV,
  and the bias gradient for T5), saving only the probabilities.
- w > 8 ("flash"): the windows are materialised once and all blocks go through one fused
  `scaled_dot_product_attention` call (CPU flash kernel: no score matrix), backward by autograd.

Memory is O(L * (G + c + 2w)) instead of O(L^2). Dropout (training) is applied to the same probabilities. Without a
window, or for layouts that are not contiguous, the backend falls back to the dense reference (the `sdpa` backend
with the `masks.dense_mask` mask). Padding rows attend to themselves only (their outputs are ignored), see
`intervals.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..masks import DOC, dense_mask
from . import get_backend, register_backend
from .intervals import RowIntervals, row_intervals


SMALL_WINDOW = 8  # largest window for the matmul kernel; larger windows use the fused sdpa kernel


def block_size_for(window: int) -> int:
    """Rows per block. Small kernel: >= 4w, at least 16 (scores per row G + c + 2w stay few). Flash kernel: at least
    64 (fewer, larger fused problems) and >= 2w, so the band overhead (c+2w)/(2w+1) stays below 2."""
    size = 16 if window <= SMALL_WINDOW else 64
    while size < (4 if window <= SMALL_WINDOW else 2) * window:
        size *= 2
    return size


@dataclass
class BandedMask:
    """Everything the layers of one forward share (built once per forward, tensors cached per dtype)."""

    mode: str  # "band" or "dense"
    groups: torch.Tensor | None
    flags: dict[str, bool]
    window: int | None
    padding: torch.Tensor | None
    length: int
    kernel: str = ""  # "small" or "flash"
    block: int = 0
    n_blocks: int = 0  # blocks covering the sequence
    n_extra: int = 0  # trailing dummy blocks (small kernel: keeps the window stride uniform across heads)
    n_global: int = 0  # G: width of the global ([CLS] + query) key span, max over the batch
    band_allowed: torch.Tensor | None = None  # (B, nb + extra, c, G + c + 2w) bool
    global_index: torch.Tensor | None = None  # (B, G) positions of the global rows/keys (clamped)
    global_valid: torch.Tensor | None = None  # (B, G) bool
    global_allowed: torch.Tensor | None = None  # (B, G, L) bool
    is_global_row: torch.Tensor | None = None  # (B, L) bool
    key_index: torch.Tensor | None = None  # (B, rows, G + W) flat (row * L + key) index, for position biases
    _dense: torch.Tensor | None = None
    _cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def dense(self) -> torch.Tensor | None:
        """The reference mask (what the sdpa backend would use), built on first need."""
        if self._dense is None and self.groups is not None:
            self._dense = dense_mask(self.groups, self.flags, self.window)
        if self._dense is None and self.padding is not None and not bool(self.padding.all()):
            self._dense = self.padding[:, None, None, :]
        return self._dense

    def additive(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """0 / -inf float version of a bool mask, built once per dtype."""
        key = (name, dtype)
        if key not in self._cache:
            allowed = getattr(self, name)
            bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
            self._cache[key] = bias.masked_fill_(~allowed, float("-inf"))
        return self._cache[key]


def build_banded_mask(groups, flags, window, padding, length) -> BandedMask:
    iv = row_intervals(groups, flags, window) if groups is not None else None
    if iv is None or window is None:
        return BandedMask("dense", groups, flags, window, padding, length)
    c = block_size_for(window)
    width = c + 2 * window
    g_count = iv.global_end - iv.global_start  # (B,)
    n_global = int(g_count.max()) if g_count.numel() else 0
    if n_global + width >= length:  # nothing to save: every row would see (almost) every key
        return BandedMask("dense", groups, flags, window, padding, length)
    kernel = "small" if window <= SMALL_WINDOW else "flash"
    extra = -(-2 * window // c) if kernel == "small" else 0
    return _band_layout(iv, groups, flags, window, padding, length, c, n_global, kernel, extra)


def _band_layout(iv: RowIntervals, groups, flags, window, padding, length, c, n_global, kernel, extra) -> BandedMask:
    batch = groups.shape[0]
    device = groups.device
    w, width = window, c + 2 * window
    nb = -(-length // c)
    lp = (nb + extra) * c
    pad_rows = lp - length
    rows = torch.arange(lp, device=device)
    lo = F.pad(iv.lo, (0, 0, 0, pad_rows))  # rows past the end: empty intervals
    hi = F.pad(iv.hi, (0, 0, 0, pad_rows))
    doc_row = F.pad(iv.row_group == DOC, (0, pad_rows))  # (B, Lp)

    # band slot t of row i holds key j = (i // c) * c - w + t
    t = torch.arange(width, device=device)
    j = (rows // c * c - w)[:, None] + t[None, :]  # (Lp, W)
    in_band = (j[None] >= lo[..., 2:3]) & (j[None] < hi[..., 2:3])
    own = (t[None, :] == (rows % c + w)[:, None])[None]  # dummy for non-document rows: the row's own key
    band_ok = torch.where(doc_row[..., None], in_band, own)

    g = torch.arange(n_global, device=device)
    g_start = iv.global_start
    g_count = iv.global_end - g_start
    g_valid = g[None, :] < g_count[:, None]  # (B, G)
    jg = g_start[:, None] + g[None, :]  # (B, G)
    in_global = torch.zeros(batch, lp, n_global, dtype=torch.bool, device=device)
    for k in (0, 1):  # a document row's [CLS] and query intervals
        in_global |= (jg[:, None, :] >= lo[..., k : k + 1]) & (jg[:, None, :] < hi[..., k : k + 1])
    glob_ok = in_global & g_valid[:, None, :] & doc_row[..., None]
    band_allowed = torch.cat([glob_ok, band_ok], -1).view(batch, nb + extra, c, n_global + width)

    g_index = torch.where(g_valid, jg, 0).clamp(max=length - 1)
    keys = torch.arange(length, device=device)
    row_lo = iv.lo.gather(1, g_index[..., None].expand(-1, -1, 3))  # (B, G, 3)
    row_hi = iv.hi.gather(1, g_index[..., None].expand(-1, -1, 3))
    k = keys[None, None, :, None]
    global_allowed = ((k >= row_lo[:, :, None]) & (k < row_hi[:, :, None])).any(-1)
    global_allowed = torch.where(g_valid[..., None], global_allowed, keys[None, None, :] == 0)  # dummy rows: key 0
    is_global_row = (keys[None] >= g_start[:, None]) & (keys[None] < iv.global_end[:, None])

    # flat (row * L + key) index of every score slot, for gathering position biases (T5)
    key_of_slot = torch.cat([jg[:, None, :].expand(batch, lp, n_global), j[None].expand(batch, lp, width)], -1)
    key_index = rows.clamp(max=length - 1)[None, :, None] * length + key_of_slot.clamp(0, length - 1)

    return BandedMask(
        "band", groups, flags, window, padding, length, kernel=kernel, block=c, n_blocks=nb, n_extra=extra,
        n_global=n_global,
        band_allowed=band_allowed, global_index=g_index, global_valid=g_valid, global_allowed=global_allowed,
        is_global_row=is_global_row, key_index=key_index,
    )


def _gather_bias(position_bias: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """position_bias (1 or B, H, L, L) at flat (row * L + key) indices (B, *shape) -> (B, H, *shape)."""
    batch, heads = index.shape[0], position_bias.shape[1]
    flat = position_bias.reshape(position_bias.shape[0], heads, -1).expand(batch, heads, -1)
    out = flat.gather(2, index.reshape(batch, 1, -1).expand(batch, heads, -1))
    return out.view(batch, heads, *index.shape[1:])


class _Windows(torch.autograd.Function):
    """(B, L, H, D) keys or values -> (B * nb, G + c + 2w, H, D): the global keys, then the window of each block
    (block n covers keys n*c - w ... n*c + c + w - 1; slots outside 0..L-1 are zero and masked). A custom backward
    adds the overlapping window gradients back with a few strided adds (autograd's unfold/cat backward is ~3x
    slower: it materialises an index scatter)."""

    @staticmethod
    def forward(ctx, seq, global_index, block, window, n_blocks):
        batch, length, heads, dim = seq.shape
        c, w, nb = block, window, n_blocks
        n_global = global_index.shape[1]
        width = c + 2 * w
        padded = F.pad(seq, (0, 0, 0, 0, w, nb * c - length + w))  # (B, Lp + 2w, H, D)
        out = seq.new_empty(batch, nb, n_global + width, heads, dim)
        if n_global:
            gi = global_index[:, :, None, None].expand(-1, -1, heads, dim)
            out[:, :, :n_global] = seq.gather(1, gi)[:, None]
        out[:, :, n_global:] = padded.unfold(1, width, c).permute(0, 1, 4, 2, 3)
        ctx.save_for_backward(global_index)
        ctx.shape, ctx.block, ctx.window = seq.shape, c, w
        return out.view(batch * nb, n_global + width, heads, dim)

    @staticmethod
    def backward(ctx, grad):
        (global_index,) = ctx.saved_tensors
        batch, length, heads, dim = ctx.shape
        c, w = ctx.block, ctx.window
        n_global = global_index.shape[1]
        grad = grad.reshape(batch, -1, grad.shape[1], heads, dim)
        nb = grad.shape[1]
        lp = nb * c
        band = grad[:, :, n_global:]
        acc = grad.new_zeros(batch, lp + 2 * w + c, heads, dim)  # + c: room for the last window's tail chunks
        acc[:, :lp] += band[:, :, :c].reshape(batch, lp, heads, dim)  # first c slots of each window tile exactly
        for start in range(c, c + 2 * w, c):  # the 2w overlapping slots, in chunks of at most c
            size = min(c, c + 2 * w - start)
            acc[:, start : start + lp].view(batch, nb, c, heads, dim)[:, :, :size] += band[:, :, start : start + size]
        grad_seq = acc[:, w : w + length]
        if n_global:
            gi = global_index[:, :, None, None].expand(-1, -1, heads, dim)
            grad_seq = grad_seq.scatter_add(1, gi, grad[:, :, :n_global].sum(1))
        return grad_seq, None, None, None, None


def _windows(seq: torch.Tensor, mask: BandedMask) -> torch.Tensor:
    return _Windows.apply(seq, mask.global_index, mask.block, mask.window, mask.n_blocks)


class _SmallBand(torch.autograd.Function):
    """Band + global-key attention of all rows for small windows, as batched matmuls.

    Layout: q, k and v are copied once into head-major buffers of `tot = (nb + extra) * c` rows per (batch, head),
    keys/values shifted by w, so the window of every block of every head is the same strided view
    (rows n*c ... n*c + c + 2w - 1 of one flat buffer): no per-block copies. Returns (B, L, H, D).
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, global_index, scale, block, window, dropout, workspace):
        batch, heads, length, dim = q.shape
        c, w = block, window
        n_global = global_index.shape[1]
        width = c + 2 * w
        n_tot = bias.shape[2]
        tot = n_tot * c
        nbb = batch * heads * n_tot

        def buffer(name, *shape):
            """Zeroed on creation; in inference the layers of one forward reuse it (same shapes): the padding
            stays zero and no new memory is touched."""
            if workspace is None:
                return q.new_zeros(shape)
            t = workspace.get(name)
            if t is None or t.shape != shape or t.dtype != q.dtype:
                t = workspace[name] = q.new_zeros(shape)
            return t

        qh = buffer("q", batch, heads, tot, dim)
        qh[:, :, :length] = q
        kbuf = buffer("k", batch * heads * tot + width, dim)  # + width: the last window reads past its head
        vbuf = buffer("v", batch * heads * tot + width, dim)
        kbuf[: batch * heads * tot].view(batch, heads, tot, dim)[:, :, w : w + length] = k
        vbuf[: batch * heads * tot].view(batch, heads, tot, dim)[:, :, w : w + length] = v
        kw = kbuf.as_strided((nbb, width, dim), (c * dim, dim, 1))
        vw = vbuf.as_strided((nbb, width, dim), (c * dim, dim, 1))
        gi = global_index[:, None, :, None].expand(batch, heads, n_global, dim)
        kg, vg = k.gather(2, gi), v.gather(2, gi)  # (B, H, G, D)
        qb = qh.view(nbb, c, dim)

        if workspace is None:
            parts = [torch.matmul(qh, kg.transpose(-1, -2)).view(nbb, c, n_global), torch.bmm(qb, kw.transpose(1, 2))]
            scores = torch.cat(parts, -1)
        else:
            s_g = torch.matmul(qh, kg.transpose(-1, -2), out=buffer("sg", batch, heads, tot, n_global))
            parts = [s_g.view(nbb, c, n_global), torch.bmm(qb, kw.transpose(1, 2), out=buffer("sb", nbb, c, width))]
            scores = torch.cat(parts, -1, out=buffer("s", nbb, c, n_global + width))
        view = scores.view(batch, heads, n_tot, c, -1)
        torch.add(bias, view, alpha=scale, out=view)  # scale and mask in one pass
        if scores.dtype in (torch.float16, torch.bfloat16):  # half precision: normalise in float32 like sdpa
            probs = torch.softmax(scores, -1, dtype=torch.float32).to(scores.dtype)
        elif workspace is None:
            probs = torch.softmax(scores, -1)
        else:  # in place: the last-dim softmax kernel finishes reading a row before writing it
            probs = torch.ops.aten._softmax.out(scores, -1, False, out=scores)
        del scores
        keep = None
        dropped = probs
        if dropout > 0:
            keep = torch.rand_like(probs) >= dropout
            dropped = probs * keep / (1 - dropout)
        # inference: the queries are no longer needed, their buffer takes the output
        out = torch.bmm(dropped[..., n_global:], vw) if workspace is None else torch.bmm(
            dropped[..., n_global:], vw, out=qh.view(nbb, c, dim))
        out = out.view(batch, heads, tot, dim)
        if n_global:
            out.view(batch * heads, tot, dim).baddbmm_(
                dropped[..., :n_global].reshape(batch * heads, tot, n_global), vg.reshape(batch * heads, n_global, dim))
        ctx.save_for_backward(probs, keep, qh, kbuf, vbuf, kg, vg, global_index)
        ctx.conf = (scale, c, w, dropout, length, tuple(bias.shape), bias.requires_grad)
        # always a fresh tensor: `out` may live in the workspace that the next layer overwrites
        return out[:, :, :length].transpose(1, 2).clone(memory_format=torch.contiguous_format)

    @staticmethod
    def backward(ctx, grad_out):
        probs, keep, qh, kbuf, vbuf, kg, vg, global_index = ctx.saved_tensors
        scale, c, w, dropout, length, bias_shape, bias_grad = ctx.conf
        batch, heads, tot, dim = qh.shape
        n_global = kg.shape[2]
        width = c + 2 * w
        nbb = batch * heads * (tot // c)
        kw = kbuf.as_strided((nbb, width, dim), (c * dim, dim, 1))
        vw = vbuf.as_strided((nbb, width, dim), (c * dim, dim, 1))
        doh = grad_out.new_zeros(batch, heads, tot, dim)
        doh[:, :, :length] = grad_out.transpose(1, 2)
        dob = doh.view(nbb, c, dim)
        dropped = probs if keep is None else probs * keep / (1 - dropout)

        dv_w = torch.bmm(dropped[..., n_global:].transpose(1, 2), dob)  # (nbb, W, D)
        dp = torch.cat(
            [torch.matmul(doh, vg.transpose(-1, -2)).view(nbb, c, n_global), torch.bmm(dob, vw.transpose(1, 2))], -1
        )
        if keep is not None:
            dp.mul_(keep).div_(1 - dropout)
        # softmax backward: ds = p * (dp - sum_j p_j dp_j)
        ds = dp.sub_((dp * probs).sum(-1, keepdim=True)).mul_(probs)
        grad_bias = None
        if bias_grad:
            grad_bias = ds.view(batch, heads, tot // c, c, -1)
            dims = [i for i, (have, want) in enumerate(zip(grad_bias.shape, bias_shape)) if want == 1 and have != 1]
            grad_bias = grad_bias.sum(dims, keepdim=True) if dims else grad_bias.clone()
        ds.mul_(scale)
        ds_g = ds[..., :n_global].view(batch, heads, tot, n_global)
        ds_b = ds[..., n_global:]
        dq = torch.bmm(ds_b, kw).view(batch, heads, tot, dim)
        dk_w = torch.bmm(ds_b.transpose(1, 2), qh.view(nbb, c, dim))
        gi = global_index[:, None, :, None].expand(batch, heads, n_global, dim)
        dk = _overlap_add(dk_w, batch, heads, tot, dim, c, w, length)
        dv = _overlap_add(dv_w, batch, heads, tot, dim, c, w, length)
        if n_global:
            dq += torch.matmul(ds_g, kg)
            dk.scatter_add_(2, gi, torch.matmul(ds_g.transpose(-1, -2), qh))
            p_g = dropped[..., :n_global].view(batch, heads, tot, n_global)
            dv.scatter_add_(2, gi, torch.matmul(p_g.transpose(-1, -2), doh))
        return dq[:, :, :length], dk, dv, grad_bias, None, None, None, None, None, None


def _overlap_add(windows: torch.Tensor, batch, heads, tot, dim, c, w, length) -> torch.Tensor:
    """Adjoint of the strided window view: sums the (overlapping) window gradients back per key -> (B, H, L, D)."""
    nbb, width = windows.shape[0], windows.shape[1]
    buf = windows.new_zeros(batch * heads * tot + width, dim)
    for start in range(0, width, c):  # windows start every c rows: add them chunk by chunk
        size = min(c, width - start)
        buf[start : start + nbb * c].view(nbb, c, dim)[:, :size] += windows[:, start : start + size]
    return buf[: batch * heads * tot].view(batch, heads, tot, dim)[:, :, w : w + length].clone()


_WORKSPACES: dict[tuple, dict[str, torch.Tensor]] = {}


def _workspace(like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inference buffers kept between forwards (one set per device/dtype, replaced when shapes change): fresh CPU
    allocations of this size cost page faults on every forward (~30% of the kernel's time at 4096 tokens). They hold
    about 5x the size of one layer's query tensor; `release_workspace()` frees them."""
    return _WORKSPACES.setdefault((like.device, like.dtype), {})


def release_workspace() -> None:
    """Free the inference buffers the banded kernel keeps between forwards."""
    _WORKSPACES.clear()


def _scaled(bias: torch.Tensor, bias_scale) -> torch.Tensor:
    return bias if bias_scale is None else bias * bias_scale


def _band_bias(mask: BandedMask, dtype, position_bias: torch.Tensor | None, batch: int, heads: int,
               bias_scale=None) -> torch.Tensor:
    """(B, 1 or H, blocks, c, slots) additive mask (+ the gathered T5 position bias, times bias_scale)."""
    slots = mask.n_global + mask.block + 2 * mask.window
    blocks = mask.n_blocks + mask.n_extra
    bias = mask.additive("band_allowed", dtype)[:, None]  # (B, 1, blocks, c, slots)
    if position_bias is not None:
        pb = _scaled(_gather_bias(position_bias, mask.key_index), bias_scale)  # (B, H, rows, slots)
        bias = bias + pb.view(batch, heads, blocks, mask.block, slots)
    return bias


def _flash_band(query, key, value, mask: BandedMask, bias, scaling, dropout) -> torch.Tensor:
    """Band + global-key attention of all rows with materialised windows and one fused sdpa call -> (B, L, H, D)."""
    batch, heads, length, dim = query.shape
    c, nb, slots = mask.block, mask.n_blocks, mask.n_global + mask.block + 2 * mask.window
    lp, n = nb * c, batch * nb
    q_seq = query.transpose(1, 2)
    if lp != length:
        q_seq = torch.cat([q_seq, q_seq.new_zeros(batch, lp - length, heads, dim)], 1)
    q_blk = q_seq.reshape(n, c, heads, dim).transpose(1, 2)  # (N, H, c, D)
    k_cat = _windows(key.transpose(1, 2), mask).transpose(1, 2)  # (N, H, G+W, D)
    v_cat = _windows(value.transpose(1, 2), mask).transpose(1, 2)
    bias = bias.transpose(1, 2).reshape(n, bias.shape[1], c, slots)
    out = F.scaled_dot_product_attention(q_blk, k_cat, v_cat, attn_mask=bias, dropout_p=dropout, scale=scaling)
    out = out.transpose(1, 2).reshape(batch, lp, heads, dim)
    return out[:, :length] if lp != length else out


def banded_attention(query, key, value, mask: BandedMask, *, scaling: float, dropout: float = 0.0,
                     position_bias: torch.Tensor | None = None, bias_scale=None) -> torch.Tensor:
    """(B, H, L, D) inputs -> (B, L, H, D) output of the windowed rule (mask.mode == "band"). `bias_scale` (a number
    or a (B, 1, 1, 1) tensor) multiplies only the gathered entries of position_bias (TempScale's 1/tau), so the dense
    (1, H, L, L) bias is never rewritten."""
    batch, heads, length, dim = query.shape
    if key.shape[1] != heads:  # grouped-query attention
        rep = heads // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    n_global = mask.n_global
    bias = _band_bias(mask, query.dtype, position_bias, batch, heads, bias_scale)
    if mask.kernel == "small":
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value, bias))
        workspace = None if grad else _workspace(query)
        out = _SmallBand.apply(query, key, value, bias, mask.global_index, scaling, mask.block, mask.window, dropout,
                               workspace)
    else:
        out = _flash_band(query, key, value, mask, bias, scaling, dropout)

    if n_global:
        gi = mask.global_index[:, :, None, None].expand(-1, -1, heads, dim)
        q_g = query.transpose(1, 2).gather(1, gi).transpose(1, 2)  # (B, H, G, D)
        g_bias = mask.additive("global_allowed", query.dtype)[:, None]  # (B, 1, G, L)
        if position_bias is not None:
            rows = mask.global_index[:, :, None] * length + torch.arange(length, device=query.device)
            g_bias = g_bias + _scaled(_gather_bias(position_bias, rows), bias_scale)
        out_g = F.scaled_dot_product_attention(q_g, key, value, attn_mask=g_bias, dropout_p=dropout, scale=scaling)
        out_g = out_g.transpose(1, 2) * mask.global_valid[:, :, None, None].to(out_g.dtype)
        # the band pass computed placeholders for the global rows: replace them (in place unless autograd records:
        # `out` may be a view of the sdpa output, which its backward needs)
        row_mask = mask.is_global_row[:, :, None, None]
        if out.requires_grad or out_g.requires_grad:
            out = out.masked_fill(row_mask, 0).scatter_add(1, gi, out_g)
        else:
            out.masked_fill_(row_mask, 0).scatter_add_(1, gi, out_g)
    return out


class BandedBackend:
    name = "banded"
    takes_bias_scale = True  # scales the few bias entries it gathers instead of the whole (1, H, L, L) tensor

    def build_mask(self, *, groups, flags, window, padding, batch_size, q_length, kv_length, device):
        if q_length != kv_length:
            raise ValueError("backend='banded' handles encoder self-attention only (q_length == kv_length)")
        return build_banded_mask(groups, flags, window, padding, kv_length)

    def attend(self, module, query, key, value, mask: BandedMask, *, scaling, dropout, position_bias, need_weights,
               bias_scale=None):
        if mask.mode == "dense" or need_weights:
            reference = get_backend("eager" if need_weights else "sdpa")
            return reference.attend(
                module, query, key, value, mask.dense, scaling=scaling, dropout=dropout,
                position_bias=None if position_bias is None else _scaled(position_bias, bias_scale),
                need_weights=need_weights,
            )
        out = banded_attention(query, key, value, mask, scaling=scaling, dropout=dropout, position_bias=position_bias,
                               bias_scale=bias_scale)
        return out, None


register_backend(BandedBackend())
