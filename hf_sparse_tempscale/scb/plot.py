"""Learning-curve figure of an SCB benchmark result (mean over seeds)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_STYLES = ["-", "--", ":"]
_COLUMNS = (
    ("dense", "dense instance"),
    ("windowed", "windowed instance (w = {window})"),
    ("transfer", "transfer to perturbed P"),
)


def plot_benchmark(result: dict, path: str | Path) -> Path:
    """2 x 3 grid: support recall (top) and TV to the true next-token distribution (bottom) against samples seen."""
    cfg = result["config"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), sharex=True)
    colors = {m: f"C{i}" for i, m in enumerate(cfg["methods"])}
    for col, (experiment, title) in enumerate(_COLUMNS):
        runs = [r for r in result["runs"] if r["experiment"] == experiment]
        variants = list(dict.fromkeys(r["variant"] for r in runs))
        for (method, variant) in dict.fromkeys((r["method"], r["variant"]) for r in runs):
            group = [r["curve"] for r in runs if r["method"] == method and r["variant"] == variant]
            samples = np.asarray(group[0]["samples"][1:])  # drop the 0 point on a log axis
            for row, metric in enumerate(("support_recall", "tv")):
                values = np.mean([c[metric][1:] for c in group], axis=0)
                label = method if len(variants) == 1 else f"{method}, {variant}"
                axes[row, col].plot(samples, values, _STYLES[variants.index(variant) % 3], color=colors[method],
                                    label=label)
        axes[0, col].set_title(title.format(window=cfg["window"]))
        axes[0, col].set_ylim(0, 1.02)
        axes[0, col].axhline(cfg["recall_threshold"], color="grey", lw=0.5)
        axes[1, col].axhline(cfg["tv_threshold"], color="grey", lw=0.5)
        axes[1, col].set_xlabel("training samples seen")
        axes[1, col].set_xscale("log")
        axes[0, col].legend(fontsize=7)
    axes[0, 0].set_ylabel("support recall")
    axes[1, 0].set_ylabel("TV(predicted, true next-token dist.)")
    fig.suptitle(
        f"Sparse contextual bigrams: N={cfg['vocab_size']}, T={cfg['seq_len']}, Q={cfg['max_support']}, "
        f"mean of {len(cfg['seeds'])} seeds"
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
