"""Finding the token groups ([CLS] / query / document / padding) of each example in a batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .masks import CLS, DOC, PAD, QUERY


class MissingSegmentsError(ValueError):
    """The pattern needs query/document segments but the inputs carry no way to find them."""


@dataclass(frozen=True)
class SegmentSpec:
    """How one model's inputs are split into groups (resolved once at patch time)."""

    has_cls: bool
    sep_token_id: int | None = None
    marker_ids: tuple[int, ...] | None = None


def _second_from_ids(seg: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    second = (seg != 0) & real
    return second, second.any(dim=1)


def _second_from_sep(input_ids: torch.Tensor, real: torch.Tensor, sep: int) -> tuple[torch.Tensor, torch.Tensor]:
    seps = (input_ids == sep) & real
    # Everything after the first separator is the document side; one separator only means a single text.
    second = ((seps.cumsum(dim=1) - seps.long()) >= 1) & real
    return second, seps.sum(dim=1) >= 2


def _second_from_marker(input_ids: torch.Tensor, real: torch.Tensor, marker: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    batch, length = input_ids.shape
    k = len(marker)
    if length < k:
        hit = torch.zeros_like(real)
    else:
        windows = input_ids.unfold(1, k, 1)  # (B, L-k+1, k)
        hit = (windows == torch.tensor(marker, device=input_ids.device)).all(dim=-1)
        hit = torch.cat([hit, hit.new_zeros(batch, k - 1)], dim=1) & real
    second = (hit.long().cumsum(dim=1) >= 1) & real
    return second, hit.any(dim=1)


def find_groups(
    spec: SegmentSpec,
    *,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    shape: tuple[int, int] | None = None,
    need_pairs: bool = True,
) -> torch.Tensor:
    """(B, L) int8 groups. Sources, in order: `segment_ids`, non-trivial `token_type_ids`, the separator token,
    the marker token sequence. A row without a second segment is a single text: [CLS] + document.

    With no source at all, every row is a single text when `need_pairs` is False (only a window is set, e.g. a
    T5 embedding model); otherwise the query/document split cannot be found and we raise rather than guess."""
    ref = next((t for t in (input_ids, segment_ids, token_type_ids, attention_mask) if t is not None), None)
    if ref is not None:
        shape, device = tuple(ref.shape), ref.device
    elif shape is None:
        raise MissingSegmentsError("cannot find token groups: no input_ids, segment_ids, token_type_ids or attention_mask")
    else:
        device = None
    real = torch.ones(shape, dtype=torch.bool, device=device) if attention_mask is None else attention_mask.bool()

    if segment_ids is not None:
        second, pair = _second_from_ids(segment_ids, real)
    elif token_type_ids is not None and bool((token_type_ids[real] != 0).any()):
        second, pair = _second_from_ids(token_type_ids, real)
    elif input_ids is not None and spec.sep_token_id is not None:
        second, pair = _second_from_sep(input_ids, real, spec.sep_token_id)
    elif input_ids is not None and spec.marker_ids:
        second, pair = _second_from_marker(input_ids, real, spec.marker_ids)
    elif not need_pairs and not spec.marker_ids:
        second, pair = real, real.any(dim=1)
    else:
        raise MissingSegmentsError(
            "this patch needs query/document segments but none can be found: pass `segment_ids` "
            "(0 = query side, 1 = document side) to forward, pass non-zero token_type_ids, or configure "
            "`segments={'sep_token_id': ...}` / `segments={'marker': 'Document:'}` (with tokenizer=) in patch_model"
        )

    groups = torch.where(second | ~pair[:, None], DOC, QUERY)
    if spec.has_cls:
        first_real = real & (real.long().cumsum(dim=1) == 1)
        groups = torch.where(first_real, CLS, groups)
    return torch.where(real, groups, PAD).to(torch.int8)
