"""Training data for the recipes, read from the shared data folder (never copied into the repository).

- cross-encoder: `msmarco-trecdl-judged-pairs` (judged DL19/DL21 pairs and (query, pos, hard neg) triples);
- embedding: `squad-v1.1-train-subset/train_pairs.jsonl` and/or SciFact's train split (claim, cited abstract).
Subsets are seeded random samples; held-out queries are split off by query id, so no query is in both parts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..evaluation.data import default_data_root

JUDGED = "msmarco-trecdl-judged-pairs"


def data_root(path: str | Path | None = None) -> Path:
    root = Path(path) if path is not None else default_data_root()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder not found at {root}: pass data_root / --data-root or set HF_SPARSE_TEMPSCALE_DATA"
        )
    return root


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (see the data folder's README.md)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _split_queries(rows: list[dict[str, Any]], qid_key: str, holdout: int, seed: int):
    qids = sorted({str(r[qid_key]) for r in rows})
    if holdout >= len(qids):
        raise ValueError(f"cannot hold out {holdout} of {len(qids)} queries")
    held = set(random.Random(seed).sample(qids, holdout)) if holdout else set()
    return [r for r in rows if str(r[qid_key]) not in held], [r for r in rows if str(r[qid_key]) in held]


def _subset(rows: list[Any], limit: int | None, seed: int) -> list[Any]:
    if limit is None or limit >= len(rows):
        return rows
    return random.Random(seed).sample(rows, limit)


def squad_triples(root: str | Path | None = None, *, limit: int | None = None, negative: str = "article",
                  seed: int = 42) -> list[dict[str, Any]]:
    """(question, its paragraph, a negative paragraph) from the SQuAD training subset, in the judged-triples format
    (set "squad"): thousands of distinct questions. `negative`: "article" = another paragraph of the same article
    (topical, hard), "random" = a paragraph of another article (easy)."""
    if negative not in ("article", "random"):
        raise ValueError(f"negative must be article or random, got {negative!r}")
    rows = _read_jsonl(data_root(root) / "squad-v1.1-train-subset" / "train_pairs.jsonl")
    paragraphs = {r["pos_id"]: (r["pos_title"], r["pos_text"]) for r in rows}
    by_article: dict[str, list[str]] = {}
    for pid, (title, _) in sorted(paragraphs.items()):
        by_article.setdefault(title, []).append(pid)
    all_ids = sorted(paragraphs)
    if negative == "random" and len(by_article) < 2:
        raise ValueError("random SQuAD negatives need paragraphs from at least two articles")
    rng = random.Random(seed)
    out = []
    for r in _subset(rows, limit, seed):
        if negative == "article":
            pool = [pid for pid in by_article[r["pos_title"]] if pid != r["pos_id"]]
            if not pool:
                continue
            neg_id = rng.choice(pool)
        else:  # rejection sampling: draw paragraphs until one comes from another article
            neg_id = rng.choice(all_ids)
            while paragraphs[neg_id][0] == r["pos_title"]:
                neg_id = rng.choice(all_ids)
        out.append(dict(set="squad", qid=str(r["qid"]), query=r["query"], pos_id=r["pos_id"], pos=r["pos_text"],
                        pos_label=1, neg_id=neg_id, neg=paragraphs[neg_id][1]))
    return out


def cross_encoder_data(
    root: str | Path | None = None,
    *,
    train_set: str = "dl21",
    source: str = "triples",
    loss: str = "bce",
    label: str = "binary",
    limit: int | None = None,
    holdout_queries: int = 3,
    holdout_limit: int | None = None,
    squad_questions: int = 0,
    squad_negative: str = "article",
    seed: int = 42,
) -> tuple[Dataset, Dataset | None]:
    """(train, held-out) datasets. bce: columns (query, passage, label); mnrl: (query, positive, negative).

    `limit` counts source rows (triples or pairs) before they are expanded into (query, passage) pairs;
    `squad_questions` adds that many SQuAD triples (`squad_triples`) to the training part (triples only).
    The held-out part always comes from `train_set`'s own queries.
    """
    rows = [r for r in _read_jsonl(data_root(root) / JUDGED / f"{source}.jsonl") if r["set"] == train_set]
    if not rows:
        raise ValueError(f"no {source} of set {train_set!r} in {JUDGED}")
    train, held = _split_queries(rows, "qid", holdout_queries, seed)
    train, held = _subset(train, limit, seed), _subset(held, holdout_limit, seed)
    if squad_questions:
        if source != "triples":
            raise ValueError("squad_questions adds triples: use source='triples'")
        train = train + squad_triples(root, limit=squad_questions, negative=squad_negative, seed=seed)

    def build(part: list[dict[str, Any]], for_loss: str) -> Dataset:
        if source == "triples" and for_loss == "mnrl":
            return Dataset.from_dict({
                "query": [r["query"] for r in part], "positive": [r["pos"] for r in part],
                "negative": [r["neg"] for r in part],
            })
        if source == "triples":
            out = {"query": [], "passage": [], "label": []}
            for r in part:
                for text, y in ((r["pos"], 1.0), (r["neg"], 0.0)):
                    out["query"].append(r["query"])
                    out["passage"].append(text)
                    out["label"].append(y)
            return Dataset.from_dict(out)
        labels = [float(r["label"] >= 2) if label == "binary" else r["label"] / 3.0 for r in part]
        return Dataset.from_dict({"query": [r["query"] for r in part], "passage": [r["text"] for r in part],
                                  "label": labels})

    # Held-out rows are scored with the same loss so the trainer's eval loss is meaningful.
    return build(train, loss).shuffle(seed=seed), (build(held, loss) if held else None)


def _squad_pairs(root: Path) -> list[tuple[str, str, str]]:
    """(passage id, question, passage)"""
    return [(str(r["pos_id"]), r["query"], r["pos_text"])
            for r in _read_jsonl(root / "squad-v1.1-train-subset" / "train_pairs.jsonl")]


def _scifact_train_pairs(root: Path) -> list[tuple[str, str, str]]:
    """(abstract id, claim, title + abstract) for the train qrels"""
    folder = root / "scifact"
    corpus = {str(r["_id"]): (r.get("title", "") + " " + r["text"]).strip()
              for r in _read_jsonl(folder / "corpus.jsonl")}
    queries = {str(r["_id"]): r["text"] for r in _read_jsonl(folder / "queries.jsonl")}
    qrels_path = folder / "qrels" / "train.tsv"
    if not qrels_path.is_file():
        raise FileNotFoundError(f"{qrels_path} not found")
    pairs = []
    with qrels_path.open(encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            qid, doc, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                pairs.append(("scifact:" + doc, queries[qid], corpus[doc]))
    return pairs


def embedding_data(
    root: str | Path | None = None,
    *,
    sources: list[str] = ("squad",),
    limit: int | None = None,
    holdout_queries: int = 3,
    holdout_limit: int | None = None,
    seed: int = 42,
) -> tuple[Dataset, Dataset | None]:
    """(train, held-out) (anchor, positive) pairs for MultipleNegativesRankingLoss."""
    base = data_root(root)
    loaders = {"squad": _squad_pairs, "scifact": _scifact_train_pairs}
    rows = [{"group": g, "anchor": a, "positive": p} for s in sources for g, a, p in loaders[s](base)]
    # SQuAD asks several questions per paragraph: hold out whole passages (all their questions).
    train, held = _split_queries(rows, "group", holdout_queries, seed)
    train, held = _subset(train, limit, seed), _subset(held, holdout_limit, seed)

    def build(part):
        return Dataset.from_dict({"anchor": [r["anchor"] for r in part], "positive": [r["positive"] for r in part]})

    return build(train).shuffle(seed=seed), (build(held) if held else None)


def probe_pairs(dataset: Dataset, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(query, passage) pairs for the attention statistics."""
    cols = dataset.column_names
    q, d = cols[0], cols[1]
    idx = random.Random(seed).sample(range(len(dataset)), min(n, len(dataset)))
    return [(dataset[i][q], dataset[i][d]) for i in idx]


def probe_texts(texts: list[str], n: int) -> list[str]:
    """`n` distinct texts spread evenly over the length range (so the collapse monitor sees short and long ones)."""
    unique = sorted(set(texts), key=lambda t: (len(t), t))
    if len(unique) < 4:
        raise ValueError("need at least 4 distinct texts for a collapse probe")
    n = max(4, min(n, len(unique)))
    step = (len(unique) - 1) / (n - 1)
    return [unique[round(i * step)] for i in range(n)]
