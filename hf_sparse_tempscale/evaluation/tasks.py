"""mteb tasks over local data (BEIR folders, candidate files, runs, STS pairs), and name/path resolution.

Each local task is a subclass of mteb's own `AbsTaskRetrieval` / `AbsTaskSTS` whose `load_data` reads our files
instead of the hub, so mteb computes the metrics (pytrec_eval) and writes its usual result JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from mteb.abstasks import AbsTask
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

from .data import DataFormatError, RetrievalData, file_fingerprint, load_beir, load_candidates, load_sts_pairs

DEFAULT_K_VALUES = (1, 3, 5, 10, 20, 100, 1000)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "task"


def _metadata(
    name: str,
    task_type: str,
    main_score: str,
    split: str,
    revision: str,
    description: str,
    subsets: Sequence[str] | None = None,
    language: str = "eng-Latn",
) -> TaskMetadata:
    eval_langs: Any = {s: [language] for s in subsets} if subsets else [language]
    return TaskMetadata(
        name=name,
        description=description,
        dataset={"path": f"local/{name}", "revision": revision},
        type=task_type,
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=eval_langs,
        main_score=main_score,
        sample_creation="found",
    )


class LocalRetrievalTask(AbsTaskRetrieval):
    """Base of retrieval / reranking tasks built by `task_from_data`; each gets its own subclass + metadata.

    (mteb restores the class-level metadata when it unloads data, so metadata must live on the class.)
    """

    def __init__(self, data: Mapping[str, RetrievalData], split: str, k_values: Sequence[int] | None = None, **kwargs: Any):
        self._local_data = dict(data)
        self._local_split = split
        if k_values is not None:
            self.k_values = tuple(sorted({int(k) for k in k_values}))
        super().__init__(**kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {}
        for subset, data in self._local_data.items():
            corpus = Dataset.from_dict(
                {
                    "id": list(data.corpus),
                    "title": [d["title"] for d in data.corpus.values()],
                    "text": [d["text"] for d in data.corpus.values()],
                }
            )
            queries = Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())})
            self.dataset[subset] = {
                self._local_split: {
                    "corpus": corpus,
                    "queries": queries,
                    "relevant_docs": {q: dict(d) for q, d in data.qrels.items()},
                    "top_ranked": {q: list(d) for q, d in data.top_ranked.items()} if data.top_ranked is not None else None,
                }
            }
        self.data_loaded = True


class LocalSTSTask(AbsTaskSTS):
    """STS task over a local pairs file (sentence1, sentence2, score)."""

    def __init__(self, rows: list[dict[str, Any]], split: str, **kwargs: Any):
        self._local_rows = rows
        self._local_split = split
        super().__init__(**kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {"default": {self._local_split: Dataset.from_list(self._local_rows)}}
        self.data_loaded = True


def task_from_data(
    data: RetrievalData | Mapping[str, RetrievalData],
    name: str,
    *,
    task_type: str | None = None,
    split: str = "test",
    main_score: str = "ndcg_at_10",
    k_values: Sequence[int] | None = None,
    description: str | None = None,
    revision: str | None = None,
) -> LocalRetrievalTask:
    """An mteb retrieval task ("Retrieval") or, when candidates are given, a reranking task ("Reranking").

    `data` may map subset names (e.g. lengths) to data: mteb then scores each subset and averages the main score.
    """
    subsets = dict(data) if isinstance(data, Mapping) else {"default": data}
    if not subsets:
        raise ValueError("no data")
    reranking = [d.top_ranked is not None for d in subsets.values()]
    if len(set(reranking)) != 1:
        raise ValueError("either all subsets have candidate lists (reranking) or none (retrieval)")
    if task_type is None:
        task_type = "Reranking" if reranking[0] else "Retrieval"
    if task_type not in ("Retrieval", "Reranking"):
        raise ValueError(f"task_type must be 'Retrieval' or 'Reranking', got {task_type!r}")
    if task_type == "Reranking" and not reranking[0]:
        raise ValueError("a Reranking task needs candidate lists (a run file or a candidates file)")
    if revision is None:
        revision = "-".join(sorted({d.fingerprint() for d in subsets.values()}))[:40]
    metadata = _metadata(
        name,
        task_type,
        main_score,
        split,
        revision,
        description
        or f"Local {task_type.lower()} task from {', '.join(sorted({s for d in subsets.values() for s in d.sources})) or 'memory'}",
        subsets=list(subsets) if list(subsets) != ["default"] else None,
    )
    cls = type(_safe_name(name), (LocalRetrievalTask,), {"metadata": metadata})
    return cls(subsets, split, k_values=k_values)


def retrieval_task(
    folder: str | Path,
    split: str = "test",
    *,
    name: str | None = None,
    qrels_path: str | Path | None = None,
    unknown_docs: str = "error",
    main_score: str = "ndcg_at_10",
    k_values: Sequence[int] | None = None,
) -> LocalRetrievalTask:
    """Dense retrieval over a whole BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`)."""
    data = load_beir(folder, split, qrels_path=qrels_path, unknown_docs=unknown_docs)
    return task_from_data(
        data, name or _safe_name(Path(folder).resolve().name), split=split, main_score=main_score, k_values=k_values
    )


def reranking_task(
    source: str | Path,
    *,
    run_path: str | Path | None = None,
    qrels_path: str | Path | None = None,
    split: str = "test",
    top_k: int | None = None,
    name: str | None = None,
    unknown_docs: str | None = None,
    main_score: str = "ndcg_at_10",
    k_values: Sequence[int] | None = None,
) -> LocalRetrievalTask:
    """Reranking of fixed candidate lists: a candidates jsonl, or a BEIR folder plus a TREC run file.

    With a candidates file, judgements come from the candidates' labels unless `qrels_path` is given; judged documents
    outside the lists then count as never retrieved (unknown_docs="keep", as trec_eval).
    """
    src = Path(source)
    if src.is_dir():
        if run_path is None:
            raise ValueError(f"{src} is a BEIR folder: reranking it needs a TREC run file (run_path=...)")
        data = load_beir(src, split, qrels_path=qrels_path, run_path=run_path, top_k=top_k, unknown_docs=unknown_docs or "error")
        default_name = f"{src.resolve().name}-{Path(run_path).stem}"
    else:
        if run_path is not None:
            raise ValueError("run_path only goes with a BEIR folder, not with a candidates file")
        data = load_candidates(src, qrels_path=qrels_path, top_k=top_k, unknown_docs=unknown_docs or "keep")
        parent = src.resolve().parent
        owner = parent.parent.name if parent.name == "candidates" else parent.name
        default_name = f"{owner}-{src.stem}"
    if top_k is not None:
        default_name += f"-top{top_k}"
    return task_from_data(
        data, name or _safe_name(default_name), task_type="Reranking", split=split, main_score=main_score, k_values=k_values
    )


def sts_task(
    path: str | Path,
    *,
    name: str | None = None,
    split: str = "test",
    min_score: float = 0.0,
    max_score: float = 5.0,
    main_score: str = "cosine_spearman",
) -> LocalSTSTask:
    """Semantic similarity over a pairs jsonl (e.g. stsbenchmark/test.jsonl); main score: Spearman of cosine."""
    rows = load_sts_pairs(path)
    p = Path(path)
    default = f"{p.resolve().parent.name}-{p.stem}"
    revision = file_fingerprint([str(p)])
    metadata = _metadata(name or _safe_name(default), "STS", main_score, split, revision, f"Local STS task from {p}")
    cls = type(
        _safe_name(name or default), (LocalSTSTask,), {"metadata": metadata, "min_score": min_score, "max_score": max_score}
    )
    return cls(rows, split)


def _peek_jsonl(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if raw.strip():
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as err:
                    raise DataFormatError(path, lineno, f"malformed JSON ({err.msg})") from None
                if not isinstance(obj, dict):
                    raise DataFormatError(path, lineno, "expected a JSON object")
                return obj
    raise DataFormatError(path, None, "empty file")


def resolve_task(
    spec: str | Path | AbsTask,
    *,
    split: str | None = None,
    run_path: str | Path | None = None,
    qrels_path: str | Path | None = None,
    top_k: int | None = None,
    unknown_docs: str | None = None,
    **synthetic_kwargs: Any,
) -> AbsTask:
    """Turn a task spec into an mteb task.

    - an `AbsTask` is returned as is;
    - a BEIR folder -> retrieval (or reranking with `run_path`);
      `unknown_docs` (error | keep | drop) says what to do with judged documents missing from the corpus / lists;
    - a `.jsonl` of candidate lists -> reranking; a `.jsonl` of STS pairs -> STS;
    - `synthetic:passkey` / `synthetic:needle` -> the generated long-context tasks (kwargs go to `synthetic_task`);
    - anything else is looked up as a registered MTEB task name (its data then comes from the hub).
    """
    if isinstance(spec, AbsTask):
        return spec
    text = str(spec)
    if text.startswith("synthetic:"):
        from .synthetic import synthetic_task

        return synthetic_task(text.split(":", 1)[1], **synthetic_kwargs)
    path = Path(text).expanduser()
    if path.is_dir():
        if run_path is not None:
            return reranking_task(
                path, run_path=run_path, qrels_path=qrels_path, split=split or "test", top_k=top_k, unknown_docs=unknown_docs
            )
        return retrieval_task(path, split or "test", qrels_path=qrels_path, unknown_docs=unknown_docs or "error")
    if path.is_file():
        if path.suffix != ".jsonl":
            raise DataFormatError(
                path, None, "a task file must be a .jsonl of candidate lists or STS pairs (or pass a BEIR folder)"
            )
        first = _peek_jsonl(path)
        if "candidates" in first:
            return reranking_task(path, qrels_path=qrels_path, split=split or "test", top_k=top_k, unknown_docs=unknown_docs)
        if "sentence1" in first and "sentence2" in first:
            return sts_task(path, split=split or "test")
        raise DataFormatError(
            path, 1, "cannot tell the task type: expected a 'candidates' list or 'sentence1'/'sentence2' fields"
        )
    if any(sep in text for sep in ("/", "\\")) or text.endswith((".jsonl", ".tsv", ".json")):
        raise DataFormatError(path, None, "task path not found")
    import mteb

    try:
        tasks = mteb.get_tasks(tasks=[text])
    except KeyError as err:
        raise ValueError(
            f"unknown task {text!r}: it is neither an existing path (BEIR folder, candidates/STS .jsonl) nor a registered MTEB "
            f"task name nor synthetic:passkey / synthetic:needle ({err.args[0] if err.args else err})"
        ) from None
    if len(tasks) != 1:
        raise ValueError(f"task name {text!r} matched {len(tasks)} MTEB tasks; use the exact name")
    task = tasks[0]
    if split is not None:
        task = task.filter_eval_splits([split])
    return task
