"""Query sharing: rerank many documents for one query computing the query tokens only once (independent_query).

With `independent_query` (query tokens see neither [CLS] nor the document) the query tokens' hidden states, keys and
values are the same in every (query, candidate) pair of one query. `rerank_shared` runs the first pair normally while
recording each layer's query keys/values, then runs the other candidates as [CLS] + document only (their original
positions and token types kept), with the recorded query keys/values spliced into every layer's attention. Scores
equal `CrossEncoder.predict` on the patched model (tests/test_query_sharing.py), and each candidate skips the query
tokens' projections, feed-forward layers and attention rows.

The gain is the query's share of the tokens: measured in benchmarks/query_sharing.py (see the README) it is small at
passage length (a 10-token query next to a 60-token passage) and vanishes for long documents.

Requirements (checked): a BERT-family encoder with a [CLS] token and a classification head (CrossEncoder or
*ForSequenceClassification), patched with query_cls=False and query_doc=False on every layer, and no length-adaptive
temperature (tau would then depend on each pair's length, and so would the query states).
"""

from __future__ import annotations

import inspect
import threading
from typing import Any, Sequence

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

from . import attention
from .attention import STATES
from .backends import PreparedMask
from .masks import CLS, QUERY, dense_mask
from .patch import get_patch_config, unwrap
from .segments import find_groups

SHARED_NAME = "sparse_tempscale_shared"
_CTX = threading.local()


def _mask_function(*args, **kwargs):
    ctx = getattr(_CTX, "active", None)
    if ctx is None or ctx["mode"] == "capture":
        return attention.mask_function(*args, **kwargs)
    state = STATES.get(id(kwargs.get("config")))
    if state is not None:
        state.inputs = None  # the core's captured inputs are not used for this forward
    return ctx["prepared"]


def _attention_function(module, query, key, value, attention_mask, **kwargs):
    ctx = getattr(_CTX, "active", None)
    if ctx is None:
        return attention.attention_function(module, query, key, value, attention_mask, **kwargs)
    lo, hi = ctx["query_span"]
    if ctx["mode"] == "capture":
        ctx["cache"][id(module)] = (key[:, :, lo:hi].clone(), value[:, :, lo:hi].clone())
        return attention.attention_function(module, query, key, value, attention_mask, **kwargs)
    k_q, v_q = ctx["cache"][id(module)]
    batch = query.shape[0]
    # keys in full-sequence order: [CLS], the shared query span, then the candidate's own tokens
    key = torch.cat([key[:, :, :lo], k_q.expand(batch, -1, -1, -1), key[:, :, lo:]], 2)
    value = torch.cat([value[:, :, :lo], v_q.expand(batch, -1, -1, -1), value[:, :, lo:]], 2)
    return attention.attention_function(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(SHARED_NAME, _attention_function)
AttentionMaskInterface.register(SHARED_NAME, _mask_function)


def check_shareable(model: Any) -> None:
    """Raises ValueError when the query states of `model` depend on the candidate."""
    hf = unwrap(model)
    cfg = get_patch_config(model)
    if cfg is None:
        raise ValueError("query sharing needs a model patched with pattern='independent_query' (it is not patched)")
    flags = cfg.flags
    problems = []
    if flags["query_doc"] or flags["query_cls"]:
        problems.append("query tokens must see neither the document nor [CLS] (query_doc=False, query_cls=False)")
    if cfg.length_adaptive is not None:
        problems.append("a length-adaptive temperature makes the query states depend on each pair's length")
    if cfg.layers is not None or "encoder" not in cfg.apply_to:
        problems.append("every encoder layer must be patched (layers=None)")
    if getattr(hf.config, "is_encoder_decoder", False):
        problems.append("encoder-decoder models are not supported (BERT-family cross-encoders only)")
    state = STATES.get(id(hf.config))
    if state is None or not state.spec.has_cls:
        problems.append("the model needs a [CLS]-style first token (BERT family)")
    if problems:
        raise ValueError("query sharing is not exact for this model: " + "; ".join(problems))


def _positions(hf: PreTrainedModel, mask: torch.Tensor) -> torch.Tensor:
    """The position ids the model would use for a right-padded batch (RoBERTa-style tables start after padding_idx)."""
    tables = (getattr(m, "position_embeddings", None) for m in hf.modules())
    table = next((t for t in tables if isinstance(t, torch.nn.Embedding)), None)
    pad = getattr(table, "padding_idx", None)
    idx = torch.arange(mask.shape[1], device=mask.device)[None].expand_as(mask)
    if pad is None:
        return idx
    return torch.where(mask.bool(), idx + pad + 1, pad)


def _switch(hf: PreTrainedModel, name: str) -> dict:
    configs = {id(m.config): m.config for m in hf.modules() if isinstance(m, PreTrainedModel)}
    previous = {cid: c._attn_implementation_internal for cid, c in configs.items()}
    for c in configs.values():
        c._attn_implementation_internal = name
    return {cid: (configs[cid], impl) for cid, impl in previous.items()}


def rerank_shared(model: Any, query: str, documents: Sequence[str], *, batch_size: int = 32,
                  max_length: int | None = None, tokenizer=None, activation_fn=None) -> torch.Tensor:
    """Scores of `documents` for `query` (as CrossEncoder.predict would give on the patched model), with the query
    part computed once. `model`: a patched CrossEncoder or *ForSequenceClassification model."""
    check_shareable(model)
    hf = unwrap(model)
    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("pass tokenizer= (the model has none attached)")
    if activation_fn is None:
        activation_fn = getattr(model, "activation_fn", None) or torch.nn.Identity()
    max_length = max_length or getattr(model, "max_length", None) or tokenizer.model_max_length
    if not documents:
        return torch.empty(0)
    state = STATES[id(hf.config)]
    cfg = state.config
    accepts = set(inspect.signature(hf.forward).parameters)
    device = next(hf.parameters()).device

    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        enc = tokenizer([query] * len(documents), list(documents), truncation="only_second", max_length=max_length,
                        padding=True, return_tensors="pt").to(device)
    finally:
        tokenizer.padding_side = side
    ids, mask = enc["input_ids"], enc["attention_mask"]
    types = enc.get("token_type_ids")
    groups = find_groups(state.spec, input_ids=ids, attention_mask=mask, token_type_ids=types)
    span = (groups == QUERY)
    lo = int(span[0].nonzero()[0]) if bool(span[0].any()) else 1
    hi = lo + int(span[0].sum())
    if not bool((groups[:, :lo] == CLS).all()) or not bool(span[:, lo:hi].all()) or bool(span[:, hi:].any()):
        raise ValueError("the query span differs between candidates (truncated query?); cannot share it")
    positions = _positions(hf, mask)

    def forward(rows, keep):
        kwargs = {"input_ids": ids[rows][:, keep], "attention_mask": mask[rows][:, keep]}
        if types is not None and "token_type_ids" in accepts:
            kwargs["token_type_ids"] = types[rows][:, keep]
        if "position_ids" in accepts:
            kwargs["position_ids"] = positions[rows][:, keep]
        out = hf(**kwargs)
        logits = getattr(out, "logits", None)
        if logits is None:
            raise TypeError("rerank_shared needs a model with a classification head (logits)")
        return logits

    previous = _switch(hf, SHARED_NAME)
    ctx = {"mode": "capture", "query_span": (lo, hi), "cache": {}}
    _CTX.active = ctx
    scores = [None] * len(documents)
    try:
        with torch.inference_mode():
            first_len = int(mask[0].sum())
            scores[0] = forward([0], torch.arange(first_len, device=device))[0]
            ctx["mode"] = "reuse"
            rest = sorted(range(1, len(documents)), key=lambda i: -int(mask[i].sum()))
            for start in range(0, len(rest), batch_size):
                rows = rest[start : start + batch_size]
                full = int(mask[rows].sum(1).max())
                keep = torch.cat([torch.arange(lo, device=device), torch.arange(hi, full, device=device)])
                dense = dense_mask(groups[rows, :full], cfg.flags, cfg.window)[:, :, keep]  # (b, 1, kept rows, full)
                padding = mask[rows, :full].bool()
                lengths = padding.sum(-1) if cfg.length_adaptive is not None else None
                ctx["prepared"] = PreparedMask("eager" if cfg.backend == "eager" else "sdpa", dense,
                                               groups[rows, :full], lengths, padding)
                logits = forward(rows, keep)
                for r, row in zip(rows, logits):
                    scores[r] = row
    finally:
        _CTX.active = None
        for config, impl in previous.values():
            config._attn_implementation_internal = impl
        state.inputs = None
    logits = torch.stack(scores)
    out = activation_fn(logits)
    return out.squeeze(-1) if out.shape[-1] == 1 else out


def rank_shared(model: Any, query: str, documents: Sequence[str], *, top_k: int | None = None,
                **kwargs) -> list[dict[str, float | int]]:
    """`rerank_shared` as a ranking: [{"corpus_id": index, "score": s}, ...] best first (like CrossEncoder.rank)."""
    scores = rerank_shared(model, query, documents, **kwargs)
    order = torch.argsort(scores, descending=True).tolist()
    return [{"corpus_id": i, "score": float(scores[i])} for i in order[: top_k or len(order)]]


__all__ = ["SHARED_NAME", "check_shareable", "rank_shared", "rerank_shared"]
