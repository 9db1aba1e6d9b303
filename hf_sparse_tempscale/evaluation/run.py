"""Evaluate a SentenceTransformer (retrieval, STS) or CrossEncoder (reranking) on tasks through mteb.

Scores come from mteb (pytrec_eval for ranking metrics); each task's result is written as mteb's own result JSON
(`<output_folder>/<task name>.json`, readable with `mteb.TaskResult.from_disk`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mteb.abstasks import AbsTask

from .tasks import resolve_task

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """One task's scores: the main score (mean over subsets) and mteb's full result."""

    task_name: str
    task_type: str
    main_score_name: str
    main_score: float
    subset_scores: dict[str, float]  # hf subset -> main score (one entry "default" for single-subset tasks)
    scores: dict[str, list[dict[str, Any]]]  # mteb's scores: split -> one dict of metrics per subset
    task_result: Any = field(repr=False, default=None)  # mteb.TaskResult
    path: Path | None = None

    def metric(self, name: str, subset: str | None = None) -> float:
        """Any mteb metric (e.g. "ndcg_at_10", "mrr_at_10", "cosine_spearman"), averaged over subsets unless one is named."""
        values = [s[name] for split in self.scores.values() for s in split if subset is None or s["hf_subset"] == subset]
        if not values:
            raise KeyError(f"no metric {name!r} for subset {subset!r} in {self.task_name}")
        return float(sum(values) / len(values))

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task_name,
            "type": self.task_type,
            "main_score_name": self.main_score_name,
            "main_score": self.main_score,
            "subset_scores": self.subset_scores,
            "path": str(self.path) if self.path else None,
        }


def _is_cross_encoder(model: Any) -> bool:
    from sentence_transformers import CrossEncoder

    return isinstance(model, CrossEncoder)


@contextlib.contextmanager
def max_length(model: Any, length: int | None) -> Iterator[None]:
    """Temporarily set how many tokens the model reads (SentenceTransformer.max_seq_length / CrossEncoder.max_length)."""
    if length is None:
        yield
        return
    attr = "max_length" if _is_cross_encoder(model) else "max_seq_length"
    if not hasattr(model, attr):
        raise TypeError(f"cannot set a maximum length on {type(model).__name__}")
    old = getattr(model, attr)
    setattr(model, attr, int(length))
    try:
        yield
    finally:
        setattr(model, attr, old)


def _check_length(model: Any, length: int | None, task_name: str) -> None:
    """Fail clearly (not with an index error deep in the embeddings) when a model cannot read `length` tokens."""
    if length is None:
        return
    from .synthetic import model_max_positions

    try:
        limit = model_max_positions(model)
    except TypeError:  # not a transformers-based model: nothing to check
        return
    if limit is not None and length > limit:
        raise ValueError(f"{task_name} needs {length} tokens but the model has only {limit} positions; use shorter lengths")


def model_kind(path_or_id: str) -> str:
    """ "cross" for a cross-encoder checkpoint folder, else "bi" (hub ids default to "bi": pass kind= to override)."""
    folder = Path(path_or_id)
    st_cfg = folder / "config_sentence_transformers.json"
    if st_cfg.is_file():
        kind = json.loads(st_cfg.read_text()).get("model_type", "")
        if kind == "CrossEncoder":
            return "cross"
        if kind:
            return "bi"
    if (folder / "modules.json").is_file():
        return "bi"
    cfg = folder / "config.json"
    if cfg.is_file():
        archs = json.loads(cfg.read_text()).get("architectures") or []
        if any(a.endswith("ForSequenceClassification") for a in archs):
            return "cross"
    return "bi"


def load_model(path_or_id: str, kind: str = "auto", device: str | None = None, **kwargs: Any) -> Any:
    """A SentenceTransformer ("bi") or CrossEncoder ("cross") from a folder or hub id; saved patch settings are re-applied."""
    from hf_sparse_tempscale import load_cross_encoder, load_sentence_transformer

    if kind == "auto":
        kind = model_kind(path_or_id)
    if kind == "cross":
        return load_cross_encoder(path_or_id, device=device, **kwargs)
    if kind == "bi":
        return load_sentence_transformer(path_or_id, device=device, **kwargs)
    raise ValueError(f"kind must be 'auto', 'bi' or 'cross', got {kind!r}")


def _result_from_task_result(task: AbsTask, tr: Any, path: Path | None) -> EvalResult:
    subset_scores: dict[str, list[float]] = {}
    for split_scores in tr.scores.values():
        for s in split_scores:
            subset_scores.setdefault(s["hf_subset"], []).append(float(s["main_score"]))
    per_subset = {k: sum(v) / len(v) for k, v in subset_scores.items()}
    return EvalResult(
        task_name=task.metadata.name,
        task_type=task.metadata.type,
        main_score_name=task.metadata.main_score,
        main_score=float(tr.get_score()),
        subset_scores=per_subset,
        scores={k: list(v) for k, v in tr.scores.items()},
        task_result=tr,
        path=path,
    )


def evaluate_tasks(
    model: Any,
    tasks: Sequence[AbsTask | str | Path] | AbsTask | str | Path,
    *,
    output_folder: str | Path | None = None,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    show_progress: bool = True,
    prediction_folder: str | Path | None = None,
) -> list[EvalResult]:
    """Run mteb on each task with the model as it is now (patched or not) and return one `EvalResult` per task.

    Nothing is read from or written to mteb's global results cache, so patched and unpatched runs of the same
    checkpoint never collide; results go to `output_folder` only.
    """
    import mteb

    if isinstance(tasks, (str, Path, AbsTask)):
        tasks = [tasks]
    resolved = [resolve_task(t) for t in tasks]
    out = Path(output_folder) if output_folder is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results = []
    encode_kwargs = {"batch_size": batch_size, "show_progress_bar": show_progress}
    for task in resolved:
        # synthetic long-context tasks carry the length their needles need (`max_length`); others use the model's own
        length = max_seq_length if max_seq_length is not None else getattr(task, "max_length", None)
        _check_length(model, length, task.metadata.name)
        with max_length(model, length):
            if not task.data_loaded:
                task.load_data()  # loaded once, kept for later calls (compare / tune reuse the task)
            model_result = mteb.evaluate(
                model,
                task,
                cache=None,
                overwrite_strategy="always",
                encode_kwargs=dict(encode_kwargs),
                show_progress_bar=show_progress,
                co2_tracker=False,
                prediction_folder=prediction_folder,
            )
            if model_result.exceptions:
                raise RuntimeError(f"mteb failed on {task.metadata.name}: {model_result.exceptions[0].exception}")
            tr = model_result.task_results[0]
            path = None
            if out is not None:
                path = out / f"{task.metadata.name}.json"
                tr.to_disk(path)
            results.append(_result_from_task_result(task, tr, path))
    return results


def evaluate_retrieval(
    model: Any,
    task_or_path: AbsTask | str | Path,
    *,
    split: str = "test",
    qrels_path: str | Path | None = None,
    unknown_docs: str = "error",
    output_folder: str | Path | None = None,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    show_progress: bool = True,
) -> EvalResult:
    """Dense retrieval with an embedding model: a BEIR folder (`split` picks qrels/<split>.tsv), an mteb task or a task name."""
    task = resolve_task(task_or_path, split=split, qrels_path=qrels_path, unknown_docs=unknown_docs)
    return evaluate_tasks(
        model,
        [task],
        output_folder=output_folder,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        show_progress=show_progress,
    )[0]


def evaluate_reranking(
    model: Any,
    candidates_or_task: AbsTask | str | Path,
    *,
    run_path: str | Path | None = None,
    qrels_path: str | Path | None = None,
    top_k: int | None = None,
    unknown_docs: str | None = None,
    split: str = "test",
    output_folder: str | Path | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    show_progress: bool = True,
) -> EvalResult:
    """Rerank fixed candidate lists with a CrossEncoder (or an embedding model) and score with mteb.

    `candidates_or_task`: a candidates jsonl (`trec-dl-2019-passage/candidates/BM25_top100.jsonl`), a BEIR folder
    together with `run_path` (a TREC run), or an mteb task. `qrels_path` replaces the candidates' labels (e.g. the
    complete official qrels); `top_k` reranks only each list's first k. `unknown_docs`: judged documents without text
    count as never retrieved ("keep", default for candidates files), are ignored ("drop") or raise ("error", default
    for BEIR folders).
    """
    from .tasks import reranking_task

    if isinstance(candidates_or_task, AbsTask):
        task = candidates_or_task
    elif Path(candidates_or_task).exists():
        task = reranking_task(
            candidates_or_task, run_path=run_path, qrels_path=qrels_path, top_k=top_k, split=split, unknown_docs=unknown_docs
        )
    else:
        task = resolve_task(candidates_or_task, split=split)
    return evaluate_tasks(
        model, [task], output_folder=output_folder, batch_size=batch_size, max_seq_length=max_length, show_progress=show_progress
    )[0]
