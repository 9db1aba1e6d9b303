"""Subcommands `evaluate`, `compare`, `diagnose`, `tune` and `demo` of the `hf-sparse-tempscale` console script.

Heavy imports (mteb, torch, sentence-transformers) happen inside the commands so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ---- argument parsing helpers ----------------------------------------------------------------------------------------


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split_top_level(spec: str) -> list[str]:
    """Split on commas outside brackets and quotes, so JSON values may contain commas."""
    parts, depth, quote, current = [], 0, False, []
    for ch in spec:
        if ch == '"':
            quote = not quote
        elif not quote and ch in "{[":
            depth += 1
        elif not quote and ch in "}]":
            depth -= 1
        elif ch == "," and depth == 0 and not quote:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME:key=value,key=value` or `NAME:{json}` -> (name, settings). Values are JSON when they parse as JSON."""
    name, sep, spec = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:SETTINGS (e.g. 'tau0.9:temperature=0.9'), got {text!r}")
    spec = spec.strip()
    if spec.startswith("{"):
        try:
            settings = json.loads(spec)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"setting {name!r}: bad JSON ({err.msg})") from None
        if not isinstance(settings, dict):
            raise argparse.ArgumentTypeError(f"setting {name!r}: JSON must be an object")
        return name.strip(), settings
    settings = {}
    for item in filter(None, (s.strip() for s in _split_top_level(spec))):
        key, eq, val = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"setting {name!r}: expected key=value, got {item!r}")
        settings[key.strip()] = _value(val.strip())
    return name.strip(), settings


def parse_length_adaptive(text: str) -> dict[str, Any]:
    """`SHORT:LONG:LONG_TAU` -> the core's length_adaptive dict."""
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected SHORT:LONG:LONG_TAU (e.g. 32:256:0.8), got {text!r}")
    try:
        return {"short_length": int(parts[0]), "long_length": int(parts[1]), "long_temperature": float(parts[2])}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers SHORT, LONG and a number LONG_TAU, got {text!r}") from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model folder or hub id (SentenceTransformer or CrossEncoder)")
    p.add_argument(
        "--kind", choices=("auto", "bi", "cross"), default="auto", help="bi-encoder or cross-encoder (auto: from the folder)"
    )
    p.add_argument("--device", default=None, help="torch device (default: the library's choice)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--max-seq-length",
        type=int,
        default=None,
        help="tokens the model reads on every task (default: the model's own; synthetic tasks: their longest length)",
    )
    p.add_argument("--output", "-o", default=None, help="folder for the JSON results (and plots)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_task_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--task",
        "-t",
        action="append",
        required=required,
        default=None,
        help="BEIR folder, candidates .jsonl, STS pairs .jsonl, synthetic:passkey|synthetic:needle or a registered MTEB "
        "task name (repeatable)",
    )
    p.add_argument("--split", default=None, help="qrels split of BEIR folders (default test)")
    p.add_argument("--run", default=None, help="TREC run file: rerank its candidates (with a BEIR folder task)")
    p.add_argument("--qrels", default=None, help="qrels file replacing the task's own judgements")
    p.add_argument("--top-k", type=int, default=None, help="rerank only the first k candidates of each query")
    p.add_argument(
        "--unknown-docs",
        choices=("error", "keep", "drop"),
        default=None,
        help="judged documents missing from the corpus/candidates: error (BEIR default), keep as never retrieved "
        "(candidates default, as trec_eval), or drop",
    )
    p.add_argument("--synthetic-lengths", type=int, nargs="+", default=None, help="token lengths of synthetic tasks")
    p.add_argument("--synthetic-docs", type=int, default=50, help="documents per length of synthetic tasks")
    p.add_argument("--seed", type=int, default=0)


def _add_patch_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("patch settings (none: the model as loaded)")
    g.add_argument("--temperature", type=float, default=None, help="attention temperature tau")
    g.add_argument("--window", type=int, default=None, help="document->document attention window |i-j| <= w")
    g.add_argument("--pattern", default=None, choices=("full", "independent_query", "cls_interaction"))
    g.add_argument("--layers", type=int, nargs="+", default=None, help="patch only these layers")
    g.add_argument("--length-adaptive", type=parse_length_adaptive, default=None, metavar="SHORT:LONG:TAU")
    g.add_argument("--backend", default=None, choices=("sdpa", "eager", "flex", "banded", "auto"))
    g.add_argument("--patch-json", default=None, help="patch settings as a JSON object (merged with the options above)")


def _patch_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = json.loads(args.patch_json) if args.patch_json else {}
    for key in ("temperature", "window", "pattern", "layers", "length_adaptive", "backend"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    return settings


def _settings_from_args(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    settings: dict[str, dict[str, Any]] = {}
    for t in args.temperatures or []:
        settings[f"tau={t:g}"] = {"temperature": t}
    for name, cfg in args.setting or []:
        if name in settings:
            raise SystemExit(f"error: setting name {name!r} given twice")
        settings[name] = cfg
    return settings


# ---- commands --------------------------------------------------------------------------------------------------------


def _friendly(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad data / bad options -> one clear line on stderr and exit status 2 (HF_SPARSE_TEMPSCALE_DEBUG=1: traceback)."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        from .data import DataFormatError

        try:
            return func(args)
        except (DataFormatError, ValueError, KeyError, TypeError) as err:
            if os.environ.get("HF_SPARSE_TEMPSCALE_DEBUG"):
                raise
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapper


def _setup(args: argparse.Namespace):
    from .run import load_model

    model = load_model(args.model, kind=args.kind, device=args.device)
    return model


def _resolve_tasks(args: argparse.Namespace, model: Any) -> list[Any]:
    from .tasks import resolve_task

    tasks = []
    for spec in args.task:
        if spec.startswith("synthetic:"):
            kw: dict[str, Any] = {
                "n_docs": args.synthetic_docs,
                "seed": args.seed,
                "tokenizer": getattr(model, "tokenizer", None),
            }
            if args.synthetic_lengths:
                kw["lengths"] = args.synthetic_lengths
            tasks.append(resolve_task(spec, **kw))
        else:
            tasks.append(
                resolve_task(
                    spec,
                    split=args.split,
                    run_path=args.run,
                    qrels_path=args.qrels,
                    top_k=args.top_k,
                    unknown_docs=args.unknown_docs,
                )
            )
    return tasks


@_friendly
def cmd_evaluate(args: argparse.Namespace) -> int:
    from hf_sparse_tempscale import patched

    from .run import evaluate_tasks

    model = _setup(args)
    tasks = _resolve_tasks(args, model)
    settings = _patch_settings(args)
    kw = {
        "output_folder": args.output,
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "show_progress": not args.no_progress,
    }
    if settings:
        with patched(model, **settings):
            results = evaluate_tasks(model, tasks, **kw)
    else:
        results = evaluate_tasks(model, tasks, **kw)
    print("| task | type | metric | score |\n|---|---|---|---|")
    for r in results:
        print(f"| {r.task_name} | {r.task_type} | {r.main_score_name} | {r.main_score:.4f} |")
        if len(r.subset_scores) > 1:
            for s, v in r.subset_scores.items():
                print(f"| {r.task_name} / {s} | | | {v:.4f} |")
    summary = {"model": args.model, "patch": settings or None, "results": [r.to_dict() for r in results]}
    if args.output:
        path = Path(args.output) / "summary.json"
        path.write_text(json.dumps(summary, indent=2))
        print(f"wrote {path}")
    return 0


@_friendly
def cmd_compare(args: argparse.Namespace) -> int:
    from .comparison import compare

    settings = _settings_from_args(args)
    if not settings:
        raise SystemExit("error: give at least one --setting NAME:SETTINGS or --temperatures")
    model = _setup(args)
    tasks = _resolve_tasks(args, model)
    comp = compare(
        model,
        settings,
        tasks,
        output_folder=args.output,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        show_progress=not args.no_progress,
        print_table=True,
    )
    if args.output:
        if any(len(r.subset_scores) > 1 for r in comp.results[comp.baseline].values()):
            comp.plot_subsets(Path(args.output) / "by_subset.png")
        print(f"wrote {Path(args.output) / 'comparison.json'}")
    return 0


@_friendly
def cmd_diagnose(args: argparse.Namespace) -> int:
    from .data import load_texts
    from .diagnostics import length_collapse

    model = _setup(args)
    texts = load_texts(args.texts)
    report = length_collapse(
        model,
        texts,
        settings=_settings_from_args(args),
        lengths=args.lengths,
        mode=args.mode,
        per_group=args.per_group,
        seed=args.seed,
        batch_size=args.batch_size,
        show_progress=not args.no_progress,
    )
    print(report.to_markdown())
    out = Path(args.output or "length_collapse")
    report.save_json(out / "length_collapse.json")
    report.plot(out / "length_collapse.png")
    print(f"wrote {out / 'length_collapse.json'} and {out / 'length_collapse.png'}")
    return 0


@_friendly
def cmd_tune(args: argparse.Namespace) -> int:
    from .temperature import dev_retrieval_task, tune_length_adaptive, tune_temperature

    model = _setup(args)
    if args.dev_corpus_size is not None or args.dev_max_queries is not None:
        if len(args.task) != 1 or not Path(args.task[0]).is_dir():
            raise SystemExit("error: --dev-corpus-size/--dev-max-queries need exactly one BEIR folder --task")
        tasks = [
            dev_retrieval_task(
                args.task[0],
                args.split or "train",
                corpus_size=args.dev_corpus_size,
                max_queries=args.dev_max_queries,
                seed=args.seed,
            )
        ]
    else:
        if args.split == "test":
            print("warning: tuning on the test split; report the test score of a setting tuned elsewhere", file=sys.stderr)
        tasks = _resolve_tasks(args, model)
    out = Path(args.output) if args.output else None
    kw = {"batch_size": args.batch_size, "max_seq_length": args.max_seq_length, "show_progress": not args.no_progress}
    base = json.loads(args.patch_json) if args.patch_json else {}
    fixed = tune_temperature(model, tasks, args.grid, base_settings=base, output_folder=out / "fixed" if out else None, **kw)
    print(f"fixed tau: best {fixed.best_value:g} -> {fixed.metric} {fixed.best_score:.4f} (unpatched {fixed.baseline_score:.4f})")
    print("| tau | " + fixed.metric + " |\n|---|---|")
    for v, s in fixed.curve:
        print(f"| {v:g} | {s:.4f} |")
    summary: dict[str, Any] = {"model": args.model, "tasks": fixed.tasks, "fixed": fixed.to_dict()}
    if args.adaptive:
        short, long = args.adaptive
        adaptive = tune_length_adaptive(
            model,
            tasks,
            short_length=short,
            long_length=long,
            long_grid=args.adaptive_grid,
            temperature=args.adaptive_short_temperature,
            base_settings=base,
            output_folder=out / "adaptive" if out else None,
            baseline_score=fixed.baseline_score,  # measured above on the same dev task(s)
            **kw,
        )
        print(
            f"adaptive tau ({args.adaptive_short_temperature:g} up to {short} tokens -> long_temperature from {long}): "
            f"best {adaptive.best_value:g} -> {adaptive.best_score:.4f}"
        )
        print("| long tau | " + adaptive.metric + " |\n|---|---|")
        for v, s in adaptive.curve:
            print(f"| {v:g} | {s:.4f} |")
        summary["adaptive"] = adaptive.to_dict()
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "tune.json").write_text(json.dumps(summary, indent=2))
        print(f"wrote {out / 'tune.json'}")
    return 0


@_friendly
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.output, lengths=args.lengths, n_docs=args.n_docs, seed=args.seed, show_progress=not args.no_progress)
    return 0


def _two_ints(text: str) -> tuple[int, int]:
    parts = text.split(":")
    try:
        short, long = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SHORT:LONG token lengths, got {text!r}") from None
    return short, long


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a model (optionally patched) on tasks through mteb")
    _add_model_args(p)
    _add_task_args(p)
    _add_patch_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("compare", help="unpatched vs several patch settings on several tasks, with deltas")
    _add_model_args(p)
    _add_task_args(p)
    p.add_argument(
        "--setting",
        "-s",
        action="append",
        type=parse_setting,
        metavar="NAME:SETTINGS",
        help="a patch setting, e.g. 'tau0.9:temperature=0.9' or 'w64:{\"window\": 64}' (repeatable)",
    )
    p.add_argument("--temperatures", type=float, nargs="+", default=None, help="shortcut: one setting per temperature")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("diagnose", help="length-collapse diagnostics (cosine, anisotropy, effective rank per length)")
    _add_model_args(p)
    p.add_argument("--texts", required=True, help="BEIR folder / corpus.jsonl / jsonl with 'text' / plain text file")
    p.add_argument("--setting", "-s", action="append", type=parse_setting, metavar="NAME:SETTINGS")
    p.add_argument("--temperatures", type=float, nargs="+", default=None)
    p.add_argument(
        "--lengths", type=int, nargs="+", default=None, help="token lengths (default powers of two up to the model limit)"
    )
    p.add_argument("--mode", choices=("truncate", "natural"), default="truncate")
    p.add_argument("--per-group", type=int, default=64, help="texts per length group")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_diagnose)

    p = subparsers.add_parser("tune", help="pick tau on a dev task (fixed and length-adaptive)")
    _add_model_args(p)
    _add_task_args(p)
    p.add_argument("--grid", type=float, nargs="+", default=[0.7, 0.8, 0.85, 0.9, 0.95, 1.0])
    p.add_argument("--patch-json", default=None, help="other patch settings kept fixed while tuning (JSON object)")
    p.add_argument(
        "--adaptive",
        type=_two_ints,
        default=None,
        metavar="SHORT:LONG",
        help="also tune the length-adaptive tau's long_temperature between these token lengths",
    )
    p.add_argument("--adaptive-grid", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    p.add_argument("--adaptive-short-temperature", type=float, default=1.0)
    p.add_argument("--dev-corpus-size", type=int, default=None, help="dev task on a corpus subset (all judged docs + random)")
    p.add_argument("--dev-max-queries", type=int, default=None)
    p.set_defaults(func=cmd_tune)

    p = subparsers.add_parser("demo", help="offline demo on the packaged all-MiniLM-L6-v2 (a few minutes on CPU)")
    p.add_argument("--output", "-o", default="hf_sparse_tempscale_demo")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--n-docs", type=int, default=40, help="documents per length and task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
