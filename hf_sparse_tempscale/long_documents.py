"""Long documents: longer absolute position tables for BERT-family checkpoints, and MaxP chunked reranking.

T5's relative positions need neither: a T5 encoder runs at any length (bucketed far positions share one bias).

Position tables (`extend_position_embeddings`): a BERT-family checkpoint knows max_position_embeddings positions
(512). Two ways to make room for more, both keeping the positions it was trained on where possible:
- "copy" (default; Beltagy et al. 2020, Longformer's initialisation): position p >= n reuses the learned vector of
  p mod n. Positions 0..n-1 are unchanged, so inputs that fit the old table give exactly the old outputs, and the
  local structure (neighbours one position apart) is the learned one everywhere except at the seams every n
  positions, which suits windowed attention (a document token sees only +-w neighbours).
- "interpolate": the table is resampled linearly to the new size (all positions, old ones included, are compressed
  by n/N); neighbouring positions become nearly identical vectors at large N, and even short inputs change.
Neither is trained for the new lengths: fine-tuning at the new length is advised, as Longformer did.

MaxP (`maxp_scores`, Dai & Callan 2019): a document longer than the model allows is cut into overlapping windows of
whole words; each (query, window) pair is scored by the cross-encoder, and the document's score is the maximum
(or the first window's - FirstP - or the mean).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .patch import unwrap

METHODS = ("copy", "interpolate")
AGGREGATES = ("max", "first", "mean")


def _position_table(hf: nn.Module) -> tuple[nn.Module, str]:
    """(module holding the absolute position embedding, attribute name)."""
    for module in hf.modules():
        table = getattr(module, "position_embeddings", None)
        if isinstance(table, nn.Embedding) and hasattr(module, "position_ids"):
            return module, "position_embeddings"
    raise ValueError(
        f"{type(hf).__name__} has no absolute position-embedding table to extend (T5-style relative positions "
        "already handle any length)"
    )


def _offset(table: nn.Embedding) -> int:
    """RoBERTa-style tables reserve rows 0..padding_idx (positions start at padding_idx + 1)."""
    return 0 if table.padding_idx is None else table.padding_idx + 1


def extended_table(weight: torch.Tensor, offset: int, new_positions: int, method: str) -> torch.Tensor:
    """(offset + new_positions, hidden) weights from (offset + n, hidden) ones."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    reserved, learned = weight[:offset], weight[offset:]
    n = learned.shape[0]
    if method == "copy":
        index = torch.arange(new_positions, device=weight.device) % n
        grown = learned[index]
    else:
        grown = nn.functional.interpolate(
            learned.T[None].float(), size=new_positions, mode="linear", align_corners=True
        )
        grown = grown[0].T.to(weight.dtype)
    return torch.cat([reserved, grown], 0)


def extend_position_embeddings(model: Any, max_length: int, *, method: str = "copy", tokenizer=None) -> Any:
    """Grow the position table of a BERT-family model (PreTrainedModel, SentenceTransformer, CrossEncoder, PEFT) in
    place so that it accepts `max_length` tokens; returns the model. A table that is already long enough is kept.
    The config (max_position_embeddings), the position/token-type buffers, the tokenizer's model_max_length and the
    wrapper's max length follow, so save/load round-trips at the new size."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    hf = unwrap(model)
    holder, name = _position_table(hf)
    table: nn.Embedding = getattr(holder, name)
    offset = _offset(table)
    total = max_length + offset
    if total > table.num_embeddings:
        weight = extended_table(table.weight.detach(), offset, max_length, method)
        grown = nn.Embedding(total, table.embedding_dim, padding_idx=table.padding_idx,
                             device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            grown.weight.copy_(weight)
        grown.weight.requires_grad_(table.weight.requires_grad)
        setattr(holder, name, grown)
        device = holder.position_ids.device
        holder.position_ids = torch.arange(total, device=device).expand((1, -1))
        if isinstance(getattr(holder, "token_type_ids", None), torch.Tensor):
            holder.token_type_ids = torch.zeros((1, total), dtype=holder.token_type_ids.dtype, device=device)
        hf.config.max_position_embeddings = total
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is not None and getattr(tok, "model_max_length", 0) < max_length:
        tok.model_max_length = max_length
    for attr in ("max_length", "max_seq_length"):  # CrossEncoder / SentenceTransformer
        if hasattr(type(model), attr) or attr in getattr(model, "__dict__", {}):
            try:
                setattr(model, attr, max_length)
            except (AttributeError, TypeError):
                pass
    return model


def _chunks(tokenizer, document: str, budget: int, stride: int) -> list[str]:
    """Windows of at most `budget` tokens of `document`, starting every `stride` tokens, cut at word boundaries."""
    enc = tokenizer(document, add_special_tokens=False, return_offsets_mapping=True)
    n = len(enc["input_ids"])
    if n <= budget:
        return [document]
    offsets = enc["offset_mapping"]
    words = enc.word_ids() if hasattr(enc, "word_ids") else [None] * n

    def word_start(i: int) -> int:
        while 0 < i < n and words[i] is not None and words[i] == words[i - 1]:
            i -= 1
        return i

    chunks, start = [], 0
    while True:
        end = min(start + budget, n)
        if end < n:
            cut = word_start(end)
            end = cut if cut > start else end  # a single word longer than the budget is cut inside
        chunks.append(document[offsets[start][0] : offsets[end - 1][1]])
        if end >= n:
            return chunks
        nxt = word_start(start + stride)
        start = nxt if nxt > start else start + stride


def maxp_scores(cross_encoder: Any, query: str, documents: Sequence[str], *, max_length: int | None = None,
                stride: int | None = None, aggregate: str = "max", batch_size: int = 32,
                return_chunks: bool = False, **predict_kwargs) -> list[float] | tuple[list[float], list[list[float]]]:
    """Scores of `documents` for `query` with a sentence-transformers CrossEncoder, documents longer than the model's
    max length being split into windows (default: as many document tokens as fit next to the query, 50% overlap).
    `aggregate`: "max" (MaxP), "first" (FirstP) or "mean". Works the same on patched and unpatched models."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    tokenizer = cross_encoder.tokenizer
    limit = max_length or getattr(cross_encoder, "max_length", None) or tokenizer.model_max_length
    query_tokens = len(tokenizer(query, add_special_tokens=False)["input_ids"])
    budget = limit - query_tokens - tokenizer.num_special_tokens_to_add(pair=True)
    if budget < 8:
        raise ValueError(f"the query takes {query_tokens} of {limit} tokens: no room left for the document")
    stride = stride or max(1, budget // 2)
    if stride < 1 or stride > budget:
        raise ValueError(f"stride must be in 1..{budget}, got {stride}")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("maxp_scores needs a fast tokenizer (offsets cut the windows at word boundaries)")
    windows = [_chunks(tokenizer, doc, budget, stride) for doc in documents]
    pairs = [(query, w) for ws in windows for w in ws]
    flat = cross_encoder.predict(pairs, batch_size=batch_size, convert_to_numpy=True, **predict_kwargs) if pairs else []
    scores, per_doc, i = [], [], 0
    for ws in windows:
        part = [float(s) for s in flat[i : i + len(ws)]]
        i += len(ws)
        per_doc.append(part)
        scores.append(max(part) if aggregate == "max" else part[0] if aggregate == "first" else sum(part) / len(part))
    return (scores, per_doc) if return_chunks else scores


def maxp_rank(cross_encoder: Any, query: str, documents: Sequence[str], *, top_k: int | None = None,
              **kwargs) -> list[dict[str, float | int]]:
    """`maxp_scores` as a ranking: [{"corpus_id": index, "score": s}, ...] best first (like CrossEncoder.rank)."""
    scores = maxp_scores(cross_encoder, query, documents, **kwargs)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [{"corpus_id": i, "score": scores[i]} for i in order[: top_k or len(order)]]
