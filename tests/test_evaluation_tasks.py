"""Local mteb tasks: scores equal a brute-force evaluation of the same model; results are mteb JSON; names resolve."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation_fixtures import (
    DATA_ROOT,
    tiny_cross_encoder,
    tiny_sentence_transformer,
    write_beir,
    write_candidates,
    write_run,
    write_sts,
)

from hf_sparse_tempscale.evaluation.data import DataFormatError, load_beir, load_candidates
from hf_sparse_tempscale.evaluation.metrics import compute_ranking_metrics
from hf_sparse_tempscale.evaluation.run import evaluate_reranking, evaluate_retrieval, evaluate_tasks
from hf_sparse_tempscale.evaluation.tasks import reranking_task, resolve_task, retrieval_task, sts_task


@pytest.fixture(scope="module")
def bi(tmp_path_factory):
    return tiny_sentence_transformer(tmp_path_factory.mktemp("bi"))


@pytest.fixture(scope="module")
def cross(tmp_path_factory):
    return tiny_cross_encoder(tmp_path_factory.mktemp("cross"))


def _doc_text(d):
    return f"{d['title']} {d['text']}".strip() if d["title"] else d["text"].strip()


def _brute_force_retrieval(model, data, k=10):
    qids, dids = list(data.queries), list(data.corpus)
    q = model.encode([data.queries[i] for i in qids], normalize_embeddings=True)
    d = model.encode([_doc_text(data.corpus[i]) for i in dids], normalize_embeddings=True)
    sims = q @ d.T
    preds, refs, groups = [], [], []
    for qi, qid in enumerate(qids):
        for di, did in enumerate(dids):
            preds.append(float(sims[qi, di]))
            refs.append(data.qrels[qid].get(did, 0))
            groups.append(qid)
    return compute_ranking_metrics(preds, refs, groups, k_values=[k])


def test_retrieval_equals_brute_force(bi, tmp_path):
    folder = write_beir(tmp_path / "beir", n_docs=40, n_queries=10)
    result = evaluate_retrieval(bi, folder, output_folder=tmp_path / "out", show_progress=False)
    want = _brute_force_retrieval(bi, load_beir(folder))
    assert result.task_type == "Retrieval" and result.main_score_name == "ndcg_at_10"
    assert result.main_score == pytest.approx(want["ndcg@10"], abs=1e-4)
    assert result.metric("map_at_1000") == pytest.approx(want["map"], abs=1e-4)
    assert result.metric("recall_at_10") == pytest.approx(want["recall@10"], abs=1e-4)
    # mteb's own result format, readable by mteb
    from mteb import TaskResult

    loaded = TaskResult.from_disk(result.path)
    assert loaded.task_name == result.task_name and loaded.get_score() == pytest.approx(result.main_score, abs=1e-5)


def test_reranking_cross_encoder_equals_brute_force(cross, tmp_path):
    path = write_candidates(tmp_path / "cands.jsonl", n_queries=6, depth=8)
    result = evaluate_reranking(cross, path, show_progress=False)
    data = load_candidates(path)
    preds, refs, groups = [], [], []
    for qid, docs in data.top_ranked.items():
        scores = cross.predict([(data.queries[qid], data.corpus[d]["text"]) for d in docs])
        preds += [float(s) for s in scores]
        refs += [data.qrels[qid].get(d, 0) for d in docs]
        groups += [qid] * len(docs)
    want = compute_ranking_metrics(preds, refs, groups, k_values=[10])
    assert result.task_type == "Reranking"
    assert result.main_score == pytest.approx(want["ndcg@10"], abs=1e-4)


def test_reranking_beir_plus_run_only_scores_candidates(bi, tmp_path):
    folder = write_beir(tmp_path / "beir", n_docs=40, n_queries=8)
    run = write_run(folder, tmp_path / "run.trec", depth=6)
    task = reranking_task(folder, run_path=run, top_k=4)
    result = evaluate_reranking(bi, task, show_progress=False)
    data = load_beir(folder, run_path=run, top_k=4)
    # reference: cosine scores of the 4 candidates only; judged docs outside the lists count as never retrieved
    import pytrec_eval

    run_scores: dict[str, dict[str, float]] = {}
    for qid, docs in data.top_ranked.items():
        q = bi.encode([data.queries[qid]], normalize_embeddings=True)
        d = bi.encode([_doc_text(data.corpus[x]) for x in docs], normalize_embeddings=True)
        run_scores[qid] = {x: float(s) for x, s in zip(docs, (q @ d.T)[0])}
    qrels = {q: v for q, v in data.qrels.items() if any(g > 0 for g in v.values())}
    per_q = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run_scores)
    want = np.mean([per_q[q]["ndcg_cut_10"] for q in qrels])
    assert result.main_score == pytest.approx(want, abs=1e-4)


def test_sts_equals_spearman_of_cosines(bi, tmp_path):
    from scipy.stats import spearmanr

    path = write_sts(tmp_path / "sts.jsonl", n=25)
    result = evaluate_tasks(bi, [path], show_progress=False)[0]
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    a = bi.encode([r["sentence1"] for r in rows], normalize_embeddings=True)
    b = bi.encode([r["sentence2"] for r in rows], normalize_embeddings=True)
    want = spearmanr((a * b).sum(1), [r["score"] for r in rows]).statistic
    assert result.task_type == "STS" and result.main_score_name == "cosine_spearman"
    assert result.main_score == pytest.approx(want, abs=1e-4)


def test_output_json_per_task(bi, tmp_path):
    folder = write_beir(tmp_path / "beir")
    sts = write_sts(tmp_path / "sts.jsonl")
    results = evaluate_tasks(
        bi,
        [retrieval_task(folder, name="mybeir"), sts_task(sts, name="mysts")],
        output_folder=tmp_path / "o",
        show_progress=False,
    )
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["mybeir.json", "mysts.json"]
    saved = json.loads((tmp_path / "o" / "mybeir.json").read_text())
    assert saved["task_name"] == "mybeir" and saved["scores"]["test"][0]["main_score"] == pytest.approx(
        results[0].main_score, abs=1e-5
    )


def test_max_seq_length_is_restored(bi, tmp_path):
    folder = write_beir(tmp_path / "beir")
    before = bi.max_seq_length
    short = evaluate_retrieval(bi, folder, max_seq_length=4, show_progress=False)
    assert bi.max_seq_length == before
    full = evaluate_retrieval(bi, folder, show_progress=False)
    assert short.main_score != pytest.approx(full.main_score)  # 4 tokens see much less of the documents


def test_resolve_task_specs(tmp_path):
    folder = write_beir(tmp_path / "beir")
    assert resolve_task(folder).metadata.type == "Retrieval"
    assert resolve_task(write_candidates(tmp_path / "c.jsonl")).metadata.type == "Reranking"
    assert resolve_task(write_sts(tmp_path / "s.jsonl")).metadata.type == "STS"
    run = write_run(folder, tmp_path / "r.trec")
    assert resolve_task(folder, run_path=run).metadata.type == "Reranking"
    syn = resolve_task("synthetic:passkey", lengths=[32, 64], n_docs=4)
    assert syn.metadata.main_score == "ndcg_at_1" and syn.hf_subsets == ["len_32", "len_64"]
    with pytest.raises(ValueError, match="unknown task 'NoSuchTask123'"):
        resolve_task("NoSuchTask123")
    with pytest.raises(DataFormatError, match="task path not found"):
        resolve_task(str(tmp_path / "missing" / "corpus.jsonl"))
    (tmp_path / "odd.jsonl").write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(DataFormatError, match="odd.jsonl:1: cannot tell the task type"):
        resolve_task(tmp_path / "odd.jsonl")


def test_registered_mteb_task_by_name():
    """Names go to mteb.get_tasks (the data itself comes from the hub when evaluated)."""
    task = resolve_task("SciFact")
    assert task.metadata.name == "SciFact" and task.metadata.type == "Retrieval"
    assert resolve_task("STSBenchmark", split="test").eval_splits == ["test"]


@pytest.mark.skipif(not (DATA_ROOT / "trec-dl-2019-passage").is_dir(), reason=f"real data not found at {DATA_ROOT}")
def test_real_dl19_bm25_order_reproduces_published_ndcg(tmp_path):
    """Reranking DL19 BM25 lists by their own BM25 score through mteb gives the published 0.5058 (complete qrels)."""
    from mteb.models import ModelMeta

    dl19 = DATA_ROOT / "trec-dl-2019-passage"
    score = {}
    for line in (dl19 / "candidates" / "BM25_top100.jsonl").read_text().splitlines():
        row = json.loads(line)
        for c in row["candidates"]:
            score[row["query"].strip(), c["text"].strip()] = c["score"]

    class BM25Lookup:  # an mteb CrossEncoderProtocol that returns the stored BM25 score of each pair
        mteb_model_meta = ModelMeta.create_empty()

        def predict(self, inputs1, inputs2, **kwargs):
            qs = [t for batch in inputs1 for t in batch["text"]]
            ds = [t for batch in inputs2 for t in batch["text"]]
            return np.array([score[q, d] for q, d in zip(qs, ds)])

    result = evaluate_reranking(
        BM25Lookup(), dl19 / "candidates" / "BM25_top100.jsonl", qrels_path=dl19 / "qrels" / "test.tsv", show_progress=False
    )
    assert result.main_score == pytest.approx(0.5058, abs=5e-4)


@pytest.mark.skipif(not (DATA_ROOT / "trec-dl-2019-passage").is_dir(), reason=f"real data not found at {DATA_ROOT}")
def test_real_dl19_beir_plus_run_reproduces_published_ndcg():
    """BEIR folder + the BM25 TREC run, reranked by the run's own scores, against the complete qrels: 0.5058 again."""
    from mteb.models import ModelMeta

    from hf_sparse_tempscale.evaluation.data import load_corpus, load_queries

    dl19 = DATA_ROOT / "trec-dl-2019-passage"
    corpus, queries = load_corpus(dl19 / "corpus.jsonl"), load_queries(dl19 / "queries.jsonl")
    score = {}
    for line in (dl19 / "runs" / "BM25_top100.trec").read_text().splitlines():
        qid, _, doc, _, s, _ = line.split()
        score[queries[qid].strip(), corpus[doc]["text"].strip()] = float(s)

    class RunLookup:
        mteb_model_meta = ModelMeta.create_empty()

        def predict(self, inputs1, inputs2, **kwargs):
            qs = [t for batch in inputs1 for t in batch["text"]]
            ds = [t for batch in inputs2 for t in batch["text"]]
            return np.array([score[q, d] for q, d in zip(qs, ds)])

    run = dl19 / "runs" / "BM25_top100.trec"
    full = dl19 / "qrels" / "test.tsv"
    with pytest.raises(DataFormatError, match="not in the corpus"):
        evaluate_reranking(RunLookup(), dl19, run_path=run, qrels_path=full, show_progress=False)
    result = evaluate_reranking(RunLookup(), dl19, run_path=run, qrels_path=full, unknown_docs="keep", show_progress=False)
    assert result.main_score == pytest.approx(0.5058, abs=5e-4)
