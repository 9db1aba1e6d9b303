"""Which architectures can be patched, keyed by `config.model_type` (one explicit table)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Support:
    has_cls: bool  # first real token is a [CLS]/<s> summary token
    separator: str | None  # tokenizer attribute naming the segment separator, if pairs are joined by one
    note: str = ""


SUPPORTED: dict[str, Support] = {
    "bert": Support(True, "sep_token_id", "BERT, MiniLM, BGE, E5, ..."),
    "roberta": Support(True, "sep_token_id", "pairs are joined by </s></s>"),
    "xlm-roberta": Support(True, "sep_token_id", "pairs are joined by </s></s>"),
    "electra": Support(True, "sep_token_id"),
    "distilbert": Support(True, "sep_token_id", "no token_type_ids: pairs are found by [SEP]"),
    "t5": Support(False, None, "encoder-only and encoder-decoder; cross-encoders need segments={'marker': ...}"),
    "mt5": Support(False, None),
    "umt5": Support(False, None),
}

# Known not to route attention through transformers' AttentionInterface (switching only logs a warning).
UNSUPPORTED: dict[str, str] = {
    "mpnet": "MPNet computes attention (with its relative bias) in its own forward",
    "deberta": "DeBERTa's disentangled attention is computed in its own forward",
    "deberta-v2": "DeBERTa-v2's disentangled attention is computed in its own forward",
    "longformer": "Longformer has its own sliding-window attention kernel",
    "big_bird": "BigBird has its own block-sparse attention",
    "funnel": "Funnel pools its attention in its own forward",
}


def support_for(model_type: str, can_set_attention: bool) -> Support:
    """The table entry, or a generic one for other types whose attention goes through the interface."""
    if model_type in SUPPORTED:
        return SUPPORTED[model_type]
    supported = ", ".join(sorted(SUPPORTED))
    if model_type in UNSUPPORTED:
        raise ValueError(
            f"model_type {model_type!r} is not supported: {UNSUPPORTED[model_type]}, so a patch would be silently "
            f"ignored. Supported: {supported}, and other types whose attention goes through AttentionInterface."
        )
    if not can_set_attention:
        raise ValueError(
            f"model_type {model_type!r} does not route attention through transformers' AttentionInterface. "
            f"Supported: {supported}."
        )
    return Support(True, "sep_token_id", "generic: verified by a probe forward at patch time")
