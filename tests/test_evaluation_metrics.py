"""The `evaluate` ranking metric: against a brute-force reference, through evaluate.load(path) and as Trainer compute_metrics."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from evaluation_fixtures import DATA_ROOT

from hf_sparse_tempscale.evaluation import metrics as metrics_module
from hf_sparse_tempscale.evaluation.metrics import compute_ranking_metrics, load_ranking_metric, ranking_compute_metrics


def _reference(preds, refs, qids, k):
    """Textbook definitions, written independently of pytrec_eval (linear gains, log2 discounts)."""
    by_q: dict[str, list[tuple[float, int, int]]] = {}
    for i, (p, r, q) in enumerate(zip(preds, refs, qids)):
        by_q.setdefault(q, []).append((p, int(r), i))
    ndcg, mrr, ap, rec = [], [], [], []
    for rows in by_q.values():
        if not any(r > 0 for _, r, _ in rows):
            continue
        ranked = [r for _, r, _ in sorted(rows, key=lambda x: -x[0])]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(ranked[:k]))
        ideal = sorted((r for _, r, _ in rows), reverse=True)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        ndcg.append(dcg / idcg)
        first = next((i for i, g in enumerate(ranked[:k]) if g > 0), None)
        mrr.append(0.0 if first is None else 1 / (first + 1))
        n_rel = sum(g > 0 for g in ranked)
        hits, precisions = 0, []
        for i, g in enumerate(ranked):
            if g > 0:
                hits += 1
                precisions.append(hits / (i + 1))
        ap.append(sum(precisions) / n_rel)
        rec.append(sum(g > 0 for g in ranked[:k]) / n_rel)
    return {
        f"ndcg@{k}": np.mean(ndcg),
        f"mrr@{k}": np.mean(mrr),
        "map": np.mean(ap),
        f"recall@{k}": np.mean(rec),
        "num_queries": len(ndcg),
    }


def _random_case(seed, n_queries=12, depth=15):
    rng = random.Random(seed)
    preds, refs, qids = [], [], []
    for q in range(n_queries):
        for _ in range(depth):
            preds.append(rng.random())  # continuous scores: no ties
            refs.append(rng.choice([0, 0, 0, 1, 2, 3]))
            qids.append(f"q{q}")
    return preds, refs, qids


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_matches_reference(seed, k):
    preds, refs, qids = _random_case(seed)
    got = compute_ranking_metrics(preds, refs, qids, k_values=[k])
    want = _reference(preds, refs, qids, k)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-4), key


def test_queries_without_relevant_docs_are_skipped():
    preds, refs, qids = _random_case(3, n_queries=4)
    all_zero = compute_ranking_metrics(preds + [0.5, 0.1], refs + [0, 0], qids + ["empty", "empty"])
    assert all_zero == compute_ranking_metrics(preds, refs, qids)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        compute_ranking_metrics([1.0], [1, 0], ["a", "a"])
    with pytest.raises(ValueError, match="integer grades"):
        compute_ranking_metrics([1.0, 0.5], [0.5, 1], ["a", "a"])
    with pytest.raises(ValueError, match="no query has a relevant document"):
        compute_ranking_metrics([1.0, 0.5], [0, 0], ["a", "a"])


def test_evaluate_load_by_path_and_batches():
    import evaluate

    preds, refs, qids = _random_case(4)
    want = compute_ranking_metrics(preds, refs, qids, k_values=[3, 10])
    metric = evaluate.load(metrics_module.__file__)
    assert metric.compute(predictions=preds, references=refs, query_ids=qids, k_values=[3, 10]) == pytest.approx(want)
    helper = load_ranking_metric()
    for i in range(0, len(preds), 7):  # streamed in batches, as during evaluation loops
        helper.add_batch(predictions=preds[i : i + 7], references=refs[i : i + 7], query_ids=qids[i : i + 7])
    assert helper.compute(k_values=[3, 10]) == pytest.approx(want)


def test_trainer_compute_metrics():
    from transformers import EvalPrediction

    preds, refs, qids = _random_case(5)
    logits = np.array(preds)[:, None]  # (N, 1) as a 1-label cross-encoder returns
    fn = ranking_compute_metrics(qids, k_values=[10], prefix="dev_")
    out = fn(EvalPrediction(predictions=logits, label_ids=np.array(refs)))
    want = compute_ranking_metrics(preds, refs, qids)
    assert out["dev_ndcg@10"] == pytest.approx(want["ndcg@10"]) and out["dev_map"] == pytest.approx(want["map"])
    # two-class logits: score = logit(1) - logit(0)
    two = np.stack([np.zeros(len(preds)), np.array(preds)], axis=1)
    assert fn(EvalPrediction(predictions=two, label_ids=np.array(refs)))["dev_ndcg@10"] == pytest.approx(want["ndcg@10"])
    with pytest.raises(ValueError, match="query ids"):
        fn(EvalPrediction(predictions=logits[:-1], label_ids=np.array(refs[:-1])))


@pytest.mark.skipif(not (DATA_ROOT / "trec-dl-2019-passage").is_dir(), reason=f"real data not found at {DATA_ROOT}")
def test_real_bm25_candidates():
    """BM25 order of the DL19 candidate lists, unjudged = 0: the same value mteb gives with the labels as qrels."""
    preds, refs, qids = [], [], []
    for line in (DATA_ROOT / "trec-dl-2019-passage" / "candidates" / "BM25_top100.jsonl").read_text().splitlines():
        row = json.loads(line)
        for c in row["candidates"]:
            preds.append(c["score"])
            refs.append(c["label"] or 0)
            qids.append(row["qid"])
    got = compute_ranking_metrics(preds, refs, qids, k_values=[10])
    assert got["num_queries"] == 43
    assert got["ndcg@10"] == pytest.approx(0.5456, abs=1e-3)
