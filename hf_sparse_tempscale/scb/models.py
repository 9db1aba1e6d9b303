"""One-layer attention models for SCB: the query is the last token x_{T+1}, the keys are the T context positions.

Both models read the query's token embedding (one-hot) and the keys' positional embeddings (one-hot), so the
query-key bilinear form is a table A (N, T): score(k, t) = A[k, t]; values are the one-hot key tokens mapped by a
value table (N, N) whose row j is the predicted next-token distribution when position t holds token j. This is the
structure of Ren, Wang and Lee's linear model; the ground truth is representable exactly by both models
(A = q, values = P), so total variation can go to zero.

- `LinearAttentionSCB`: no normalisation, p_hat = sum_t A[k, t] V[x_t]; squared loss ||p_hat - e_y||^2 / 2, whose
  expectation is ||p_hat - p||^2 / 2 + const, so it is minimised by the true next-token distribution p.
- `SoftmaxAttentionSCB`: alpha = softmax(A[k] over allowed keys), p_hat = sum_t alpha_t softmax(W[x_t]) (a mixture of
  value distributions); cross-entropy loss -log p_hat[y].

`key_mask` (T,) bool limits the keys the query may attend to (e.g. a window mask); masked keys get zero weight.
"""

from __future__ import annotations

import torch
from torch import nn

from .data import SCBInstance
from .simplex import project_simplex


def window_key_mask(seq_len: int, window: int) -> torch.Tensor:
    """(T,) keys the query token at position T may see under the library's band mask |i - j| <= window."""
    from hf_sparse_tempscale.masks import window_mask

    return window_mask(seq_len + 1, window)[seq_len, :seq_len].clone()


class SCBAttentionModel(nn.Module):
    """Shared plumbing: key mask, attention table, token-weight aggregation."""

    def __init__(self, vocab_size: int, seq_len: int, key_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        if vocab_size < 2 or seq_len < 1:
            raise ValueError(f"need vocab_size >= 2 and seq_len >= 1, got {vocab_size}, {seq_len}")
        if key_mask is None:
            key_mask = torch.ones(seq_len, dtype=torch.bool)
        key_mask = torch.as_tensor(key_mask, dtype=torch.bool)
        if key_mask.shape != (seq_len,) or not key_mask.any():
            raise ValueError(f"key_mask must be a (T={seq_len},) bool tensor with at least one True")
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.register_buffer("key_mask", key_mask)

    @classmethod
    def for_instance(cls, instance: SCBInstance, window: int | None = None, **kwargs) -> "SCBAttentionModel":
        """Model sized for `instance`; `window` adds the library's window mask on the query's keys."""
        mask = None if window is None else window_key_mask(instance.seq_len, window)
        return cls(instance.vocab_size, instance.seq_len, key_mask=mask, **kwargs)

    def attention(self) -> torch.Tensor:
        """(N, T) attention weight of each query token on each context position."""
        raise NotImplementedError

    def value_distributions(self) -> torch.Tensor:
        """(N, N) value table; row j is the model's next-token distribution given a source token j."""
        raise NotImplementedError

    def reset_values(self) -> None:
        """Put the value table back to its initial (uniform) state, keeping the attention (transfer of attention only)."""
        raise NotImplementedError

    def _mixture(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = self.attention()[tokens[:, -1]]  # (n, T)
        # sum_t w_t V[x_t] = C @ V with C[n, j] = sum_{t : x_t = j} w_t: avoids an (n, T, N) tensor.
        per_token = torch.zeros(tokens.shape[0], self.vocab_size, dtype=weights.dtype, device=weights.device)
        per_token.scatter_add_(1, tokens[:, :-1], weights)
        return per_token @ self.value_distributions()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw model output (n, N)."""
        return self._mixture(tokens)

    def loss(self, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict_proba(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, N) predicted next-token distribution (a valid probability vector per row)."""
        return self(tokens)


class LinearAttentionSCB(SCBAttentionModel):
    """Linear attention: p_hat = sum_t A[k, t] V[x_t] with unconstrained A (N, T) and V (N, N)."""

    def __init__(self, vocab_size: int, seq_len: int, key_mask: torch.Tensor | None = None) -> None:
        super().__init__(vocab_size, seq_len, key_mask)
        # Uniform start: attention spread over the allowed keys, values uniform over the vocabulary.
        allowed = self.key_mask.float()
        self.A = nn.Parameter(allowed.expand(vocab_size, -1) / allowed.sum())
        self.V = nn.Parameter(torch.full((vocab_size, vocab_size), 1.0 / vocab_size))

    def attention(self) -> torch.Tensor:
        return self.A * self.key_mask

    def value_distributions(self) -> torch.Tensor:
        return self.V

    @torch.no_grad()
    def reset_values(self) -> None:
        self.V.fill_(1.0 / self.vocab_size)

    def loss(self, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = self(tokens)
        onehot = nn.functional.one_hot(target, self.vocab_size).to(out.dtype)
        return 0.5 * (out - onehot).pow(2).sum(-1).mean()

    def predict_proba(self, tokens: torch.Tensor) -> torch.Tensor:
        # The raw output need not be a distribution (Adam leaves A and V unconstrained): use its nearest one.
        return project_simplex(self(tokens))


class SoftmaxAttentionSCB(SCBAttentionModel):
    """Softmax attention over the allowed keys with distribution-valued values (softmax of a logit table W)."""

    def __init__(self, vocab_size: int, seq_len: int, key_mask: torch.Tensor | None = None) -> None:
        super().__init__(vocab_size, seq_len, key_mask)
        self.A = nn.Parameter(torch.zeros(vocab_size, seq_len))
        self.W = nn.Parameter(torch.zeros(vocab_size, vocab_size))

    def attention(self) -> torch.Tensor:
        scores = self.A.masked_fill(~self.key_mask, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def value_distributions(self) -> torch.Tensor:
        return torch.softmax(self.W, dim=-1)

    @torch.no_grad()
    def reset_values(self) -> None:
        self.W.zero_()

    def loss(self, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob = self(tokens).gather(1, target[:, None]).squeeze(1)
        return -prob.clamp_min(1e-12).log().mean()


MODELS = {"linear": LinearAttentionSCB, "softmax": SoftmaxAttentionSCB}
