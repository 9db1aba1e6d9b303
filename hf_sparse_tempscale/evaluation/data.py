"""Strict loaders for local IR data: BEIR folders, TREC run files, candidate jsonl files and STS pair files.

Every problem is reported as a `DataFormatError` naming the file and line, because a silently skipped line
or an id that matches nothing changes the score without anyone noticing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNKNOWN_DOC_POLICIES = ("error", "keep", "drop")


class DataFormatError(ValueError):
    """A data file is missing, malformed or inconsistent; `path` and `line` (1-based, or None) say where."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


def default_data_root() -> Path:
    """`$HF_SPARSE_TEMPSCALE_DATA`, else `<repo>/../shared/data` (the shared real data, never copied into the repo)."""
    env = os.environ.get("HF_SPARSE_TEMPSCALE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass
class RetrievalData:
    """Queries, corpus, graded qrels and (for reranking) each query's candidate list, ids as strings."""

    corpus: dict[str, dict[str, str]]  # doc id -> {"title": ..., "text": ...}
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    top_ranked: dict[str, list[str]] | None = None
    sources: list[str] = field(default_factory=list)  # files read, for the fingerprint and messages

    def fingerprint(self) -> str:
        """Short content hash of the source files (used as the mteb dataset revision)."""
        return file_fingerprint(self.sources) if self.sources else "in-memory"


def file_fingerprint(paths: list[str] | tuple[str, ...]) -> str:
    """Short sha256 over the files' bytes."""
    h = hashlib.sha256()
    for src in sorted(paths):
        with open(src, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:12]


# ---- low-level readers ---------------------------------------------------------------------------------------------


def _require_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataFormatError(p, None, f"{what} not found")
    if not p.is_file():
        raise DataFormatError(p, None, f"{what} is not a file")
    return p


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DataFormatError(path, lineno, f"malformed JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _id(obj: dict[str, Any], keys: tuple[str, ...], path: Path, lineno: int) -> str:
    for key in keys:
        if key in obj:
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
                raise DataFormatError(path, lineno, f"field {key!r} must be a non-empty string or integer id, got {value!r}")
            return str(value)
    raise DataFormatError(path, lineno, f"missing id field (one of {list(keys)})")


def _text(obj: dict[str, Any], key: str, path: Path, lineno: int, required: bool = True) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise DataFormatError(path, lineno, f"missing field {key!r}")
        return ""
    if not isinstance(obj[key], str):
        raise DataFormatError(path, lineno, f"field {key!r} must be a string, got {type(obj[key]).__name__}")
    return obj[key]


def load_corpus(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """BEIR `corpus.jsonl`: {"_id", "title"?, "text"} per line. Duplicate ids, empty texts and empty files are errors."""
    p = _require_file(path, "corpus file")
    corpus: dict[str, dict[str, str]] = {}
    for lineno, obj in _iter_jsonl(p):
        doc_id = _id(obj, ("_id", "id"), p, lineno)
        if doc_id in corpus:
            raise DataFormatError(p, lineno, f"duplicate document id {doc_id!r}")
        title = _text(obj, "title", p, lineno, required=False)
        text = _text(obj, "text", p, lineno)
        if not (title + text).strip():
            raise DataFormatError(p, lineno, f"document {doc_id!r} has no text")
        corpus[doc_id] = {"title": title, "text": text}
    if not corpus:
        raise DataFormatError(p, None, "empty corpus: no documents")
    return corpus


def load_queries(path: str | os.PathLike) -> dict[str, str]:
    """BEIR `queries.jsonl`: {"_id", "text"} per line."""
    p = _require_file(path, "queries file")
    queries: dict[str, str] = {}
    for lineno, obj in _iter_jsonl(p):
        qid = _id(obj, ("_id", "id"), p, lineno)
        if qid in queries:
            raise DataFormatError(p, lineno, f"duplicate query id {qid!r}")
        text = _text(obj, "text", p, lineno)
        if not text.strip():
            raise DataFormatError(p, lineno, f"query {qid!r} has no text")
        queries[qid] = text
    if not queries:
        raise DataFormatError(p, None, "no queries")
    return queries


def _parse_int(value: str, path: Path, lineno: int, what: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise DataFormatError(path, lineno, f"{what} must be a number, got {value!r}") from None
    if not number.is_integer():
        raise DataFormatError(path, lineno, f"{what} must be an integer grade, got {value!r}")
    return int(number)


def load_qrels(path: str | os.PathLike) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], int]]:
    """Qrels as BEIR tsv (`query-id  corpus-id  score`, optional header) or TREC (`qid 0 docid grade`).

    Returns (qrels, line numbers of each (qid, docid) pair) so callers can point at the offending line.
    """
    p = _require_file(path, "qrels file")
    qrels: dict[str, dict[str, int]] = {}
    lines: dict[tuple[str, str], int] = {}
    with p.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            parts = raw.split("\t") if "\t" in raw else raw.split()
            parts = [x.strip() for x in parts]
            if len(parts) == 3:
                qid, doc_id, grade = parts
            elif len(parts) == 4:
                qid, _, doc_id, grade = parts
            else:
                raise DataFormatError(p, lineno, f"expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}")
            if lineno == 1 and not _is_number(grade):  # header row ("query-id corpus-id score")
                continue
            if not qid or not doc_id:
                raise DataFormatError(p, lineno, "empty query or document id")
            value = _parse_int(grade, p, lineno, "relevance score")
            if (qid, doc_id) in lines:
                raise DataFormatError(
                    p, lineno, f"duplicate judgement for ({qid!r}, {doc_id!r}), first on line {lines[qid, doc_id]}"
                )
            qrels.setdefault(qid, {})[doc_id] = value
            lines[qid, doc_id] = lineno
    if not qrels:
        raise DataFormatError(p, None, "no relevance judgements")
    return qrels, lines


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def load_run(path: str | os.PathLike, top_k: int | None = None) -> tuple[dict[str, list[str]], dict[str, int]]:
    """TREC run (`qid Q0 docid rank score tag`): each query's documents by descending score, cut at top_k.

    Returns (ranking, first line number of each query).
    """
    p = _require_file(path, "run file")
    entries: dict[str, list[tuple[float, int, str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    first_line: dict[str, int] = {}
    with p.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            parts = raw.split()
            if len(parts) != 6:
                raise DataFormatError(p, lineno, f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}")
            qid, _, doc_id, rank, score, _ = parts
            try:
                rank_i, score_f = int(rank), float(score)
            except ValueError:
                raise DataFormatError(p, lineno, f"rank must be an integer and score a number, got {rank!r}, {score!r}") from None
            if not math.isfinite(score_f):
                raise DataFormatError(p, lineno, f"score must be finite, got {score!r}")
            if (qid, doc_id) in seen:
                raise DataFormatError(
                    p, lineno, f"document {doc_id!r} listed twice for query {qid!r} (first on line {seen[qid, doc_id]})"
                )
            seen[qid, doc_id] = lineno
            first_line.setdefault(qid, lineno)
            entries.setdefault(qid, []).append((-score_f, rank_i, doc_id))
    if not entries:
        raise DataFormatError(p, None, "empty run file")
    ranking = {qid: [d for _, _, d in sorted(rows)][:top_k] for qid, rows in entries.items()}
    return ranking, first_line


# ---- consistency checks --------------------------------------------------------------------------------------------


def _check_qrels(
    qrels: dict[str, dict[str, int]],
    lines: dict[tuple[str, str], int],
    qrels_path: Path,
    queries: dict[str, str],
    corpus: dict[str, dict[str, str]],
    unknown_docs: str,
) -> dict[str, dict[str, int]]:
    if unknown_docs not in UNKNOWN_DOC_POLICIES:
        raise ValueError(f"unknown_docs must be one of {UNKNOWN_DOC_POLICIES}, got {unknown_docs!r}")
    checked: dict[str, dict[str, int]] = {}
    for qid, docs in qrels.items():
        for doc_id, grade in docs.items():
            if qid not in queries:
                raise DataFormatError(qrels_path, lines[qid, doc_id], f"query id {qid!r} is not in the queries file")
            if doc_id not in corpus:
                if unknown_docs == "error":
                    raise DataFormatError(
                        qrels_path,
                        lines[qid, doc_id],
                        f"document id {doc_id!r} is not in the corpus (pass unknown_docs='keep' to count such judged "
                        "documents as never retrieved, as trec_eval does, or 'drop' to ignore them)",
                    )
                if unknown_docs == "drop":
                    continue
            checked.setdefault(qid, {})[doc_id] = grade
    if not checked:
        raise DataFormatError(qrels_path, None, "no judgements left after matching ids against the corpus")
    return checked


def _check_run(
    ranking: dict[str, list[str]],
    first_line: dict[str, int],
    run_path: Path,
    queries: dict[str, str],
    corpus: dict[str, dict[str, str]],
    qrels: dict[str, dict[str, int]],
) -> dict[str, list[str]]:
    for qid, docs in ranking.items():
        if qid not in queries:
            raise DataFormatError(run_path, first_line[qid], f"query id {qid!r} is not in the queries file")
        missing = [d for d in docs if d not in corpus]
        if missing:
            raise DataFormatError(
                run_path,
                first_line[qid],
                f"{len(missing)} candidate(s) of query {qid!r} have no text in the corpus, e.g. {missing[0]!r}",
            )
    unranked = [q for q in qrels if q not in ranking]
    if unranked:
        raise DataFormatError(run_path, None, f"{len(unranked)} judged queries have no candidates, e.g. {unranked[0]!r}")
    return ranking


# ---- public loaders ------------------------------------------------------------------------------------------------


def load_beir(
    folder: str | os.PathLike,
    split: str = "test",
    *,
    qrels_path: str | os.PathLike | None = None,
    run_path: str | os.PathLike | None = None,
    top_k: int | None = None,
    unknown_docs: str = "error",
) -> RetrievalData:
    """A BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), optionally with a TREC run to rerank.

    Only queries that have judgements are kept. `top_k` cuts each run list to its best k.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataFormatError(root, None, "BEIR folder not found")
    corpus_path = root / "corpus.jsonl"
    queries_path = root / "queries.jsonl"
    qrels_file = Path(qrels_path) if qrels_path is not None else root / "qrels" / f"{split}.tsv"
    corpus = load_corpus(corpus_path)
    queries = load_queries(queries_path)
    raw_qrels, lines = load_qrels(qrels_file)
    qrels = _check_qrels(raw_qrels, lines, qrels_file, queries, corpus, unknown_docs)
    queries = {q: queries[q] for q in queries if q in qrels}
    sources = [str(corpus_path), str(queries_path), str(qrels_file)]
    top_ranked = None
    if run_path is not None:
        ranking, first_line = load_run(run_path, top_k=top_k)
        ranking = {q: docs for q, docs in ranking.items() if q in qrels}  # unjudged queries cannot be scored
        top_ranked = _check_run(ranking, first_line, Path(run_path), queries, corpus, qrels)
        sources.append(str(run_path))
    return RetrievalData(corpus=corpus, queries=queries, qrels=qrels, top_ranked=top_ranked, sources=sources)


def load_candidates(
    path: str | os.PathLike,
    *,
    qrels_path: str | os.PathLike | None = None,
    top_k: int | None = None,
    unknown_docs: str = "keep",
) -> RetrievalData:
    """Candidate lists: one query per line, {"qid", "query", "candidates": [{"docid", "text", "label"?, "rank"?, "score"?}]}.

    Judgements come from the candidates' `label` (null = unjudged) or, if given, from `qrels_path` (e.g. the complete
    official qrels, whose documents outside the candidate lists count as never retrieved: unknown_docs="keep").
    Candidates are ordered by `rank` when present, else by file order.
    """
    p = _require_file(path, "candidates file")
    queries: dict[str, str] = {}
    corpus: dict[str, dict[str, str]] = {}
    top_ranked: dict[str, list[str]] = {}
    label_qrels: dict[str, dict[str, int]] = {}
    query_line: dict[str, int] = {}
    for lineno, obj in _iter_jsonl(p):
        qid = _id(obj, ("qid", "query_id", "_id"), p, lineno)
        if qid in queries:
            raise DataFormatError(p, lineno, f"duplicate query id {qid!r} (first on line {query_line[qid]})")
        query = _text(obj, "query", p, lineno)
        cands = obj.get("candidates")
        if not isinstance(cands, list) or not cands:
            raise DataFormatError(p, lineno, "field 'candidates' must be a non-empty list")
        ranked: list[tuple[float, int, str]] = []
        for pos, cand in enumerate(cands):
            if not isinstance(cand, dict):
                raise DataFormatError(p, lineno, f"candidate #{pos} is not a JSON object")
            doc_id = _id(cand, ("docid", "doc_id", "_id"), p, lineno)
            text = _text(cand, "text", p, lineno)
            if doc_id in corpus and corpus[doc_id]["text"] != text:
                raise DataFormatError(p, lineno, f"document {doc_id!r} appears with two different texts")
            corpus[doc_id] = {"title": _text(cand, "title", p, lineno, required=False), "text": text}
            rank = cand.get("rank", pos + 1)
            if isinstance(rank, bool) or not isinstance(rank, int):
                raise DataFormatError(p, lineno, f"candidate {doc_id!r}: rank must be an integer, got {rank!r}")
            ranked.append((rank, pos, doc_id))
            label = cand.get("label")
            if label is not None:
                if isinstance(label, bool) or not isinstance(label, (int, float)) or not float(label).is_integer():
                    raise DataFormatError(
                        p, lineno, f"candidate {doc_id!r}: label must be an integer grade or null, got {label!r}"
                    )
                label_qrels.setdefault(qid, {})[doc_id] = int(label)
        ids = [d for _, _, d in sorted(ranked)]
        if len(set(ids)) != len(ids):
            raise DataFormatError(p, lineno, f"query {qid!r} lists a document twice")
        queries[qid] = query
        query_line[qid] = lineno
        top_ranked[qid] = ids[:top_k]
    if not queries:
        raise DataFormatError(p, None, "no queries in candidates file")
    sources = [str(p)]
    if qrels_path is not None:
        raw, lines = load_qrels(qrels_path)
        qrels = _check_qrels(raw, lines, Path(qrels_path), queries, corpus, unknown_docs)
        sources.append(str(qrels_path))
    else:
        qrels = label_qrels
        if not qrels:
            raise DataFormatError(p, None, "no candidate has a label; pass qrels_path with the judgements")
    queries = {q: t for q, t in queries.items() if q in qrels}
    top_ranked = {q: top_ranked[q] for q in queries}
    return RetrievalData(corpus=corpus, queries=queries, qrels=qrels, top_ranked=top_ranked, sources=sources)


def load_sts_pairs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """STS pairs, jsonl with {"sentence1", "sentence2", "score"} (e.g. stsbenchmark/test.jsonl)."""
    p = _require_file(path, "STS pairs file")
    rows = []
    for lineno, obj in _iter_jsonl(p):
        s1 = _text(obj, "sentence1", p, lineno)
        s2 = _text(obj, "sentence2", p, lineno)
        score = obj.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataFormatError(p, lineno, f"field 'score' must be a number, got {score!r}")
        rows.append({"sentence1": s1, "sentence2": s2, "score": float(score)})
    if len(rows) < 2:
        raise DataFormatError(p, None, "need at least two sentence pairs")
    return rows


def load_texts(path: str | os.PathLike) -> list[str]:
    """Texts for diagnostics: a BEIR folder or corpus.jsonl (title + text), any jsonl with "text", or plain text lines."""
    p = Path(path)
    if p.is_dir():
        p = p / "corpus.jsonl"
    p = _require_file(p, "text file")
    texts: list[str] = []
    if p.suffix == ".jsonl":
        for lineno, obj in _iter_jsonl(p):
            title = _text(obj, "title", p, lineno, required=False)
            text = _text(obj, "text", p, lineno)
            texts.append(f"{title} {text}".strip() if title else text)
    else:
        with p.open(encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise DataFormatError(p, None, "no texts")
    return texts
