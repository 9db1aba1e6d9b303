"""Pick the attention temperature on a dev split, and compare a fixed tau with the length-adaptive one.

The length-adaptive tau is the core config field `length_adaptive={"short_length", "long_length",
"long_temperature"}`: `temperature` up to short_length non-padding tokens, `long_temperature` from long_length on,
interpolated in log-length between; it is saved with the model like every other patch setting.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .comparison import BASELINE, Comparison, compare
from .data import RetrievalData, load_beir

DEFAULT_GRID = (0.7, 0.8, 0.85, 0.9, 0.95, 1.0)


@dataclass
class TuneResult:
    """The tuning curve on the dev task(s) and its best point (ties go to the value closest to 1 = least change)."""

    parameter: str  # "temperature" or "long_temperature"
    best_value: float
    best_score: float
    baseline_score: float | None  # the unpatched model on the same dev task(s)
    curve: list[tuple[float, float]]
    metric: str
    tasks: list[str]
    best_settings: dict[str, Any]  # the full patch settings of the best point
    comparison: Comparison | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parameter": self.parameter,
            "best_value": self.best_value,
            "best_score": self.best_score,
            "baseline_score": self.baseline_score,
            "curve": [{"value": v, "score": s} for v, s in self.curve],
            "metric": self.metric,
            "tasks": self.tasks,
            "best_settings": self.best_settings,
        }

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def plot(self, path: str | Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5.5, 4))
        xs, ys = zip(*self.curve)
        ax.plot(xs, ys, marker="o", label="patched")
        if self.baseline_score is not None:
            ax.axhline(self.baseline_score, color="gray", linestyle="--", label="unpatched")
        ax.axvline(self.best_value, color="tab:red", alpha=0.4, label=f"best {self.parameter}={self.best_value:g}")
        ax.set_xlabel(self.parameter)
        ax.set_ylabel(f"{self.metric} (dev)")
        ax.set_title(", ".join(self.tasks))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _plain(settings: Mapping[str, Any]) -> bool:
    """True when the settings change nothing (tau 1, full attention): the unpatched score can be reused."""
    from hf_sparse_tempscale import SparseTempScaleConfig

    cfg = SparseTempScaleConfig(**dict(settings))
    return not cfg.has_temperature and not cfg.is_sparse and cfg.layers is None


def _tune(
    model: Any,
    dev_tasks: Any,
    parameter: str,
    points: dict[float, dict[str, Any]],
    *,
    output_folder: str | Path | None,
    batch_size: int,
    max_seq_length: int | None,
    show_progress: bool,
    baseline_score: float | None = None,
) -> TuneResult:
    if not points:
        raise ValueError("empty grid")
    names = {v: f"{parameter}={v:g}" for v in points}
    to_run = {names[v]: s for v, s in points.items() if not _plain(s)}
    if not to_run and baseline_score is not None:
        raise ValueError("nothing to evaluate: every grid point equals the unpatched model")
    comp = compare(
        model,
        to_run,
        dev_tasks,
        output_folder=output_folder,
        include_baseline=baseline_score is None,  # a known unpatched score need not be measured again
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        show_progress=show_progress,
        print_table=False,
    )

    def mean_score(setting: str) -> float:
        return sum(comp.score(setting, t) for t in comp.task_names) / len(comp.task_names)

    baseline = mean_score(BASELINE) if baseline_score is None else float(baseline_score)
    curve = sorted((v, mean_score(names[v]) if names[v] in to_run else baseline) for v in points)
    # equal scores (to 1e-6: averaging leaves float noise) go to the value closest to 1, the smaller change
    best_value, best_score = max(curve, key=lambda vs: (round(vs[1], 6), -abs(vs[0] - 1.0)))
    first = next(iter(comp.results.values()))
    result = TuneResult(
        parameter=parameter,
        best_value=best_value,
        best_score=best_score,
        baseline_score=baseline,
        curve=curve,
        metric=first[comp.task_names[0]].main_score_name,
        tasks=comp.task_names,
        best_settings=dict(points[best_value]),
        comparison=comp,
    )
    if output_folder is not None:
        result.save_json(Path(output_folder) / "tuning.json")
        result.plot(Path(output_folder) / "tuning.png")
    return result


def tune_temperature(
    model: Any,
    dev_task: Any,
    grid: Sequence[float] = DEFAULT_GRID,
    *,
    base_settings: Mapping[str, Any] | None = None,
    output_folder: str | Path | None = None,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    show_progress: bool = True,
    baseline_score: float | None = None,
) -> TuneResult:
    """Score each fixed tau in `grid` (with `base_settings`, e.g. a window) on the dev task(s); return the best and the curve.

    Tune on a dev split that is not the test split (e.g. SciFact's train queries: `dev_retrieval_task`).
    `baseline_score`: the unpatched score on the same dev task(s), if already known (skips that run).
    """
    base = dict(base_settings or {})
    base.pop("temperature", None)
    points = {float(t): {**base, "temperature": float(t)} for t in grid}
    return _tune(
        model,
        dev_task,
        "temperature",
        points,
        output_folder=output_folder,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        show_progress=show_progress,
        baseline_score=baseline_score,
    )


def tune_length_adaptive(
    model: Any,
    dev_task: Any,
    *,
    short_length: int,
    long_length: int,
    long_grid: Sequence[float] = (0.7, 0.8, 0.9, 1.0),
    temperature: float = 1.0,
    base_settings: Mapping[str, Any] | None = None,
    output_folder: str | Path | None = None,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    show_progress: bool = True,
    baseline_score: float | None = None,
) -> TuneResult:
    """Tune `long_temperature` of the length-adaptive tau (short texts keep `temperature`)."""
    base = dict(base_settings or {})
    points = {}
    for t in long_grid:
        la = {"short_length": int(short_length), "long_length": int(long_length), "long_temperature": float(t)}
        points[float(t)] = {**base, "temperature": float(temperature), "length_adaptive": la}
    return _tune(
        model,
        dev_task,
        "long_temperature",
        points,
        output_folder=output_folder,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        show_progress=show_progress,
        baseline_score=baseline_score,
    )


def compare_fixed_vs_adaptive(
    model: Any,
    tasks: Sequence[Any] | Any,
    *,
    fixed_temperature: float,
    length_adaptive: Mapping[str, Any],
    temperature: float = 1.0,
    base_settings: Mapping[str, Any] | None = None,
    output_folder: str | Path | None = None,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    show_progress: bool = True,
    print_table: bool = True,
) -> Comparison:
    """Unpatched vs a fixed tau vs the length-adaptive tau on the same tasks (a `compare` with three settings)."""
    base = dict(base_settings or {})
    la = dict(length_adaptive)
    settings = {
        f"fixed tau={fixed_temperature:g}": {**base, "temperature": float(fixed_temperature)},
        f"adaptive tau={temperature:g}->{la['long_temperature']:g}": {
            **base,
            "temperature": float(temperature),
            "length_adaptive": la,
        },
    }
    return compare(
        model,
        settings,
        tasks,
        output_folder=output_folder,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        show_progress=show_progress,
        print_table=print_table,
    )


def subsample_corpus(data: RetrievalData, n_docs: int, seed: int = 0) -> RetrievalData:
    """Keep every judged document plus random others up to `n_docs` (a cheaper dev corpus; queries unchanged)."""
    judged = {d for docs in data.qrels.values() for d in docs}
    if n_docs >= len(data.corpus):
        return data
    others = sorted(set(data.corpus) - judged)
    rng = random.Random(seed)
    extra = rng.sample(others, max(0, n_docs - len(judged)))
    keep = judged | set(extra)
    corpus = {d: t for d, t in data.corpus.items() if d in keep}
    return RetrievalData(corpus=corpus, queries=data.queries, qrels=data.qrels, top_ranked=data.top_ranked, sources=data.sources)


def dev_retrieval_task(
    folder: str | Path,
    split: str = "train",
    *,
    corpus_size: int | None = None,
    max_queries: int | None = None,
    seed: int = 0,
    name: str | None = None,
):
    """A dev task from a BEIR folder's non-test qrels (e.g. SciFact train), optionally on a smaller corpus / fewer queries."""
    from .tasks import task_from_data

    if split == "test":
        raise ValueError("tuning on the test split would make the test score meaningless; use a train/dev split")
    data = load_beir(folder, split)
    if max_queries is not None and max_queries < len(data.queries):
        rng = random.Random(seed)
        keep = set(rng.sample(sorted(data.queries), max_queries))
        data = RetrievalData(
            corpus=data.corpus,
            queries={q: t for q, t in data.queries.items() if q in keep},
            qrels={q: d for q, d in data.qrels.items() if q in keep},
            sources=data.sources,
        )
    if corpus_size is not None:
        data = subsample_corpus(data, corpus_size, seed=seed)
    folder_name = Path(folder).resolve().name
    default = (
        f"{folder_name}-{split}-dev" + (f"-c{corpus_size}" if corpus_size else "") + (f"-q{max_queries}" if max_queries else "")
    )
    revision = f"{data.fingerprint()}-c{len(data.corpus)}-q{len(data.queries)}-s{seed}"
    return task_from_data(data, name or default, split=split, revision=revision)
