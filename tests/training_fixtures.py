"""Tiny checkpoints and a tiny data folder (same layout as ../shared/data) for the training and hub tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import transformers as tf

from conftest import WORDS, bert_tokenizer

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128)


def tiny_checkpoint(folder: Path, head: str = "classifier", seed: int = 0) -> str:
    """Save a random tiny BERT (`classifier`: BertForSequenceClassification with 1 label; `encoder`: BertModel)."""
    tok = bert_tokenizer()
    torch.manual_seed(seed)
    config = tf.BertConfig(vocab_size=len(tok), num_labels=1, **TINY)
    model = tf.BertForSequenceClassification(config) if head == "classifier" else tf.BertModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _text(rng: random.Random, n: int, extra: list[str] = ()) -> str:
    return " ".join([rng.choice(WORDS[:40]) for _ in range(n)] + list(extra))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def tiny_data_root(root: Path, seed: int = 0) -> Path:
    """Judged pairs/triples (dl21 train, dl19), DL19-style candidates + qrels, SQuAD-style pairs, a SciFact-style
    BEIR folder and STS pairs; texts of varied lengths over the tiny tokenizer's vocabulary."""
    rng = random.Random(seed)
    triples, pairs = [], []
    for year in ("dl21", "dl19"):
        for q in range(8):
            qid = f"{year}-q{q}"
            query = _text(rng, 2)
            for k in range(3):
                pos, neg = _text(rng, rng.randint(4, 30), query.split() + ["relevant"]), _text(rng, rng.randint(4, 30))
                triples.append(dict(set=year, qid=qid, query=query, pos_id=f"{qid}-p{k}", pos=pos, pos_label=2,
                                    neg_id=f"{qid}-n{k}", neg=neg))
                pairs += [dict(set=year, qid=qid, query=query, docid=f"{qid}-p{k}", text=pos, label=2),
                          dict(set=year, qid=qid, query=query, docid=f"{qid}-n{k}", text=neg, label=0)]
    _write_jsonl(root / "msmarco-trecdl-judged-pairs" / "triples.jsonl", triples)
    _write_jsonl(root / "msmarco-trecdl-judged-pairs" / "pairs.jsonl", pairs)

    dl19 = root / "trec-dl-2019-passage"
    cands, qrels = [], ["query-id\tcorpus-id\tscore"]
    for q in range(4):
        query = _text(rng, 2)
        docs = []
        for d in range(6):
            rel = d % 3 == 0
            text = _text(rng, rng.randint(4, 25), query.split() + ["relevant"] if rel else [])
            docs.append(dict(docid=f"d{q}-{d}", rank=d + 1, score=10.0 - d, text=text, label=2 if rel else 0))
            qrels.append(f"t{q}\td{q}-{d}\t{2 if rel else 0}")
        cands.append(dict(qid=f"t{q}", query=query, candidates=docs))
    _write_jsonl(dl19 / "candidates" / "BM25_top100.jsonl", cands)
    (dl19 / "qrels").mkdir(parents=True, exist_ok=True)
    (dl19 / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")

    squad = []
    for p in range(12):
        passage = _text(rng, rng.randint(5, 40))
        for k in range(2):
            squad.append(dict(qid=f"s{p}-{k}", query=_text(rng, 3), pos_id=f"p{p}", pos_title=f"article{p % 3}",
                              pos_text=passage, answers=["w1"]))
    _write_jsonl(root / "squad-v1.1-train-subset" / "train_pairs.jsonl", squad)

    sci = root / "scifact"
    corpus = [dict(_id=f"c{i}", title="", text=_text(rng, rng.randint(5, 40))) for i in range(20)]
    queries = [dict(_id=str(i), text=_text(rng, 3)) for i in range(10)]
    _write_jsonl(sci / "corpus.jsonl", corpus)
    _write_jsonl(sci / "queries.jsonl", queries)
    (sci / "qrels").mkdir(parents=True, exist_ok=True)
    (sci / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{i}\tc{i}\t1\n" for i in range(5)), encoding="utf-8")
    (sci / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{i}\tc{i}\t1\n" for i in range(5, 10)), encoding="utf-8")

    sts = [dict(sentence1=_text(rng, 4), sentence2=_text(rng, 4), score=float(rng.randint(0, 5))) for _ in range(12)]
    _write_jsonl(root / "stsbenchmark" / "test.jsonl", sts)
    return root
