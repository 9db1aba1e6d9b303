"""Online training on fresh SCB samples with Adam or a preconditioned l1-proximal method, logging curves.

The proximal method (our own implementation, in the spirit of Ren, Wang and Lee's preconditioned projected proximal
descent; not a reproduction of their theorem setting) works on `LinearAttentionSCB` (A: (N, T), V: (N, N)) with the
squared loss. Per minibatch of B sequences with query-token counts c_k and context-token frequencies
f_j = (#occurrences of token j among the B*T context tokens) / (B*T):

    A_k <- max(0, A_k - lr * (B / c_k) * grad_{A_k} - lr * l1)        for query tokens k seen in the batch (c_k > 0)
    V_j <- Proj_simplex(V_j - value_lr * grad_{V_j} / f_j)             for context tokens j seen in the batch

i.e. a diagonal preconditioner that divides each row's gradient by the batch frequency of the token owning that row
(so rare tokens learn as fast as common ones), then the proximal map of l1 * ||A_k||_1 + indicator(A_k >= 0) (soft
threshold at lr * l1, clipped at zero) on the attention, and Euclidean projection of each value row onto the
probability simplex. Applying the threshold only to rows seen in the batch makes it a stochastic proximal step on
sum_k mu_k (L_k(A, V) + l1 * ||A_k||_1), whose prox in the mu-preconditioned metric is a uniform threshold.
Masked keys (window) stay exactly zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from .data import SCBInstance
from .metrics import off_support_mass, support_recall, total_variation
from .models import LinearAttentionSCB, SCBAttentionModel
from .simplex import project_simplex

METHODS = ("adam", "proximal")


@dataclass
class TrainConfig:
    method: str = "adam"
    samples: int = 100_000  # total training sequences seen (each step draws a fresh batch)
    batch_size: int = 64
    lr: float = 1e-2
    value_lr: float | None = None  # proximal: step on V (default: lr)
    l1: float = 1e-3  # proximal: l1 weight on the attention table
    eval_points: int = 40
    seed: int = 0
    # Step size lr_t = lr / sqrt(1 + samples_seen / decay_samples) (None: constant). A decaying step removes the
    # SGD noise floor on TV without tying the schedule to the run's length.
    decay_samples: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("samples", "batch_size", "eval_points"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or (self.value_lr is not None and not self.value_lr > 0):
            raise ValueError("learning rates must be > 0")
        if self.decay_samples is not None and self.decay_samples < 1:
            raise ValueError(f"decay_samples must be >= 1 or None, got {self.decay_samples}")
        if self.l1 < 0:
            raise ValueError(f"l1 must be >= 0, got {self.l1}")


@dataclass
class EvalSet:
    tokens: torch.Tensor
    true_distribution: torch.Tensor

    @classmethod
    def draw(cls, instance: SCBInstance, n: int = 2048, seed: int = 10_000) -> "EvalSet":
        sample = instance.sample(n, seed=seed)
        return cls(sample.tokens, instance.next_token_distribution(sample.tokens))


@dataclass
class TrainCurve:
    """Metrics against training samples seen; index 0 is the model before training."""

    samples: list[int] = field(default_factory=list)
    support_recall: list[float] = field(default_factory=list)
    tv: list[float] = field(default_factory=list)
    off_support: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def samples_to_reach(self, metric: str, threshold: float) -> int | None:
        """Samples after which `support_recall` stays >= threshold (or `tv` stays <= threshold) up to the end of
        the run: the first logged point from which every later point meets it. None if the last point misses it."""
        if metric not in ("support_recall", "tv"):
            raise ValueError(f"metric must be 'support_recall' or 'tv', got {metric!r}")
        good = [(v >= threshold) if metric == "support_recall" else (v <= threshold) for v in getattr(self, metric)]
        first = None
        for seen, ok in zip(self.samples, good):
            first = (first if first is not None else seen) if ok else None
        return first


def evaluate(model: SCBAttentionModel, instance: SCBInstance, eval_set: EvalSet) -> dict[str, float]:
    """support recall, off-support attention mass, and mean TV on the eval set."""
    with torch.no_grad():
        attention = model.attention()
        return {
            "support_recall": support_recall(attention, instance.supports),
            "off_support": off_support_mass(attention, instance.supports),
            "tv": total_variation(model.predict_proba(eval_set.tokens), eval_set.true_distribution),
        }


class PreconditionedProximal:
    """The proximal method described in the module docstring, for `LinearAttentionSCB`."""

    def __init__(self, model: SCBAttentionModel, lr: float, value_lr: float, l1: float) -> None:
        if not isinstance(model, LinearAttentionSCB):
            raise ValueError(
                "the proximal method needs LinearAttentionSCB: softmax weights are never exactly zero, so an l1 "
                "prox on them has no sparsifying meaning"
            )
        self.model, self.lr, self.value_lr, self.l1 = model, lr, value_lr, l1

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, scale: float = 1.0) -> None:
        """One update from the gradients in `.grad`; `scale` multiplies both step sizes (schedule)."""
        model, lr, value_lr = self.model, self.lr * scale, self.value_lr * scale
        n, vocab = tokens.shape[0], model.vocab_size
        query_counts = torch.bincount(tokens[:, -1], minlength=vocab).to(model.A.dtype)
        seen_q = query_counts > 0
        step_a = model.A - lr * (n / query_counts.clamp_min(1))[:, None] * model.A.grad
        step_a = (step_a - lr * self.l1).clamp_min(0) * model.key_mask
        model.A.copy_(torch.where(seen_q[:, None], step_a, model.A))

        context = tokens[:, :-1]
        freq = torch.bincount(context.reshape(-1), minlength=vocab).to(model.V.dtype) / context.numel()
        seen_v = freq > 0
        step_v = project_simplex(model.V - value_lr * model.V.grad / freq.clamp_min(1e-12)[:, None])
        model.V.copy_(torch.where(seen_v[:, None], step_v, model.V))


def train(
    model: SCBAttentionModel,
    instance: SCBInstance,
    config: TrainConfig,
    eval_set: EvalSet | None = None,
    *,
    progress: bool = True,
    desc: str | None = None,
) -> TrainCurve:
    """Train `model` in place on fresh samples of `instance`; returns the learning curve."""
    if (model.vocab_size, model.seq_len) != (instance.vocab_size, instance.seq_len):
        raise ValueError(
            f"model is for N={model.vocab_size}, T={model.seq_len} but the instance has "
            f"N={instance.vocab_size}, T={instance.seq_len}"
        )
    eval_set = eval_set or EvalSet.draw(instance)
    steps = max(1, -(-config.samples // config.batch_size))
    # Log-spaced evaluation: the interesting part (support found or not) happens early.
    eval_at = set(torch.logspace(0, math.log10(steps), config.eval_points).round().long().tolist()) | {steps}

    def lr_scale(step: int) -> float:  # multiplier for the update number `step` (0-based)
        if config.decay_samples is None:
            return 1.0
        return 1.0 / math.sqrt(1.0 + step * config.batch_size / config.decay_samples)

    if config.method == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_scale)
    else:
        optimizer = PreconditionedProximal(model, config.lr, config.value_lr or config.lr, config.l1)
    gen = torch.Generator().manual_seed(config.seed)

    curve = TrainCurve()

    def log(seen: int, loss: float) -> dict[str, float]:
        metrics = evaluate(model, instance, eval_set)
        curve.samples.append(seen)
        curve.train_loss.append(loss)
        for name, value in metrics.items():
            getattr(curve, name).append(value)
        return metrics

    log(0, float("nan"))
    running, count = 0.0, 0
    bar = tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False, mininterval=1.0)
    for step in bar:
        batch = instance.sample(config.batch_size, seed=gen)
        model.zero_grad(set_to_none=True)
        loss = model.loss(batch.tokens, batch.target)
        loss.backward()
        if config.method == "adam":
            optimizer.step()
            schedule.step()
        else:
            optimizer.step(batch.tokens, lr_scale(step - 1))
        running, count = running + loss.item(), count + 1
        if step in eval_at:
            metrics = log(step * config.batch_size, running / count)
            running, count = 0.0, 0
            bar.set_postfix(recall=f"{metrics['support_recall']:.3f}", tv=f"{metrics['tv']:.3f}", refresh=False)
    return curve
