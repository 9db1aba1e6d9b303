"""Question: how fast and how memory-hungry is the attention operation alone, per backend?

One BERT-base-shaped attention call (12 heads x 64 dims, one sequence: [CLS] + 16 query tokens + document) at
512..4096 tokens, windows 4 and 64, presets full and independent_query; inference and forward+backward.
Baseline: stock dense sdpa without a mask. Also: patched sdpa (dense boolean mask), banded, flex (compiled,
inference on CPU only), and the attention-free lower bound (output = value). Mask building happens once per
forward and is reported separately (per forward, not per layer).

    python benchmarks/attention_kernels.py            # ~5-8 min on 1 thread
    python benchmarks/attention_kernels.py --quick    # smoke run
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from common import base_parser, fmt_mb, fmt_ms, fmt_ratio, interleaved, peak_memory, setup, write

from hf_sparse_tempscale.backends import get_backend
from hf_sparse_tempscale.config import PATTERNS
from hf_sparse_tempscale.masks import dense_mask

HEADS, DIM, QUERY = 12, 64, 16


class _Module:  # what sdpa_attention_forward reads from the attention module
    is_causal = False
    training = False


def groups_for(length: int, device) -> torch.Tensor:
    g = torch.full((1, length), 2, dtype=torch.int8, device=device)
    g[:, 0] = 0
    g[:, 1 : 1 + QUERY] = 1
    return g


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    p.add_argument("--windows", type=int, nargs="+", default=[4, 64])
    p.add_argument("--presets", nargs="+", default=["full", "independent_query"])
    p.add_argument("--modes", nargs="+", default=["inference", "training"])
    p.add_argument("--no-flex", action="store_true")
    args = p.parse_args()
    setup(args)
    if args.quick:
        args.lengths, args.windows, args.presets = [256, 512], [4], ["independent_query"]
    device = torch.device(args.device)
    module = _Module()
    rows = []
    for length in args.lengths:
        groups = groups_for(length, device)
        for mode in args.modes:
            train = mode == "training"
            q, k, v = (torch.randn(1, length, HEADS, DIM, device=device).transpose(1, 2) for _ in range(3))
            if train:
                for t in (q, k, v):
                    t.requires_grad_(True)
            grad_out = torch.randn(1, length, HEADS, DIM, device=device)
            scale = DIM**-0.5

            def run(fn):
                def call():
                    with torch.set_grad_enabled(train):
                        out = fn()
                        if train:
                            torch.autograd.backward(out, grad_out.view_as(out))
                            for t in (q, k, v):
                                t.grad = None
                        return out
                return call

            masks_by_config, builds = {}, {}
            fns = {
                "stock_sdpa": run(lambda: F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2)),
                "attention_free": run(lambda: v.transpose(1, 2) * 1.0),
            }
            for preset in args.presets:
                for window in args.windows:
                    cfg = f"{preset}/w{window}"
                    flags = PATTERNS[preset]
                    for name in ("sdpa", "banded") + (() if (train and device.type == "cpu") or args.no_flex else ("flex",)):
                        backend = get_backend(name)
                        t0 = time.perf_counter()
                        m = backend.build_mask(groups=groups, flags=flags, window=window, padding=None, batch_size=1,
                                               q_length=length, kv_length=length, device=device)
                        builds[(cfg, name)] = time.perf_counter() - t0
                        if name != "sdpa":  # second build: steady-state cost (first may include lazy setup)
                            t0 = time.perf_counter()
                            backend.build_mask(groups=groups, flags=flags, window=window, padding=None, batch_size=1,
                                               q_length=length, kv_length=length, device=device)
                            builds[(cfg, name)] = time.perf_counter() - t0
                        masks_by_config[(cfg, name)] = m
                        fns[f"{name}:{cfg}"] = run(
                            lambda backend=backend, m=m: backend.attend(module, q, k, v, m, scaling=scale, dropout=0.0,
                                                                         position_bias=None, need_weights=False)[0]
                        )
            compile_s = {}
            for name, fn in fns.items():  # compile / first-call costs outside the timing
                t0 = time.perf_counter()
                fn()
                compile_s[name] = time.perf_counter() - t0
            timing = interleaved(fns, repeats=args.repeats, warmup=args.warmup, device=device)
            memory = {}
            for name, fn in fns.items():
                memory[name] = None if name.startswith("flex") else peak_memory(fn, device)
            base = timing["stock_sdpa"][args.clock]
            for name in fns:
                backend_name, _, cfg = name.partition(":")
                preset, _, w = cfg.partition("/w")
                rows.append({
                    "length": length, "mode": mode, "variant": backend_name, "preset": preset or "-",
                    "window": int(w) if w else None,
                    "time_s": timing[name][args.clock], "wall_s": timing[name]["wall"], "cpu_s": timing[name]["cpu"],
                    "time_vs_stock": timing[name][args.clock] / base,
                    "peak_bytes": memory[name],
                    "memory_vs_stock": None if memory[name] is None or not memory["stock_sdpa"] else memory[name] / memory["stock_sdpa"],
                    "mask_build_s": builds.get((cfg, backend_name)),
                    "first_call_s": compile_s[name],
                    "samples": timing[name][f"{args.clock}_all"],
                })
                print(rows[-1]["length"], mode, name, f"{rows[-1]['time_vs_stock']:.3f}", flush=True)
    columns = [
        ("length", "tokens", str), ("mode", "mode", str), ("preset", "preset", str), ("window", "w", str),
        ("variant", "variant", str), ("time_s", "ms", fmt_ms), ("time_vs_stock", "time / stock sdpa", fmt_ratio),
        ("peak_bytes", "peak MiB", fmt_mb), ("memory_vs_stock", "memory / stock", fmt_ratio),
        ("mask_build_s", "mask build ms (per forward)", fmt_ms),
    ]
    notes = [
        "one attention call (1 x 12 heads x L x 64); stock_sdpa = F.scaled_dot_product_attention without mask "
        "(CPU: fused flash kernel, O(L) memory); sdpa = the patched reference with the dense (1,1,L,L) bool mask",
        "attention_free = output is the value tensor (the physical limit); flex = compiled FlexAttention, "
        "its memory is n/a (inductor buffers are invisible to the tensor tracker)",
        "mask build is paid once per forward, not per layer",
    ]
    write("attention_kernels", args, rows, columns, notes)


if __name__ == "__main__":
    main()
