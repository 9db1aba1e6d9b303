"""`hf-sparse-tempscale scb`: run the sparse contextual bigram benchmark, write JSON and a PNG plot."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

DEFAULT_JSON = "benchmarks/results/scb.json"
DEFAULT_PLOT = "benchmarks/results/scb.png"


def register(subparsers) -> None:
    from .benchmark import METHODS, BenchmarkConfig

    d = BenchmarkConfig()
    p = subparsers.add_parser(
        "scb",
        help="sparse contextual bigram benchmark (synthetic; support recall, TV, window mask, transfer)",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default=DEFAULT_JSON, help="JSON result file")
    p.add_argument("--plot", default=DEFAULT_PLOT, help="PNG plot file ('' to skip)")
    p.add_argument("--vocab-size", "-N", type=int, default=d.vocab_size, help="vocabulary size N")
    p.add_argument("--seq-len", "-T", type=int, default=d.seq_len, help="context positions T")
    p.add_argument("--max-support", "-Q", type=int, default=d.max_support, help="support size Q of each q^(k)")
    p.add_argument("--window", type=int, default=d.window, help="support window of the windowed instance and mask")
    p.add_argument("--samples", type=int, default=d.samples, help="training samples per run")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per step")
    p.add_argument("--decay-samples", type=int, default=d.decay_samples,
                   help="lr_t = lr / sqrt(1 + seen / decay_samples); 0 = constant step size")
    p.add_argument("--eval-points", type=int, default=d.eval_points, help="log-spaced evaluations per run")
    p.add_argument("--eval-size", type=int, default=d.eval_size, help="held-out sequences for TV")
    p.add_argument("--seeds", type=int, nargs="+", default=d.seeds, help="instance seeds")
    p.add_argument("--transfer-strength", type=float, default=d.transfer_strength,
                   help="target P = (1 - s) P + s R, R a fresh random transition matrix")
    p.add_argument("--recall-threshold", type=float, default=d.recall_threshold, help="for samples-to-recall")
    p.add_argument("--tv-threshold", type=float, default=d.tv_threshold, help="for samples-to-TV")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=d.methods, help="model-optimizer pairs")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide tqdm bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from .benchmark import format_table, run_benchmark
    from .plot import plot_benchmark

    torch.set_num_threads(args.threads)
    try:
        cfg = _config(args)
    except ValueError as err:
        raise SystemExit(f"hf-sparse-tempscale scb: error: {err}") from None
    result = run_benchmark(cfg, progress=not args.no_progress)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_dumps(result) + "\n")
    print(format_table(result))
    print(f"wrote {out}")
    if args.plot:
        print(f"wrote {plot_benchmark(result, args.plot)}")
    return 0


def _config(args: argparse.Namespace):
    from .benchmark import BenchmarkConfig

    return BenchmarkConfig(
        vocab_size=args.vocab_size, seq_len=args.seq_len, max_support=args.max_support, window=args.window,
        samples=args.samples, batch_size=args.batch_size, decay_samples=args.decay_samples or None,
        eval_points=args.eval_points, eval_size=args.eval_size, seeds=list(args.seeds),
        transfer_strength=args.transfer_strength, recall_threshold=args.recall_threshold,
        tv_threshold=args.tv_threshold, methods=list(args.methods),
    )


def _dumps(result: dict) -> str:
    """Indented JSON with each flat list of numbers on one line (keeps the curves file small and diffable)."""
    text = json.dumps(result, indent=1)
    item = r"(?:-?[\d.eE+-]+|null)"
    flat = re.compile(rf"\[\s+({item}(?:,\s+{item})*)\s+\]")
    return flat.sub(lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
