"""Attention backends: each turns the token-group rule into a mask once per forward and attends with it per layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass
class PreparedMask:
    """What our mask function hands to every layer (transformers passes it through untouched, like a BlockMask)."""

    backend: str
    mask: Any
    groups: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    padding: torch.Tensor | None = None  # (B, L) bool, True = real token; for layers left unpatched


class AttentionBackend(Protocol):
    name: str

    def build_mask(self, *, groups, flags, window, padding, batch_size, q_length, kv_length, device) -> Any: ...

    def attend(self, module, query, key, value, mask, *, scaling, dropout, position_bias, need_weights): ...


BACKENDS: dict[str, AttentionBackend] = {}


def register_backend(backend: AttentionBackend) -> AttentionBackend:
    BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> AttentionBackend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"attention backend {name!r} is not available; registered: {sorted(BACKENDS)}") from None


# Importing a backend module registers it.
from . import eager, sdpa  # noqa: E402,F401
from . import banded, flex  # noqa: E402,F401  (issue 3: O(n*w) backends)
