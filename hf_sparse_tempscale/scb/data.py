"""Seeded sparse contextual bigram (SCB) generator, after Ren, Wang and Lee (arXiv 2410.23438).

Process: tokens x_1..x_{T+1} ~ mu i.i.d.; the last token k = x_{T+1} picks a position t ~ q^(k) (at most Q non-zero
entries over positions 1..T), and the target is x_o ~ P(. | x_t). Positions are 0-based in code: tokens[:, :T] are the
context x_1..x_T, tokens[:, T] is the query token x_{T+1}, and `position` indexes tokens[:, :T].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_ATOL = 1e-5  # tolerance on "sums to one" for float32 user input


def _as_generator(seed: int | torch.Generator | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator()
    gen.manual_seed(0 if seed is None else int(seed))
    return gen


def _check_distribution(name: str, value: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    value = value.to(torch.float64)
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} must be finite")
    if (value < 0).any():
        raise ValueError(f"{name} must be non-negative (min entry {value.min().item():.3g})")
    sums = value.sum(-1)
    bad = (sums - 1).abs() > _ATOL
    if bad.any():
        where = "" if value.dim() == 1 else f" (row {int(bad.nonzero()[0, 0])} sums to {sums[bad][0].item():.6g})"
        raise ValueError(f"{name} must be stochastic: each row must sum to 1{where}")
    return value / sums.unsqueeze(-1)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True, eq=False)
class SCBSample:
    """A batch of SCB sequences: tokens (n, T+1) long, target x_o (n,) long, position t that produced it (n,) long."""

    tokens: torch.Tensor
    target: torch.Tensor
    position: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]


@dataclass(frozen=True, eq=False)  # tensors: compare fields explicitly
class SCBInstance:
    """Ground truth of one SCB process: P (N, N) with P[i, j] = Pr(x_o = j | x_t = i), q (N, T), mu (N,).

    `window` (if set) promises that every q^(k) lives on the last `window` context positions T-window..T-1,
    i.e. the keys within distance `window` of the query token at position T.
    """

    P: torch.Tensor
    q: torch.Tensor
    mu: torch.Tensor
    max_support: int
    window: int | None = None

    def __post_init__(self) -> None:
        if self.P.dim() != 2:
            raise ValueError(f"P must be a 2-D (N, N) matrix, got shape {tuple(self.P.shape)}")
        n = self.P.shape[0]
        _check_int("N (vocabulary size)", n, 2)
        if self.q.dim() != 2 or self.q.shape[0] != n:
            raise ValueError(f"q must have shape (N={n}, T), got {tuple(self.q.shape)}")
        t = self.q.shape[1]
        _check_int("T (sequence length)", t, 1)
        _check_int("Q (max support size)", self.max_support, 1)
        if self.max_support > t:
            raise ValueError(f"Q (max support size) must be <= T={t}, got Q={self.max_support}")
        object.__setattr__(self, "P", _check_distribution("P", self.P, (n, n)))
        object.__setattr__(self, "mu", _check_distribution("mu", self.mu, (n,)))
        object.__setattr__(self, "q", _check_distribution("q", self.q, (n, t)))
        sizes = (self.q > 0).sum(1)
        if (sizes > self.max_support).any():
            k = int((sizes > self.max_support).nonzero()[0, 0])
            raise ValueError(f"q^({k}) has {int(sizes[k])} non-zero entries, more than Q={self.max_support}")
        if self.window is not None:
            _check_int("window", self.window, 1)
            if self.window > t:
                raise ValueError(f"window must be <= T={t}, got {self.window}")
            if self.window < self.max_support:
                raise ValueError(f"window={self.window} cannot hold a support of Q={self.max_support} positions")
            if (self.q[:, : t - self.window] > 0).any():
                raise ValueError(f"q has mass outside the last window={self.window} positions")

    @property
    def vocab_size(self) -> int:
        return self.P.shape[0]

    @property
    def seq_len(self) -> int:
        """T: number of context positions (the query token x_{T+1} comes after them)."""
        return self.q.shape[1]

    @property
    def supports(self) -> torch.Tensor:
        """(N, T) bool: supp(q^(k)) per query token k."""
        return self.q > 0

    def sample(self, n: int, seed: int | torch.Generator | None = None) -> SCBSample:
        """Draw n i.i.d. sequences; an int seed (or a generator, advanced in place) makes it reproducible."""
        _check_int("n (number of samples)", n, 1)
        gen = _as_generator(seed)
        length = self.seq_len + 1
        tokens = torch.multinomial(self.mu, n * length, replacement=True, generator=gen).view(n, length)
        query = tokens[:, -1]
        position = torch.multinomial(self.q[query], 1, generator=gen).squeeze(1)
        source = tokens.gather(1, position[:, None]).squeeze(1)
        target = torch.multinomial(self.P[source], 1, generator=gen).squeeze(1)
        return SCBSample(tokens=tokens, target=target, position=position)

    def next_token_distribution(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, N) true Pr(x_o | x_1..x_{T+1}) = sum_t q^(k)_t P(. | x_t) with k the last token."""
        weights = self.q[tokens[:, -1]]  # (n, T)
        return torch.einsum("nt,ntv->nv", weights, self.P[tokens[:, :-1]])

    def with_transition(self, P: torch.Tensor) -> "SCBInstance":
        """Same q and mu, another transition matrix (for transfer experiments)."""
        return SCBInstance(P=P, q=self.q, mu=self.mu, max_support=self.max_support, window=self.window)


def make_instance(
    vocab_size: int,
    seq_len: int,
    max_support: int,
    *,
    seed: int = 0,
    window: int | None = None,
    exact_support: bool = True,
    transition_concentration: float = 0.5,
    q_concentration: float = 5.0,
    mu_concentration: float | None = None,
) -> SCBInstance:
    """Random SCB instance.

    Ground truth is drawn with numpy's seeded Generator (`seed`); sequences are drawn later with `SCBInstance.sample`.
    Rows of P ~ Dirichlet(transition_concentration) (smaller = peakier bigrams, easier to tell positions apart).
    Each q^(k): support of Q positions (or a uniform size in 1..Q if not `exact_support`) drawn without replacement from
    all T positions, or from the last `window` positions; weights ~ Dirichlet(q_concentration) on the support.
    mu is uniform, or ~ Dirichlet(mu_concentration).
    """
    _check_int("N (vocabulary size)", vocab_size, 2)
    _check_int("T (sequence length)", seq_len, 1)
    _check_int("Q (max support size)", max_support, 1)
    if max_support > seq_len:
        raise ValueError(f"Q (max support size) must be <= T, got Q={max_support} > T={seq_len}")
    if window is not None:
        _check_int("window", window, 1)
        if window > seq_len:
            raise ValueError(f"window must be <= T, got window={window} > T={seq_len}")
        if max_support > window:
            raise ValueError(f"Q (max support size) must be <= window, got Q={max_support} > window={window}")
    for name, value in (("transition_concentration", transition_concentration), ("q_concentration", q_concentration)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if mu_concentration is not None and not mu_concentration > 0:
        raise ValueError(f"mu_concentration must be > 0 or None, got {mu_concentration}")

    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(vocab_size, float(transition_concentration)), size=vocab_size)
    if mu_concentration is None:
        mu = np.full(vocab_size, 1.0 / vocab_size)
    else:
        mu = rng.dirichlet(np.full(vocab_size, float(mu_concentration)))
    first = 0 if window is None else seq_len - window
    q = np.zeros((vocab_size, seq_len))
    for k in range(vocab_size):
        size = max_support if exact_support else int(rng.integers(1, max_support + 1))
        support = rng.choice(np.arange(first, seq_len), size=size, replace=False)
        q[k, support] = rng.dirichlet(np.full(size, float(q_concentration)))
    return SCBInstance(P=_tensor(P), q=_tensor(q), mu=_tensor(mu), max_support=max_support, window=window)


def perturb_transition(instance: SCBInstance, strength: float, *, seed: int = 1, concentration: float = 0.5) -> SCBInstance:
    """Correlated instance for transfer: same q and mu, P' = (1 - strength) P + strength R with R ~ Dirichlet rows."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    n = instance.vocab_size
    R = _tensor(np.random.default_rng(seed).dirichlet(np.full(n, float(concentration)), size=n))
    return instance.with_transition((1 - strength) * instance.P + strength * R)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
