"""The SCB benchmark: which models/methods recover the sparse support, how a window mask and transfer change the
samples needed. Returns plain dicts (JSON-ready); `cli.py` writes them and the plot."""

from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from .data import make_instance, perturb_transition
from .models import LinearAttentionSCB, SoftmaxAttentionSCB
from .train import EvalSet, TrainConfig, TrainCurve, train
from .transfer import run_transfer

# Step sizes chosen on a separate instance (seed 100, N=20, T=64, Q=3, 100k samples), never on the reported seeds.
METHODS: dict[str, tuple[type, dict]] = {
    "linear-adam": (LinearAttentionSCB, dict(method="adam", lr=3e-3)),
    "linear-proximal": (LinearAttentionSCB, dict(method="proximal", lr=0.1, value_lr=0.1, l1=0.01)),
    "softmax-adam": (SoftmaxAttentionSCB, dict(method="adam", lr=3e-2)),
}


@dataclass
class BenchmarkConfig:
    vocab_size: int = 20
    seq_len: int = 64
    max_support: int = 3
    window: int = 8
    samples: int = 100_000
    batch_size: int = 64
    decay_samples: int | None = 5_000
    eval_points: int = 40
    eval_size: int = 2048
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    transfer_strength: float = 0.5
    recall_threshold: float = 0.9
    tv_threshold: float = 0.15
    methods: list[str] = field(default_factory=lambda: list(METHODS))

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        if not self.seeds:
            raise ValueError("need at least one seed")
        if not 0 <= self.transfer_strength <= 1:
            raise ValueError(f"transfer_strength must be in [0, 1], got {self.transfer_strength}")
        # The generator and TrainConfig own the rules on N, T, Q, window and the training sizes: ask them now,
        # before minutes of training.
        make_instance(self.vocab_size, self.seq_len, self.max_support, window=self.window)
        for method in self.methods:
            self.train_config(method, seed=0)

    def train_config(self, method: str, seed: int) -> TrainConfig:
        return TrainConfig(
            samples=self.samples,
            batch_size=self.batch_size,
            eval_points=self.eval_points,
            decay_samples=self.decay_samples,
            seed=seed,
            **METHODS[method][1],
        )


def _summary(curve: TrainCurve, cfg: BenchmarkConfig) -> dict:
    return {
        "samples_to_recall": curve.samples_to_reach("support_recall", cfg.recall_threshold),
        "samples_to_tv": curve.samples_to_reach("tv", cfg.tv_threshold),
        "final_recall": curve.support_recall[-1],
        "final_tv": curve.tv[-1],
        "final_off_support": curve.off_support[-1],
    }


def _record(experiment: str, variant: str, method: str, seed: int, curve: TrainCurve, cfg: BenchmarkConfig) -> dict:
    rounded = {k: [round(v, 5) if isinstance(v, float) and math.isfinite(v) else v for v in vals]
               for k, vals in curve.to_dict().items() if k != "train_loss"}
    return {"experiment": experiment, "variant": variant, "method": method, "seed": seed,
            "summary": _summary(curve, cfg), "curve": rounded}


def run_benchmark(cfg: BenchmarkConfig, *, progress: bool = True) -> dict:
    """All runs for every seed:

    - dense: instance with supports anywhere in the T positions, full attention;
    - windowed: instance with supports in the last `window` positions, full attention vs the library's window mask;
    - transfer: the dense run's trained model fine-tuned on a perturbed-P copy of the dense instance
      (`finetune`, `finetune_attention`) vs training from `scratch`.
    """
    start = time.perf_counter()
    runs: list[dict] = []
    instances: list[dict] = []
    for seed in cfg.seeds:
        dims = (cfg.vocab_size, cfg.seq_len, cfg.max_support)
        dense = make_instance(*dims, seed=seed)
        windowed = make_instance(*dims, seed=seed, window=cfg.window)
        target = perturb_transition(dense, cfg.transfer_strength, seed=seed + 1000)
        evals = {name: EvalSet.draw(inst, cfg.eval_size, seed=10_000 + seed)
                 for name, inst in (("dense", dense), ("windowed", windowed), ("target", target))}
        instances.append({
            "seed": seed,
            "transfer_mean_row_tv_P": round(0.5 * (target.P - dense.P).abs().sum(1).mean().item(), 5),
        })
        for method in cfg.methods:
            cls = METHODS[method][0]
            train_cfg = cfg.train_config(method, seed=seed + 1)
            tag = f"seed {seed} {method} "

            pretrained = cls.for_instance(dense)
            curve = train(pretrained, dense, train_cfg, evals["dense"], progress=progress, desc=tag + "dense")
            runs.append(_record("dense", "full attention", method, seed, curve, cfg))

            for variant, mask_window in (("full attention", None), ("window mask", cfg.window)):
                model = cls.for_instance(windowed, window=mask_window)
                curve = train(model, windowed, train_cfg, evals["windowed"], progress=progress, desc=tag + variant)
                runs.append(_record("windowed", variant, method, seed, curve, cfg))

            curves = run_transfer(pretrained, lambda: cls.for_instance(target), target, train_cfg,
                                  eval_set=evals["target"], progress=progress, desc=tag + "transfer ")
            for mode, curve in curves.items():
                runs.append(_record("transfer", mode, method, seed, curve, cfg))
    return {
        "benchmark": "sparse contextual bigram (Ren, Wang & Lee, arXiv 2410.23438)",
        "config": asdict(cfg),
        "methods": {name: {"model": cls.__name__, **kw} for name, (cls, kw) in METHODS.items() if name in cfg.methods},
        "instances": instances,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - start, 1)},
        "runs": runs,
        "table": summarize(runs),
    }


def _median_samples(values: list[int | None]) -> float | None:
    """Median over seeds, counting a run that never got there as infinitely late (None if the median is such)."""
    med = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(med) else med


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (experiment, variant, method): medians of samples-to-threshold, mean final metrics over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["experiment"], run["variant"], run["method"]), []).append(run["summary"])
    rows = []
    for (experiment, variant, method), sums in groups.items():
        col = lambda key: [s[key] for s in sums]  # noqa: E731
        rows.append({
            "experiment": experiment, "variant": variant, "method": method, "seeds": len(sums),
            "median_samples_to_recall": _median_samples(col("samples_to_recall")),
            "median_samples_to_tv": _median_samples(col("samples_to_tv")),
            "final_recall_mean": round(statistics.fmean(col("final_recall")), 4),
            "final_tv_mean": round(statistics.fmean(col("final_tv")), 4),
            "final_tv_std": round(statistics.pstdev(col("final_tv")), 4),
            "final_off_support_mean": round(statistics.fmean(col("final_off_support")), 4),
        })
    return rows


def format_table(result: dict) -> str:
    """Markdown table of `result["table"]`."""
    cfg = result["config"]
    fmt = lambda v: f">{cfg['samples']:,}" if v is None else f"{int(v):,}"  # noqa: E731
    lines = [
        f"| experiment | variant | method | samples to recall >= {cfg['recall_threshold']} | "
        f"samples to TV <= {cfg['tv_threshold']} | final recall | final TV | final off-support mass |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["table"]:
        lines.append(
            f"| {r['experiment']} | {r['variant']} | {r['method']} | {fmt(r['median_samples_to_recall'])} | "
            f"{fmt(r['median_samples_to_tv'])} | {r['final_recall_mean']:.3f} | "
            f"{r['final_tv_mean']:.3f} ± {r['final_tv_std']:.3f} | {r['final_off_support_mean']:.3f} |"
        )
    return "\n".join(lines)
