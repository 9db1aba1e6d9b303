"""Question: how much does computing the query once per query (rerank_shared) save when reranking?

A MiniLM-L6 cross-encoder (the packaged all-MiniLM-L6-v2 weights with a fresh 1-logit head: the shape of
cross-encoder/ms-marco-MiniLM-L6-v2), patched with independent_query (window 4), reranks 100 candidates per query.
Baselines: CrossEncoder.predict on the same patched model (batch 32; it batches candidates sorted by characters), and
`same_batching`: the same patched model run on exactly the batches rerank_shared uses (sorted by tokens) without
sharing - the ratio against it is the gain of query sharing alone. Inputs: real TREC DL 2019 queries and their
BM25 top-100 passages (from the shared data folder; skipped if absent), and synthetic documents of fixed lengths
(32..448 tokens) with a 10-token query, to show how the gain shrinks as documents grow.
The "ideal" column is the query's share of the tokens (an upper bound on the work saved).

    python benchmarks/query_sharing.py            # ~3-5 min on 1 thread
    python benchmarks/query_sharing.py --quick
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from common import base_parser, fmt_ms, fmt_ratio, interleaved, setup, write

from hf_sparse_tempscale import patch_model
from hf_sparse_tempscale.models import minilm_path
from hf_sparse_tempscale.query_sharing import rerank_shared

DATA = Path(os.environ.get("HF_SPARSE_TEMPSCALE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def real_queries(n: int) -> list[tuple[str, list[str]]]:
    path = DATA / "trec-dl-2019-passage" / "candidates" / "BM25_top100.jsonl"
    if not path.exists():
        print(f"skipping real data: {path} not found")
        return []
    out = []
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            out.append((row["query"], [c["text"] for c in row["candidates"]]))
            if len(out) == n:
                break
    return out


def synthetic(tokenizer, doc_tokens: int, n_docs: int = 100) -> tuple[str, list[str]]:
    g = torch.Generator().manual_seed(doc_tokens)
    vocab = [w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 3][:5000]
    words = lambda n: " ".join(vocab[int(i)] for i in torch.randint(0, len(vocab), (n,), generator=g))  # noqa: E731
    query = words(10)
    docs = []
    for _ in range(n_docs):
        d = words(doc_tokens)
        ids = tokenizer(d, add_special_tokens=False)["input_ids"][:doc_tokens]
        docs.append(tokenizer.decode(ids))
    return query, docs


def same_batching(ce, query: str, docs: list[str], batch_size: int) -> torch.Tensor:
    """Scores without query sharing, batched like rerank_shared (candidates sorted by token count)."""
    from hf_sparse_tempscale.patch import unwrap

    hf = unwrap(ce)
    enc = ce.tokenizer([query] * len(docs), docs, truncation="only_second", max_length=512, padding=True,
                       return_tensors="pt")
    lengths = enc["attention_mask"].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True).tolist()
    scores = torch.empty(len(docs))
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            full = int(lengths[rows].max())
            batch = {k: v[rows, :full] for k, v in enc.items()}
            scores[rows] = ce.activation_fn(hf(**batch).logits).squeeze(-1).float()
    return scores


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--queries", type=int, default=5, help="real TREC DL 2019 queries (100 candidates each)")
    p.add_argument("--doc-lengths", type=int, nargs="+", default=[32, 64, 128, 256, 448])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--window", type=int, default=4)
    args = p.parse_args()
    setup(args)
    if args.quick:
        args.queries, args.doc_lengths = 1, [64]
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    ce = CrossEncoder(minilm_path(), num_labels=1, device=args.device, max_length=512)
    patch_model(ce, temperature=0.9, window=args.window, pattern="independent_query")
    tok = ce.tokenizer
    workloads = [("TREC DL19 BM25 top-100", q, d) for q, d in real_queries(args.queries)]
    workloads += [(f"synthetic {n}-token docs", *synthetic(tok, n)) for n in args.doc_lengths]
    rows = []
    for name, query, docs in workloads:
        pairs = [(query, d) for d in docs]
        enc = tok([query] * len(docs), docs, truncation="only_second", max_length=512)
        total = sum(len(x) for x in enc["input_ids"])
        q_tokens = len(tok(query, add_special_tokens=False)["input_ids"]) + 1  # + first [SEP]
        ideal = q_tokens * (len(docs) - 1) / total
        fns = {
            "predict": lambda pairs=pairs: ce.predict(pairs, batch_size=args.batch_size, convert_to_tensor=True),
            "same_batching": lambda query=query, docs=docs: same_batching(ce, query, docs, args.batch_size),
            "rerank_shared": lambda query=query, docs=docs: rerank_shared(ce, query, docs, batch_size=args.batch_size),
        }
        reference = fns["predict"]().cpu()
        diff = max((fns[n]().cpu() - reference).abs().max().item() for n in ("same_batching", "rerank_shared"))
        t = interleaved(fns, repeats=args.repeats, warmup=args.warmup, device=args.device)
        base, same, shared = (t[n][args.clock] for n in ("predict", "same_batching", "rerank_shared"))
        rows.append({
            "workload": name, "candidates": len(docs), "query_tokens": q_tokens,
            "mean_pair_tokens": total / len(docs), "predict_s": base, "same_batching_s": same, "shared_s": shared,
            "speedup_vs_predict": base / shared, "speedup": same / shared, "time_saved": 1 - shared / same,
            "ideal_saving": ideal, "max_score_diff": diff,
            "samples": {k: v[f"{args.clock}_all"] for k, v in t.items()},
        })
        print(rows[-1]["workload"], f"x{rows[-1]['speedup']:.3f} (vs predict x{base / shared:.3f})", f"ideal {ideal:.3f}",
              flush=True)
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    columns = [
        ("workload", "workload", str), ("candidates", "docs", str), ("query_tokens", "query tok", str),
        ("mean_pair_tokens", "mean pair tok", lambda x: f"{x:.0f}"), ("predict_s", "predict ms", fmt_ms),
        ("same_batching_s", "same batching ms", fmt_ms), ("shared_s", "shared ms", fmt_ms),
        ("speedup", "sharing speed-up (same batching)", fmt_ratio), ("time_saved", "time saved", pct),
        ("speedup_vs_predict", "speed-up vs predict", fmt_ratio),
        ("ideal_saving", "query share (ideal)", pct), ("max_score_diff", "max |score diff|", lambda x: f"{x:.1e}"),
    ]
    notes = [f"MiniLM-L6 cross-encoder (all-MiniLM-L6-v2 body, new 1-logit head), independent_query, window {args.window}, "
             f"temperature 0.9, batch {args.batch_size}, per query of 100 candidates"]
    write("query_sharing", args, rows, columns, notes)


if __name__ == "__main__":
    main()
