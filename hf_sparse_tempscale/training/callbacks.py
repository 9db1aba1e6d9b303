"""Trainer callbacks for patched models: temperature schedule, window curriculum, attention statistics and an
embedding-collapse monitor.

They work with `transformers.Trainer`, `SentenceTransformerTrainer` and `CrossEncoderTrainer`. Schedules change the
patch through `patch_model` (re-patching only swaps settings, so it is cheap and keeps DDP/optimizer state intact).

Why a log hook: `Trainer.log` appends a copy of the record to `state.log_history` *before* callbacks' `on_log` run,
and reporters (TensorBoard, ...) are called before user callbacks, so values added in `on_log` / `on_evaluate` reach
neither. The callbacks therefore add their values to the record inside `trainer.log` itself: `attach(trainer, ...)`
(or passing them in `Trainer(callbacks=[...])`, which binds them when the trainer starts) wraps this trainer
instance's `log` and `evaluate` so every training record carries the schedule values and every evaluation record
the probe statistics, in `log_history`, in the reporters and in the metrics `evaluate()` returns.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from ..config import SparseTempScaleConfig
from ..patch import get_patch_config, patch_model, unpatch_model, unwrap

logger = logging.getLogger(__name__)

PREFIX = "sparse_tempscale"  # training-record keys; evaluation records use "<eval prefix>_<name>"
_HOOKED = "_sparse_tempscale_log_hook"


# ---- routing metrics into the trainer's own log records ------------------------------------------------------------
class MetricsCallback(TrainerCallback):
    """Base class: contributes values to the trainer's training and evaluation log records."""

    def train_metrics(self, trainer: Trainer) -> dict[str, float]:
        return {}

    def eval_metrics(self, trainer: Trainer, prefix: str) -> dict[str, float]:
        return {}

    def on_init_end(self, args, state, control, **kwargs):
        self._bind_from_caller()

    def on_train_begin(self, args, state, control, **kwargs):
        self._bind_from_caller()

    def _bind_from_caller(self) -> None:
        # transformers does not hand the trainer to callbacks; the event is always fired from a Trainer method.
        frame = sys._getframe(2)
        for _ in range(16):
            if frame is None:
                break
            owner = frame.f_locals.get("self")
            if isinstance(owner, Trainer):
                install_log_hook(owner)  # idempotent; a callback reused by a second trainer hooks that one too
                return
            frame = frame.f_back
        logger.warning(
            "%s could not find its Trainer: its metrics will not be logged; use "
            "hf_sparse_tempscale.training.attach(trainer, callback)", type(self).__name__,
        )


def install_log_hook(trainer: Trainer) -> Trainer:
    """Make `trainer.log` include the values of every `MetricsCallback` in its callback list (idempotent)."""
    if trainer.__dict__.get(_HOOKED):
        return trainer
    log, evaluate = trainer.log, trainer.evaluate
    evaluate_signature = inspect.signature(evaluate)
    prefixes: list[str] = []  # metric_key_prefix of the evaluate() calls in progress (they nest for dict datasets)

    def evaluate_hooked(*args, **kwargs):
        bound = evaluate_signature.bind_partial(*args, **kwargs).arguments
        prefixes.append(bound.get("metric_key_prefix", "eval"))
        try:
            return evaluate(*args, **kwargs)
        finally:
            prefixes.pop()

    def log_hooked(logs: dict[str, float], *args, **kwargs):
        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, MetricsCallback):
                logs.update(cb.eval_metrics(trainer, prefixes[-1]) if prefixes else cb.train_metrics(trainer))
        return log(logs, *args, **kwargs)

    trainer.evaluate = evaluate_hooked
    trainer.log = log_hooked
    trainer.__dict__[_HOOKED] = True
    return trainer


def attach(trainer: Trainer, *callbacks: TrainerCallback) -> Trainer:
    """`trainer.add_callback(cb)` for each callback, and route their metrics into the trainer's log records."""
    for cb in callbacks:
        trainer.add_callback(cb)
    return install_log_hook(trainer)


# ---- schedules ---------------------------------------------------------------------------------------------------
def schedule_progress(step: int, max_steps: int, start_fraction: float, end_fraction: float) -> float:
    """0 at the ramp's first optimizer step, 1 at its last one (and after), linear in between."""
    first = math.floor(start_fraction * max_steps)
    last = max(first + 1, math.ceil(end_fraction * max_steps) - 1)
    return min(1.0, max(0.0, (step - first) / (last - first)))


def _interpolate(start: float, end: float, p: float, kind: str) -> float:
    if kind == "linear":
        return start + (end - start) * p
    if kind == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))
    if kind == "geometric":
        return start * (end / start) ** p
    raise ValueError(f"unknown schedule {kind!r}; choose linear, cosine or geometric")


class _ScheduleCallback(MetricsCallback):
    """Sets one patch field from the training progress at every optimizer step; the target on train end."""

    field: str

    def __init__(self, schedule: str, start_fraction: float, end_fraction: float):
        if schedule not in ("linear", "cosine", "geometric"):
            raise ValueError(f"unknown schedule {schedule!r}; choose linear, cosine or geometric")
        if not 0.0 <= start_fraction < end_fraction <= 1.0:
            raise ValueError(f"need 0 <= start_fraction < end_fraction <= 1, got {start_fraction}, {end_fraction}")
        self.schedule, self.start_fraction, self.end_fraction = schedule, start_fraction, end_fraction
        self.current: Any = None
        self.applied = False  # whether `current` holds a value set by this callback

    def value_at(self, progress: float, model: Any) -> Any:
        raise NotImplementedError

    def _apply(self, model: Any, progress: float, tokenizer=None) -> None:
        cfg = get_patch_config(model)
        if cfg is None:
            raise RuntimeError(f"{type(self).__name__} needs a patched model: call patch_model(model, ...) first")
        value = self.value_at(progress, model)
        self.current, self.applied = value, True
        if getattr(cfg, self.field) != value:
            patch_model(model, cfg.replace(**{self.field: value}), tokenizer=_segment_tokenizer(model, tokenizer))

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self._apply(model, self._progress(state), processing_class)

    def on_step_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._apply(model, self._progress(state), processing_class)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._apply(model, 1.0, processing_class)  # the trained model ends on the target settings

    def _progress(self, state) -> float:
        return schedule_progress(state.global_step, max(1, state.max_steps), self.start_fraction, self.end_fraction)


def _segment_tokenizer(model: Any, tokenizer):
    # Re-patching re-resolves `segments={"marker": ...}`, which needs a tokenizer when the model carries none.
    return None if getattr(model, "tokenizer", None) is not None else tokenizer


class TemperatureScheduleCallback(_ScheduleCallback):
    """Anneal the attention temperature tau from `start` to `end` (floats, or per-layer lists of equal length).

    The ramp covers [start_fraction, end_fraction] of the optimizer steps; `schedule` is linear, cosine or geometric.
    Logged as `sparse_tempscale/temperature` (per-layer lists as `sparse_tempscale/temperature/layer_<i>`).
    """

    field = "temperature"

    def __init__(self, start: float | Sequence[float], end: float | Sequence[float], schedule: str = "linear",
                 start_fraction: float = 0.0, end_fraction: float = 1.0):
        super().__init__(schedule, start_fraction, end_fraction)
        as_list = not isinstance(start, (int, float))
        if as_list != (not isinstance(end, (int, float))) or (as_list and len(start) != len(end)):
            raise ValueError("start and end must both be numbers or lists of the same length")
        for t in (list(start) + list(end)) if as_list else (start, end):
            SparseTempScaleConfig(temperature=t)  # same validation as the patch (finite, > 0)
        if as_list:
            self.start, self.end = [float(t) for t in start], [float(t) for t in end]
        else:
            self.start, self.end = float(start), float(end)

    def value_at(self, progress: float, model: Any = None):
        if isinstance(self.start, list):
            return [_interpolate(s, e, progress, self.schedule) for s, e in zip(self.start, self.end)]
        return _interpolate(self.start, self.end, progress, self.schedule)

    def train_metrics(self, trainer: Trainer) -> dict[str, float]:
        if not self.applied:
            return {}
        if isinstance(self.current, list):
            return {f"{PREFIX}/temperature/layer_{i}": t for i, t in enumerate(self.current)}
        return {f"{PREFIX}/temperature": self.current}


class WindowCurriculumCallback(_ScheduleCallback):
    """Narrow the document window from `start` to `target`, so a dense checkpoint adapts to sparse attention.

    `start=None` begins without a window (dense); the ramp then starts from `max_window` (default: the model's
    `max_position_embeddings`). Between the ends the window follows a geometric (default) or linear curve in
    (window + 1), over [start_fraction, end_fraction] of the optimizer steps (default: the first half, so the model
    trains on the target window for the second half). Logged as `sparse_tempscale/window` (-1 = no window).
    """

    field = "window"

    def __init__(self, target: int, start: int | None = None, schedule: str = "geometric",
                 start_fraction: float = 0.0, end_fraction: float = 0.5, max_window: int | None = None):
        if schedule == "cosine":
            raise ValueError("window schedules are linear or geometric")
        super().__init__(schedule, start_fraction, end_fraction)
        for name, value in (("target", target), ("start", start), ("max_window", max_window)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if start is not None and start < target:
            raise ValueError(f"start window {start} is narrower than the target {target}")
        self.target, self.start, self.max_window = target, start, max_window

    def value_at(self, progress: float, model: Any = None) -> int | None:
        if progress >= 1.0:
            return self.target
        if progress <= 0.0 and self.start is None:
            return None
        wide = self.start
        if wide is None:
            wide = self.max_window or int(getattr(unwrap(model).config, "max_position_embeddings", 512) or 512)
        wide = max(wide, self.target)
        w = _interpolate(wide + 1.0, self.target + 1.0, progress, self.schedule) - 1.0
        return max(self.target, min(wide, int(round(w))))

    def train_metrics(self, trainer: Trainer) -> dict[str, float]:
        if not self.applied:
            return {}
        return {f"{PREFIX}/window": -1 if self.current is None else int(self.current)}


# ---- probe-set statistics at evaluation time ------------------------------------------------------------------------
def _probe_tokenizer(trainer: Trainer, tokenizer):
    tok = tokenizer or getattr(trainer.model, "tokenizer", None) or trainer.processing_class
    if tok is None:
        raise ValueError("no tokenizer: pass tokenizer= to the callback or processing_class= to the Trainer")
    return tok


def _batches(items: Sequence[Any], size: int):
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _tokenize(tok, batch: list, max_length: int | None):
    if batch and isinstance(batch[0], (tuple, list)):
        first, second = [b[0] for b in batch], [b[1] for b in batch]
        return tok(first, second, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return tok(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


class _ProbeCallback(MetricsCallback):
    def __init__(self, probe: Sequence[Any], tokenizer=None, batch_size: int = 16, max_length: int | None = 256):
        if len(probe) < 2:
            raise ValueError("the probe set needs at least 2 items")
        self.probe, self.tokenizer, self.batch_size, self.max_length = list(probe), tokenizer, batch_size, max_length


class AttentionStatisticsCallback(_ProbeCallback):
    """Per-layer attention entropy (nats, mean over heads and real query tokens) and the share of real keys that
    receive non-zero weight (= the share allowed by the sparse mask), measured on a probe set at evaluation time.

    `probe`: texts, or (query, document) pairs for cross-encoders. The probe runs with the current patch settings on
    the eager backend (which returns attention probabilities); an unpatched model is measured with neutral settings.
    Logged as `<prefix>_attention/entropy/layer_<i>`, `<prefix>_attention/allowed_share/layer_<i>` and their means.
    """

    @torch.no_grad()
    def compute(self, model: Any, tokenizer) -> dict[str, float]:
        hf = unwrap(model)
        previous = get_patch_config(model)
        patch_model(model, (previous or SparseTempScaleConfig()).replace(backend="eager"), tokenizer=tokenizer)
        modes = {m: m.training for m in hf.modules()}
        hf.eval()
        device = next(hf.parameters()).device
        entropy, share, count = None, None, 0
        try:
            for batch in _batches(self.probe, self.batch_size):
                enc = _tokenize(tokenizer, batch, self.max_length).to(device)
                attentions = hf(**enc, output_attentions=True).attentions
                if not attentions or attentions[0] is None:
                    raise RuntimeError(f"{type(hf).__name__} returned no attention weights")
                real = enc["attention_mask"].bool()  # (B, L)
                n_keys = real.sum(-1, keepdim=True).float()  # (B, 1)
                ent_l, share_l = [], []
                for att in attentions:  # (B, H, L, L)
                    p = att.float()
                    ent = -(p * p.clamp_min(1e-30).log()).sum(-1).mean(1)  # (B, L)
                    nonzero = ((p > 0) & real[:, None, None, :]).sum(-1).float().mean(1) / n_keys  # (B, L)
                    ent_l.append(ent[real].sum())
                    share_l.append(nonzero[real].sum())
                ent_t, share_t = torch.stack(ent_l), torch.stack(share_l)
                entropy = ent_t if entropy is None else entropy + ent_t
                share = share_t if share is None else share + share_t
                count += int(real.sum())
        finally:
            for m, mode in modes.items():
                m.training = mode
            if previous is None:
                unpatch_model(model)
            else:
                patch_model(model, previous, tokenizer=tokenizer)
        entropy, share = (entropy / count).tolist(), (share / count).tolist()
        out = {f"attention/entropy/layer_{i}": v for i, v in enumerate(entropy)}
        out.update({f"attention/allowed_share/layer_{i}": v for i, v in enumerate(share)})
        out["attention/entropy_mean"] = sum(entropy) / len(entropy)
        out["attention/allowed_share_mean"] = sum(share) / len(share)
        return out

    def eval_metrics(self, trainer: Trainer, prefix: str) -> dict[str, float]:
        stats = self.compute(trainer.model, _probe_tokenizer(trainer, self.tokenizer))
        return {f"{prefix}_{k}": v for k, v in stats.items()}


def _mean_pairwise_cosine(emb: torch.Tensor) -> float:
    emb = torch.nn.functional.normalize(emb.float(), dim=-1)
    n = emb.shape[0]
    sims = emb @ emb.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


class EmbeddingCollapseCallback(_ProbeCallback):
    """Length-induced embedding collapse monitor (Zhou et al., arXiv 2410.24200) on a probe set of texts.

    Embeds the probe texts (SentenceTransformer: its own pooling; other models: mean of the last hidden states),
    splits them at `length_threshold` tokens (default: the median length) and reports the mean pairwise cosine
    similarity of the short and of the long texts. Collapse shows as long texts crowding together:
    `<prefix>_collapse/gap` = mean_cos_long - mean_cos_short grows.
    """

    def __init__(self, probe: Sequence[str], tokenizer=None, batch_size: int = 16, max_length: int | None = 256,
                 length_threshold: int | None = None):
        super().__init__(probe, tokenizer, batch_size, max_length)
        if not all(isinstance(t, str) for t in self.probe):
            raise ValueError("the collapse probe takes plain texts")
        self.length_threshold = length_threshold

    @torch.no_grad()
    def embed(self, model: Any, tokenizer) -> torch.Tensor:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:  # pragma: no cover - sentence-transformers is a dependency
            SentenceTransformer = ()
        if isinstance(model, SentenceTransformer):
            return model.encode(self.probe, batch_size=self.batch_size, convert_to_tensor=True,
                                show_progress_bar=False).cpu()
        hf = unwrap(model)
        modes = {m: m.training for m in hf.modules()}
        hf.eval()
        device = next(hf.parameters()).device
        out = []
        try:
            for batch in _batches(self.probe, self.batch_size):
                enc = _tokenize(tokenizer, batch, self.max_length).to(device)
                hidden = hf(**enc, output_hidden_states=True).hidden_states[-1]
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu())
        finally:
            for m, mode in modes.items():
                m.training = mode
        return torch.cat(out)

    def compute(self, model: Any, tokenizer) -> dict[str, float]:
        ids = tokenizer(self.probe, truncation=True, max_length=self.max_length)["input_ids"]
        lengths = torch.tensor([len(x) for x in ids])
        threshold = self.length_threshold if self.length_threshold is not None else float(lengths.float().median())
        short, long = lengths <= threshold, lengths > threshold
        if short.sum() < 2 or long.sum() < 2:
            raise ValueError(f"the probe needs >= 2 texts on each side of {threshold} tokens; vary the text lengths")
        emb = self.embed(model, tokenizer)
        cos_short, cos_long = _mean_pairwise_cosine(emb[short]), _mean_pairwise_cosine(emb[long])
        return {
            "collapse/mean_cos_short": cos_short,
            "collapse/mean_cos_long": cos_long,
            "collapse/mean_cos_all": _mean_pairwise_cosine(emb),
            "collapse/gap": cos_long - cos_short,
            "collapse/length_threshold": float(threshold),
        }

    def eval_metrics(self, trainer: Trainer, prefix: str) -> dict[str, float]:
        stats = self.compute(trainer.model, _probe_tokenizer(trainer, self.tokenizer))
        return {f"{prefix}_{k}": v for k, v in stats.items()}


# ---- multi-process consistency ------------------------------------------------------------------------------------
def parameter_digest(model: Any) -> str:
    """sha256 over every parameter's name, dtype, shape and bytes, plus the patch settings."""
    import hashlib
    import json

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    cfg = get_patch_config(model) if _is_patchable(model) else None
    h.update(json.dumps(cfg.to_dict() if cfg else None, sort_keys=True).encode())
    return h.hexdigest()


def _is_patchable(model: Any) -> bool:
    try:
        unwrap(model)
    except TypeError:
        return False
    return True


class ProcessSyncCallback(TrainerCallback):
    """Checks at the end of training that every process holds bit-identical parameters and patch settings.

    Each rank writes `<output_dir>/rank_sync/rank<r>.json` ({rank, world_size, step, digest}); with
    torch.distributed initialised the digests are gathered and a mismatch raises RuntimeError on every rank.
    """

    def __init__(self, output_dir: str | None = None):
        self.output_dir = output_dir

    def on_train_end(self, args, state, control, model=None, **kwargs):
        import json
        from pathlib import Path

        import torch.distributed as dist

        digest = parameter_digest(model)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        folder = Path(self.output_dir or args.output_dir) / "rank_sync"
        folder.mkdir(parents=True, exist_ok=True)
        record = {"rank": rank, "world_size": world, "step": state.global_step, "digest": digest}
        (folder / f"rank{rank}.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
        if world > 1:
            digests: list[Any] = [None] * world
            dist.all_gather_object(digests, digest)
            if len(set(digests)) != 1:
                raise RuntimeError(f"processes diverged: parameter digests per rank {digests}")
