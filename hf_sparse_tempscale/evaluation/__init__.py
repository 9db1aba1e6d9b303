"""Evaluation: MTEB-style retrieval / reranking / STS on local data, patch comparisons, length-collapse
diagnostics, temperature tuning, synthetic long-context tasks and the offline demo.

    from hf_sparse_tempscale.evaluation import evaluate_retrieval, evaluate_reranking, compare

Names are imported lazily (mteb is slow to import) so the CLI's `--help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataFormatError": "data",
    "RetrievalData": "data",
    "default_data_root": "data",
    "load_beir": "data",
    "load_candidates": "data",
    "load_corpus": "data",
    "load_qrels": "data",
    "load_queries": "data",
    "load_run": "data",
    "load_sts_pairs": "data",
    "load_texts": "data",
    "resolve_task": "tasks",
    "retrieval_task": "tasks",
    "reranking_task": "tasks",
    "sts_task": "tasks",
    "task_from_data": "tasks",
    "EvalResult": "run",
    "evaluate_tasks": "run",
    "evaluate_retrieval": "run",
    "evaluate_reranking": "run",
    "load_model": "run",
    "Comparison": "comparison",
    "compare": "comparison",
    "compute_ranking_metrics": "metrics",
    "load_ranking_metric": "metrics",
    "ranking_compute_metrics": "metrics",
    "CollapseReport": "diagnostics",
    "embedding_stats": "diagnostics",
    "length_collapse": "diagnostics",
    "TuneResult": "temperature",
    "tune_temperature": "temperature",
    "tune_length_adaptive": "temperature",
    "compare_fixed_vs_adaptive": "temperature",
    "dev_retrieval_task": "temperature",
    "synthetic_task": "synthetic",
    "synthetic_data": "synthetic",
    "run_demo": "demo",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
