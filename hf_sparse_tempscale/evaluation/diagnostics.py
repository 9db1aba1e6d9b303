"""Length-collapse diagnostics (TempScale paper, Zhou et al. 2024): do long texts' embeddings crowd together?

Texts are grouped by token length and, per group, three statistics of the (L2-normalised) embeddings are reported:
- mean_cosine: mean pairwise cosine similarity between different texts (higher = more collapsed);
- anisotropy: share of the embeddings' second moment along their dominant direction, s1^2 / sum(s^2) of the
  uncentred unit vectors (1/dim for isotropic, 1.0 when all point the same way);
- effective_rank: exp(entropy of the normalised singular values) of the centred embeddings (Roy & Vetterli 2007);
  it is bounded by the group size, so compare groups of equal size.

Two ways to form groups: "truncate" (default) reads the same long texts cut at each length, so only length
changes between groups; "natural" buckets different texts by their own length.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .run import max_length


def embedding_stats(embeddings: Any) -> dict[str, float]:
    """mean_cosine, anisotropy and effective_rank of one group of embeddings (rows)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need a 2-D array with at least two rows, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an embedding is all zeros")
    x = x / norms
    n = x.shape[0]
    sims = x @ x.T
    mean_cos = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    s = np.linalg.svd(x, compute_uv=False)
    anisotropy = s[0] ** 2 / np.sum(s**2)
    sc = np.linalg.svd(x - x.mean(axis=0, keepdims=True), compute_uv=False)
    sc = sc[sc > 1e-9]  # rows are unit vectors, so this is rounding noise, not spread
    if sc.size == 0:
        erank = 0.0  # all embeddings identical: no spread at all
    else:
        p = sc / sc.sum()
        erank = float(np.exp(-np.sum(p * np.log(p))))
    return {"mean_cosine": float(mean_cos), "anisotropy": float(anisotropy), "effective_rank": erank}


@dataclass
class BucketStats:
    setting: str
    bucket: str
    length_lo: int
    length_hi: int
    n: int
    mean_length: float
    mean_cosine: float
    anisotropy: float
    effective_rank: float


@dataclass
class CollapseReport:
    rows: list[BucketStats]
    mode: str
    settings: dict[str, dict | None]

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "settings": self.settings, "rows": [asdict(r) for r in self.rows]}

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def to_markdown(self, digits: int = 3) -> str:
        lines = [
            "| setting | tokens | n | mean length | mean cosine | anisotropy | effective rank |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.setting} | {r.bucket} | {r.n} | {r.mean_length:.1f} | {r.mean_cosine:.{digits}f} | "
                f"{r.anisotropy:.{digits}f} | {r.effective_rank:.{digits - 1}f} |"
            )
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """PNG with one panel per statistic, one curve per setting, x = mean token length."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        stats = [
            ("mean_cosine", "mean pairwise cosine"),
            ("anisotropy", "anisotropy (top direction share)"),
            ("effective_rank", "effective rank"),
        ]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for setting in self.settings:
            rows = [r for r in self.rows if r.setting == setting]
            xs = [r.mean_length for r in rows]
            for ax, (key, _) in zip(axes, stats):
                ax.plot(xs, [getattr(r, key) for r in rows], marker="o", label=setting)
        for ax, (_, label) in zip(axes, stats):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("tokens per text")
            ax.set_title(label)
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(title or f"Length collapse ({self.mode} groups)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _tokenizer(model: Any) -> Any:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise TypeError("length-collapse diagnostics need a SentenceTransformer (with a tokenizer)")
    return tok


def _token_lengths(model: Any, texts: Sequence[str]) -> list[int]:
    tok = _tokenizer(model)
    return [len(ids) for ids in tok(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]]


def _groups(
    model: Any, texts: Sequence[str], lengths: Sequence[int], mode: str, per_group: int, seed: int
) -> list[tuple[str, int, int, list[str], list[int]]]:
    """(label, lo, hi, texts, effective lengths) for each group."""
    rng = random.Random(seed)
    lengths = sorted({int(n) for n in lengths})
    tok_lens = _token_lengths(model, texts)
    groups = []
    if mode == "truncate":
        order = sorted(range(len(texts)), key=lambda i: -tok_lens[i])
        longest = [i for i in order if tok_lens[i] >= lengths[-1]]
        pick = rng.sample(longest, per_group) if len(longest) >= per_group else order[:per_group]
        if len(pick) < 2:
            raise ValueError("need at least two texts")
        for n in lengths:
            groups.append((f"<={n}", n, n, [texts[i] for i in pick], [min(tok_lens[i], n) for i in pick]))
    elif mode == "natural":
        edges = [0, *lengths]
        for lo, hi in itertools.pairwise(edges):
            idx = [i for i, n in enumerate(tok_lens) if lo < min(n, lengths[-1]) <= hi]
            if len(idx) < 2:
                continue  # a group of one has no pairwise statistics
            idx = rng.sample(idx, min(per_group, len(idx)))
            groups.append((f"{lo + 1}-{hi}", lo + 1, hi, [texts[i] for i in idx], [min(tok_lens[i], hi) for i in idx]))
        if not groups:
            raise ValueError("no length bucket has two or more texts")
    else:
        raise ValueError(f"mode must be 'truncate' or 'natural', got {mode!r}")
    return groups


def length_collapse(
    model: Any,
    texts: Sequence[str],
    *,
    settings: Mapping[str, Mapping[str, Any] | None] | None = None,
    temperatures: Sequence[float] = (),
    lengths: Sequence[int] | None = None,
    mode: str = "truncate",
    per_group: int = 64,
    seed: int = 0,
    batch_size: int = 32,
    include_unpatched: bool = True,
    show_progress: bool = True,
) -> CollapseReport:
    """Embed texts grouped by token length, unpatched and under each setting (`temperatures` adds {"temperature": t}).

    `lengths` default: powers of two from 16 up to the model's position limit.
    """
    from hf_sparse_tempscale import patched

    from .comparison import BASELINE, validate_settings
    from .synthetic import default_lengths, model_max_positions

    if not texts:
        raise ValueError("no texts")
    all_settings: dict[str, Any] = {BASELINE: None} if include_unpatched else {}
    all_settings.update({f"tau={t:g}": {"temperature": float(t)} for t in temperatures})
    all_settings.update(settings or {})
    checked = validate_settings(all_settings)
    if not checked:
        raise ValueError("no settings to diagnose")
    if lengths is None:
        limit = model_max_positions(model) or 512
        lengths = default_lengths(limit, start=16)
    groups = _groups(model, texts, lengths, mode, per_group, seed)
    rows: list[BucketStats] = []
    bar = tqdm(total=len(checked) * len(groups), desc="length collapse", disable=not show_progress)
    for name, cfg in checked.items():
        ctx = patched(model, **cfg) if cfg is not None else contextlib.nullcontext()
        with ctx:
            for label, lo, hi, group_texts, eff in groups:
                with max_length(model, hi):
                    emb = model.encode(list(group_texts), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
                rows.append(BucketStats(name, label, lo, hi, len(group_texts), float(np.mean(eff)), **embedding_stats(emb)))
                bar.update(1)
    bar.close()
    return CollapseReport(rows=rows, mode=mode, settings=checked)
