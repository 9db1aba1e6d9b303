"""Loaders: correct parsing, and bad input -> DataFormatError naming the file and the line."""

from __future__ import annotations

import json

import pytest

from evaluation_fixtures import DATA_ROOT, write_beir, write_candidates, write_run

from hf_sparse_tempscale.evaluation.data import (
    DataFormatError,
    load_beir,
    load_candidates,
    load_qrels,
    load_run,
    load_sts_pairs,
    load_texts,
)


def _lines(path):
    return path.read_text().splitlines()


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")


def test_load_beir_matches_files(tmp_path):
    folder = write_beir(tmp_path / "beir")
    data = load_beir(folder)
    assert len(data.corpus) == 30
    rows = [l.split("\t") for l in _lines(folder / "qrels" / "test.tsv")[1:]]
    assert sum(len(v) for v in data.qrels.values()) == len(rows)
    for q, d, g in rows:
        assert data.qrels[q][d] == int(g)
    assert set(data.queries) == {q for q, _, _ in rows}
    first = json.loads(_lines(folder / "corpus.jsonl")[0])
    assert data.corpus[first["_id"]] == {"title": first["title"], "text": first["text"]}
    assert data.top_ranked is None


def test_trec_style_qrels_and_header_free(tmp_path):
    p = tmp_path / "q.txt"
    _write(p, ["1 0 a 2", "1 0 b 0", "2 0 a 1"])
    qrels, lines = load_qrels(p)
    assert qrels == {"1": {"a": 2, "b": 0}, "2": {"a": 1}}
    assert lines["2", "a"] == 3


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_file_is_named(tmp_path, missing):
    folder = write_beir(tmp_path / "beir")
    (folder / missing).unlink()
    with pytest.raises(DataFormatError, match=missing.replace("/", ".") + ".*not found"):
        load_beir(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(DataFormatError, match="BEIR folder not found"):
        load_beir(tmp_path / "nope")


def test_malformed_json_line_reports_line(tmp_path):
    folder = write_beir(tmp_path / "beir")
    lines = _lines(folder / "corpus.jsonl")
    lines[4] = '{"_id": "d4", "text": "unterminated'
    _write(folder / "corpus.jsonl", lines)
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:5: malformed JSON") as err:
        load_beir(folder)
    assert err.value.line == 5 and err.value.path.endswith("corpus.jsonl")


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"title": "x", "text": "y"}', "missing id field"),
        ('{"_id": "zz"}', "missing field 'text'"),
        ('{"_id": "zz", "text": 3}', "must be a string"),
        ('{"_id": "d0", "text": "dup"}', "duplicate document id"),
        ('["not", "an", "object"]', "expected a JSON object"),
        ('{"_id": "zz", "title": "", "text": "   "}', "has no text"),
    ],
)
def test_bad_corpus_lines(tmp_path, bad, message):
    folder = write_beir(tmp_path / "beir")
    lines = _lines(folder / "corpus.jsonl") + [bad]
    _write(folder / "corpus.jsonl", lines)
    with pytest.raises(DataFormatError, match=rf"corpus\.jsonl:{len(lines)}: .*{message}"):
        load_beir(folder)


def test_empty_corpus(tmp_path):
    folder = write_beir(tmp_path / "beir")
    (folder / "corpus.jsonl").write_text("\n")
    with pytest.raises(DataFormatError, match="empty corpus"):
        load_beir(folder)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("q0\td1", "expected 3 \\(BEIR\\) or 4 \\(TREC\\) columns"),
        ("q0\td1\thigh", "must be a number"),
        ("q0\td1\t1.5", "integer grade"),
    ],
)
def test_bad_qrels_lines(tmp_path, bad, message):
    folder = write_beir(tmp_path / "beir")
    lines = _lines(folder / "qrels" / "test.tsv") + [bad]
    _write(folder / "qrels" / "test.tsv", lines)
    with pytest.raises(DataFormatError, match=rf"test\.tsv:{len(lines)}: .*{message}"):
        load_beir(folder)


def test_qrels_unknown_ids(tmp_path):
    folder = write_beir(tmp_path / "beir")
    lines = _lines(folder / "qrels" / "test.tsv")
    _write(folder / "qrels" / "test.tsv", lines + ["q0\tghost\t1"])
    with pytest.raises(DataFormatError, match=rf"test\.tsv:{len(lines) + 1}: document id 'ghost' is not in the corpus"):
        load_beir(folder)
    # explicit policies instead of an error
    assert "ghost" not in load_beir(folder, unknown_docs="drop").qrels["q0"]
    assert load_beir(folder, unknown_docs="keep").qrels["q0"]["ghost"] == 1
    _write(folder / "qrels" / "test.tsv", lines + ["nobody\td0\t1"])
    with pytest.raises(DataFormatError, match=rf"test\.tsv:{len(lines) + 1}: query id 'nobody' is not in the queries file"):
        load_beir(folder)


def test_duplicate_qrels(tmp_path):
    folder = write_beir(tmp_path / "beir")
    lines = _lines(folder / "qrels" / "test.tsv")
    _write(folder / "qrels" / "test.tsv", lines + [lines[1]])
    with pytest.raises(DataFormatError, match="duplicate judgement.*first on line 2"):
        load_beir(folder)


def test_run_file(tmp_path):
    folder = write_beir(tmp_path / "beir")
    run = write_run(folder, tmp_path / "run.trec", depth=10)
    data = load_beir(folder, run_path=run, top_k=4)
    assert set(data.top_ranked) == set(data.qrels)
    assert all(len(v) == 4 for v in data.top_ranked.values())
    ranking, _ = load_run(run)
    for q, docs in data.top_ranked.items():
        assert docs == ranking[q][:4]  # best score first


def test_run_sorted_by_score_not_file_order(tmp_path):
    p = tmp_path / "r.trec"
    _write(p, ["1 Q0 a 2 0.5 x", "1 Q0 b 1 0.9 x", "1 Q0 c 3 0.7 x"])
    assert load_run(p)[0] == {"1": ["b", "c", "a"]}


@pytest.mark.parametrize(
    "bad, message",
    [
        ("q0 Q0 d1 1 0.5", "expected 6 columns"),
        ("q0 Q0 d1 first 0.5 t", "rank must be an integer"),
        ("q0 Q0 d1 1 nan t", "finite"),
    ],
)
def test_bad_run_lines(tmp_path, bad, message):
    p = tmp_path / "r.trec"
    _write(p, ["q0 Q0 d0 1 1.0 t", bad])
    with pytest.raises(DataFormatError, match=rf"r\.trec:2: .*{message}"):
        load_run(p)


def test_run_inconsistent_with_corpus(tmp_path):
    folder = write_beir(tmp_path / "beir")
    run = write_run(folder, tmp_path / "run.trec")
    lines = _lines(run)
    q = lines[0].split()[0]
    _write(run, lines + [f"{q} Q0 ghost 99 -5 tiny"])
    with pytest.raises(DataFormatError, match=f"run.trec:1: 1 candidate.*query '{q}' have no text.*'ghost'"):
        load_beir(folder, run_path=run)
    _write(run, [l for l in lines if not l.startswith(q + " ")])
    with pytest.raises(DataFormatError, match="judged queries have no candidates"):
        load_beir(folder, run_path=run)


def test_candidates(tmp_path):
    path = write_candidates(tmp_path / "c.jsonl")
    data = load_candidates(path)
    rows = [json.loads(l) for l in _lines(path)]
    for row in rows:
        assert data.top_ranked[row["qid"]] == [c["docid"] for c in row["candidates"]]
        judged = {c["docid"]: c["label"] for c in row["candidates"] if c["label"] is not None}
        assert data.qrels[row["qid"]] == judged  # null labels stay unjudged
    top = load_candidates(path, top_k=3)
    assert all(len(v) == 3 for v in top.top_ranked.values())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(candidates=[]), "non-empty list"),
        (lambda r: r["candidates"][1].update(label="high"), "label must be an integer grade or null"),
        (
            lambda r: r["candidates"][1].update(docid=r["candidates"][0]["docid"], text=r["candidates"][0]["text"]),
            "lists a document twice",
        ),
        (lambda r: r["candidates"][1].update(docid=r["candidates"][0]["docid"]), "two different texts"),
        (lambda r: r.pop("query"), "missing field 'query'"),
    ],
)
def test_bad_candidates(tmp_path, mutate, message):
    path = write_candidates(tmp_path / "c.jsonl")
    rows = [json.loads(l) for l in _lines(path)]
    mutate(rows[2])
    _write(path, [json.dumps(r) for r in rows])
    with pytest.raises(DataFormatError, match=rf"c\.jsonl:3: .*{message}"):
        load_candidates(path)


def test_candidates_with_external_qrels(tmp_path):
    path = write_candidates(tmp_path / "c.jsonl")
    qrels = tmp_path / "qrels.tsv"
    _write(qrels, ["query-id\tcorpus-id\tscore", "q0\tq0d1\t3", "q0\toutside\t2", *[f"q{i}\tq{i}d0\t1" for i in range(1, 6)]])
    data = load_candidates(path, qrels_path=qrels)
    assert data.qrels["q0"] == {"q0d1": 3, "outside": 2}  # judged doc outside the lists is kept (never retrieved)
    with pytest.raises(DataFormatError, match=r"qrels\.tsv:3: document id 'outside'"):
        load_candidates(path, qrels_path=qrels, unknown_docs="error")
    _write(qrels, ["q0\tq0d1\t3", "q99\tq0d1\t1"])
    with pytest.raises(DataFormatError, match=r"qrels\.tsv:2: query id 'q99'"):
        load_candidates(path, qrels_path=qrels)


def test_sts_and_texts(tmp_path):
    p = tmp_path / "sts.jsonl"
    _write(
        p,
        [
            json.dumps({"sentence1": "a", "sentence2": "b", "score": 1}),
            json.dumps({"sentence1": "c", "sentence2": "d", "score": "x"}),
        ],
    )
    with pytest.raises(DataFormatError, match=r"sts\.jsonl:2: field 'score'"):
        load_sts_pairs(p)
    t = tmp_path / "t.txt"
    _write(t, ["one", "", "two"])
    assert load_texts(t) == ["one", "two"]
    folder = write_beir(tmp_path / "beir")
    texts = load_texts(folder)
    first = json.loads(_lines(folder / "corpus.jsonl")[0])
    assert texts[0] == f"{first['title']} {first['text']}"


@pytest.mark.skipif(not (DATA_ROOT / "scifact").is_dir(), reason=f"real data not found at {DATA_ROOT}")
def test_real_scifact_and_dl19_counts():
    sci = load_beir(DATA_ROOT / "scifact", "test")
    assert (len(sci.corpus), len(sci.queries), sum(len(v) for v in sci.qrels.values())) == (5183, 300, 339)
    train = load_beir(DATA_ROOT / "scifact", "train")
    assert len(train.queries) == 809 and not set(train.queries) & set(sci.queries)
    dl19 = DATA_ROOT / "trec-dl-2019-passage"
    cands = load_candidates(dl19 / "candidates" / "BM25_top100.jsonl", qrels_path=dl19 / "qrels" / "test.tsv")
    assert len(cands.queries) == 43 and sum(len(v) for v in cands.qrels.values()) == 9260
    runs = load_beir(dl19, run_path=dl19 / "runs" / "BM25_top100.trec", qrels_path=dl19 / "qrels" / "test.in_corpus.tsv")
    assert set(runs.top_ranked) == set(runs.qrels) and len(runs.qrels) == 43
