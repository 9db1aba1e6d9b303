"""Reference backend: torch's scaled_dot_product_attention with a dense boolean mask (O(n^2) memory)."""

from __future__ import annotations

from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ..masks import dense_mask
from . import register_backend


class SdpaBackend:
    name = "sdpa"

    def build_mask(self, *, groups, flags, window, padding, batch_size, q_length, kv_length, device):
        if groups is not None:
            return dense_mask(groups, flags, window)
        if padding is None or bool(padding.all()):
            return None
        return padding[:, None, None, :]

    def attend(self, module, query, key, value, mask, *, scaling, dropout, position_bias, need_weights):
        # transformers' own sdpa path (GQA, T5 position bias, causal flag), so neutral settings match stock exactly.
        return sdpa_attention_forward(
            module, query, key, value, mask, dropout=dropout, scaling=scaling, position_bias=position_bias
        )


register_backend(SdpaBackend())
