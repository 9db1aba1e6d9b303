"""Eager backend: explicit softmax, returns the (patched) attention probabilities for output_attentions."""

from __future__ import annotations

import torch

from . import register_backend
from .sdpa import SdpaBackend


class EagerBackend(SdpaBackend):
    name = "eager"

    def attend(self, module, query, key, value, mask, *, scaling, dropout, position_bias, need_weights):
        n_rep = query.shape[1] // key.shape[1]
        if n_rep > 1:  # grouped-query attention
            key, value = key.repeat_interleave(n_rep, dim=1), value.repeat_interleave(n_rep, dim=1)
        scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
        if position_bias is not None:
            scores = scores + position_bias
        if mask is not None:
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask[..., : key.shape[-2]], torch.finfo(scores.dtype).min)
            else:
                scores = scores + mask[..., : key.shape[-2]]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        dropped = torch.nn.functional.dropout(probs, p=dropout, training=dropout > 0)
        out = torch.matmul(dropped, value).transpose(1, 2).contiguous()
        return out, probs


register_backend(EagerBackend())
