"""Ranking metrics (nDCG@k, MRR@k, MAP, Recall@k) as an `evaluate` metric, computed by pytrec_eval.

This file is self-contained so that `evaluate.load("<path to this file>")` can load it on its own:

    metric = evaluate.load(".../hf_sparse_tempscale/evaluation/metrics.py")   # or load_ranking_metric()
    metric.compute(predictions=scores, references=grades, query_ids=qids, k_values=[10])

In a `transformers.Trainer`, pass `compute_metrics=ranking_compute_metrics(eval_query_ids)`: the Trainer keeps
the evaluation set's order, so the i-th prediction belongs to the i-th query id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import datasets
import evaluate
import numpy as np
import pytrec_eval

_DESCRIPTION = """Ranking metrics over (query id, score, graded relevance) triples, one per candidate document:
ndcg@k (graded gains, trec_eval's ndcg_cut), mrr@k (reciprocal rank of the first relevant document within the
top k), map (mean average precision over the whole list) and recall@k. Documents are ranked per query by
descending score. Queries without any relevant document are skipped (as in mteb). A document counts as relevant
for MRR/MAP/recall when its grade >= relevance_level."""

_KWARGS = """
Args:
    predictions: scores, higher = more relevant (one per candidate).
    references: graded relevance labels (integers >= 0).
    query_ids: the query each candidate belongs to.
    k_values: cut-offs for ndcg/mrr/recall (default [10]).
    relevance_level: minimum grade counted as relevant for mrr/map/recall (default 1).
Returns:
    {"ndcg@k", "mrr@k", "recall@k" for each k, "map", "num_queries"}
"""


def compute_ranking_metrics(
    predictions: Sequence[float],
    references: Sequence[float],
    query_ids: Sequence[Any],
    k_values: Sequence[int] = (10,),
    relevance_level: int = 1,
) -> dict[str, float]:
    """The metric itself (also usable without `evaluate`)."""
    if not (len(predictions) == len(references) == len(query_ids)):
        raise ValueError(
            f"predictions, references and query_ids must have the same length, got {len(predictions)}, {len(references)}, {len(query_ids)}"
        )
    k_values = sorted({int(k) for k in k_values})
    if not k_values or k_values[0] < 1:
        raise ValueError(f"k_values must be integers >= 1, got {k_values}")
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for i, (score, grade, qid) in enumerate(zip(predictions, references, query_ids)):
        grade_f = float(grade)
        if not grade_f.is_integer() or grade_f < 0:
            raise ValueError(f"references must be integer grades >= 0, got {grade!r} at position {i}")
        if not np.isfinite(float(score)):
            raise ValueError(f"prediction at position {i} is not finite: {score!r}")
        q, d = str(qid), f"d{i}"
        qrels.setdefault(q, {})[d] = int(grade_f)
        run.setdefault(q, {})[d] = float(score)
    keep = {q for q, docs in qrels.items() if any(g >= relevance_level for g in docs.values())}
    if not keep:
        raise ValueError("no query has a relevant document: ranking metrics are undefined")
    qrels = {q: qrels[q] for q in keep}
    run = {q: run[q] for q in keep}

    measures = {"map", *(f"ndcg_cut.{k}" for k in k_values), *(f"recall.{k}" for k in k_values)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=relevance_level).evaluate(run)
    out: dict[str, float] = {}
    for k in k_values:
        out[f"ndcg@{k}"] = float(np.mean([v[f"ndcg_cut_{k}"] for v in per_query.values()]))
        out[f"recall@{k}"] = float(np.mean([v[f"recall_{k}"] for v in per_query.values()]))
        # MRR@k: reciprocal rank on each query's top-k list (pytrec_eval's recip_rank has no cut-off);
        # ties are ordered as trec_eval does (score, then document id, both descending)
        top = {q: dict(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k]) for q, docs in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=relevance_level).evaluate(top)
        out[f"mrr@{k}"] = float(np.mean([rr[q]["recip_rank"] if q in rr else 0.0 for q in run]))
    out["map"] = float(np.mean([v["map"] for v in per_query.values()]))
    out["num_queries"] = len(per_query)
    return out


class RankingMetrics(evaluate.Metric):
    """nDCG@k, MRR@k, MAP and Recall@k over scored candidates grouped by query id (pytrec_eval)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("float64"),
                    "references": datasets.Value("float64"),
                    "query_ids": datasets.Value("string"),
                }
            ),
            reference_urls=["https://github.com/cvangysel/pytrec_eval"],
        )

    def _compute(self, predictions, references, query_ids, k_values=(10,), relevance_level=1):
        return compute_ranking_metrics(predictions, references, query_ids, k_values=k_values, relevance_level=relevance_level)


def load_ranking_metric(**kwargs: Any) -> evaluate.EvaluationModule:
    """`evaluate.load` of this very file (no hub access)."""
    return evaluate.load(__file__, **kwargs)


def scores_from_logits(predictions: Any) -> np.ndarray:
    """One relevance score per example from model outputs: (N,), (N, 1) logits, or (N, 2) logits (uses class 1 - class 0)."""
    if isinstance(predictions, tuple):  # some models return (logits, hidden_states, ...)
        predictions = predictions[0]
    arr = np.asarray(predictions, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2 and arr.shape[1] == 2:
        arr = arr[:, 1] - arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"cannot turn predictions of shape {arr.shape} into one score per example")
    return arr


def ranking_compute_metrics(
    query_ids: Sequence[Any],
    k_values: Sequence[int] = (10,),
    relevance_level: int = 1,
    prefix: str = "",
) -> Callable[[Any], dict[str, float]]:
    """A `compute_metrics` for `transformers.Trainer` / sentence-transformers' CrossEncoderTrainer.

    `query_ids` lists the query of each evaluation example in evaluation-set order; labels are graded relevances.
    """
    qids = [str(q) for q in query_ids]

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        predictions, labels = eval_pred[0], eval_pred[1]
        scores = scores_from_logits(predictions)
        labels = np.asarray(labels).reshape(-1)
        if len(scores) != len(qids):
            raise ValueError(f"got {len(scores)} predictions for {len(qids)} query ids: the evaluation set and query_ids differ")
        result = compute_ranking_metrics(scores, labels, qids, k_values=k_values, relevance_level=relevance_level)
        return {f"{prefix}{k}": v for k, v in result.items()}

    return compute_metrics
