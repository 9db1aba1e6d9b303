"""`compare`: one model, unpatched and under several patch settings, on several tasks -> a table with deltas."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .run import EvalResult, evaluate_tasks
from .tasks import resolve_task

BASELINE = "unpatched"


def setting_folder(name: str) -> str:
    """A filesystem-safe folder name for a setting (each setting's results live apart)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).strip("_") or "setting"


def validate_settings(settings: Mapping[str, Mapping[str, Any] | None], baseline: str = BASELINE) -> dict[str, dict | None]:
    """Check every setting builds a valid `SparseTempScaleConfig` before any (slow) evaluation starts."""
    from hf_sparse_tempscale import SparseTempScaleConfig

    checked: dict[str, dict | None] = {}
    folders: dict[str, str] = {}
    for name, cfg in settings.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"setting names must be non-empty strings, got {name!r}")
        folder = setting_folder(name)
        if folder in folders:
            raise ValueError(f"settings {folders[folder]!r} and {name!r} would share the output folder {folder!r}")
        folders[folder] = name
        if cfg is None:
            checked[name] = None
            continue
        if not isinstance(cfg, Mapping):
            raise TypeError(f"setting {name!r} must be a dict of patch settings, got {type(cfg).__name__}")
        try:
            SparseTempScaleConfig(**dict(cfg))
        except (TypeError, ValueError) as err:
            raise ValueError(f"setting {name!r} is not a valid patch config: {err}") from err
        checked[name] = dict(cfg)
    if baseline in checked and checked[baseline] is not None:
        raise ValueError(f"the setting name {baseline!r} is reserved for the unpatched model")
    return checked


@dataclass
class Comparison:
    """Results of `compare`: results[setting][task] -> EvalResult; the first setting is the baseline."""

    settings: dict[str, dict | None]
    results: dict[str, dict[str, EvalResult]]
    baseline: str = BASELINE
    output_folder: Path | None = None
    task_names: list[str] = field(default_factory=list)

    def score(self, setting: str, task: str, subset: str | None = None) -> float:
        r = self.results[setting][task]
        return r.main_score if subset is None else r.subset_scores[subset]

    def rows(self, by_subset: bool = True) -> list[dict[str, Any]]:
        """One row per task (and per subset for multi-subset tasks): main score of each setting and its delta."""
        rows = []
        names = list(self.settings)
        for task in self.task_names:
            base = self.results[names[0]][task]
            subsets = list(base.subset_scores) if by_subset and len(base.subset_scores) > 1 else []
            for subset in [*subsets, None]:
                row: dict[str, Any] = {
                    "task": task,
                    "subset": subset if subset is not None else ("mean" if subsets else ""),
                    "metric": base.main_score_name,
                    "scores": {},
                    "deltas": {},
                }
                ref = self.score(self.baseline, task, subset) if self.baseline in self.results else None
                for name in names:
                    value = self.score(name, task, subset)
                    row["scores"][name] = value
                    if ref is not None and name != self.baseline:
                        row["deltas"][name] = value - ref
                rows.append(row)
        return rows

    def to_markdown(self, digits: int = 4) -> str:
        names = list(self.settings)
        header = ["task", "subset", "metric"] + [n if n == self.baseline else f"{n} (Δ)" for n in names]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows():
            cells = [row["task"], row["subset"], row["metric"]]
            for n in names:
                v = row["scores"][n]
                cell = f"{v:.{digits}f}"
                if n in row["deltas"]:
                    cell += f" ({row['deltas'][n]:+.{digits}f})"
                cells.append(cell)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def best(self, task: str | None = None) -> str:
        """Setting with the highest main score on `task` (or the mean over tasks); ties keep the earlier setting."""
        tasks = [task] if task is not None else self.task_names

        def mean(name: str) -> float:
            return sum(self.score(name, t) for t in tasks) / len(tasks)

        return max(self.settings, key=mean)

    def plot_subsets(self, path: str | Path) -> Path:
        """PNG: per task, the main score of each setting across the task's subsets (e.g. lengths)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tasks = self.task_names
        fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            first = self.results[next(iter(self.settings))][task]
            subsets = list(first.subset_scores)
            for name in self.settings:
                ax.plot(range(len(subsets)), [self.score(name, task, s) for s in subsets], marker="o", label=name)
            ax.set_xticks(range(len(subsets)), subsets, rotation=30)
            ax.set_ylabel(first.main_score_name)
            ax.set_title(task)
            ax.grid(True, alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "settings": self.settings,
            "tasks": self.task_names,
            "rows": self.rows(),
            "results": {s: {t: r.to_dict() for t, r in per.items()} for s, per in self.results.items()},
        }

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "comparison.json").write_text(json.dumps(self.to_dict(), indent=2))
        (folder / "comparison.md").write_text(self.to_markdown() + "\n")
        return folder / "comparison.json"


def compare(
    model: Any,
    settings: Mapping[str, Mapping[str, Any] | None],
    tasks: Sequence[Any] | Any,
    *,
    output_folder: str | Path | None = None,
    include_baseline: bool = True,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    show_progress: bool = True,
    print_table: bool = True,
) -> Comparison:
    """Evaluate `model` unpatched (the baseline) and under each `settings[name]` (kwargs of `patched(model, ...)`).

    A setting given as None means unpatched. Results of each setting go to `<output_folder>/<setting>/` so runs
    never overwrite each other; the table (`comparison.md`) and all scores (`comparison.json`) go to `output_folder`.
    The model's own patch state is restored afterwards.
    """
    from hf_sparse_tempscale import get_patch_config, patch_model, patched, unpatch_model

    all_settings: dict[str, Mapping[str, Any] | None] = {BASELINE: None} if include_baseline else {}
    all_settings.update(settings)
    checked = validate_settings(all_settings)
    if not checked:
        raise ValueError("nothing to compare: no settings and include_baseline=False")
    if not isinstance(tasks, (list, tuple)):
        tasks = [tasks]
    resolved = [resolve_task(t) for t in tasks]
    names = [t.metadata.name for t in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"two tasks share a name: {names}")
    out = Path(output_folder) if output_folder is not None else None

    previous = get_patch_config(model)
    results: dict[str, dict[str, EvalResult]] = {}
    try:
        if previous is not None:  # the baseline must be the plain checkpoint
            unpatch_model(model)
        for name, cfg in tqdm(checked.items(), desc="settings", disable=not show_progress):
            folder = out / setting_folder(name) if out is not None else None
            kwargs = {
                "batch_size": batch_size,
                "max_seq_length": max_seq_length,
                "show_progress": show_progress,
                "output_folder": folder,
            }
            if cfg is None:
                evals = evaluate_tasks(model, resolved, **kwargs)
            else:
                with patched(model, **cfg):
                    evals = evaluate_tasks(model, resolved, **kwargs)
            results[name] = {r.task_name: r for r in evals}
            if folder is not None:
                (folder / "setting.json").write_text(json.dumps({"name": name, "patch": cfg}, indent=2))
    finally:
        if previous is not None:
            patch_model(model, previous)
        else:
            unpatch_model(model)
    comparison = Comparison(
        settings=checked,
        results=results,
        baseline=BASELINE if include_baseline else next(iter(checked)),
        output_folder=out,
        task_names=names,
    )
    if out is not None:
        comparison.save(out)
    if print_table:
        print(comparison.to_markdown())
    return comparison
