"""Question: how much faster / leaner is a whole encoder forward (and forward+backward) with each backend, and how
close does it get to the attention-free lower bound?

BERT-base-shaped and T5-base-shaped encoders (768 hidden, 12 heads, 3072 FFN; random weights; `--layers` deep,
default 2: the ratios are per-layer work, embedding costs aside) on one cross-encoder-like sequence ([CLS] + 16 query
tokens + document) of 512..4096 tokens; windows 4 and 64; presets full and independent_query; temperature 0.9.
Variants: stock dense sdpa (baseline, unpatched), patched sdpa (dense boolean mask), banded, flex (compiled; CPU:
inference only), and the attention-free bound (attention = identity on the values, registered as an attention
function). Dropout is 0 so that training steps run the same kernels as inference.

    python benchmarks/encoder_speed.py --model bert          # ~15 min on 1 thread
    python benchmarks/encoder_speed.py --model t5
    python benchmarks/encoder_speed.py --quick               # smoke run
"""

from __future__ import annotations

import copy
import time

import torch
from common import base_parser, fmt_mb, fmt_ms, fmt_ratio, interleaved, peak_memory, setup, write
from encoders import attention_free_copy, build, inputs

from hf_sparse_tempscale import patch_model


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--model", nargs="+", default=["bert", "t5"], choices=["bert", "t5"])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    p.add_argument("--windows", type=int, nargs="+", default=[4, 64])
    p.add_argument("--presets", nargs="+", default=["full", "independent_query"])
    p.add_argument("--modes", nargs="+", default=["inference", "training"])
    p.add_argument("--backends", nargs="+", default=["sdpa", "banded", "flex"])
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--freeze-position-bias", action="store_true",
                   help="T5: no gradient for the relative-bias table (isolates its dense backward; own result file)")
    args = p.parse_args()
    setup(args)
    if args.quick:
        args.lengths, args.windows, args.presets, args.model = [512], [4], ["independent_query"], args.model[:1]
    torch._dynamo.config.recompile_limit = 64  # flex on CPU compiles once per shape
    device = torch.device(args.device)
    rows = []
    for kind in args.model:
        stock = build(kind, args.layers, max(args.lengths)).to(device)
        if args.freeze_position_bias:  # copies below inherit it
            for name, param in stock.named_parameters():
                if "relative_attention_bias" in name:
                    param.requires_grad_(False)
        free = attention_free_copy(stock)
        patched = patch_model(copy.deepcopy(stock), temperature=args.temperature)  # re-patched per variant
        for length in args.lengths:
            stock_in, patched_in = inputs(kind, length, args.batch, device)
            for mode in args.modes:
                train = mode == "training"
                for m in (stock, free, patched):
                    m.train(train)

                def run(model, kwargs):
                    def call():
                        if not train:
                            with torch.no_grad():
                                return model(**kwargs).last_hidden_state
                        out = model(**kwargs).last_hidden_state
                        out.float().pow(2).mean().backward()
                        model.zero_grad(set_to_none=True)
                        return None
                    return call

                fns = {"stock_sdpa": run(stock, stock_in), "attention_free": run(free, stock_in)}
                prepare = {}
                for preset in args.presets:
                    for window in args.windows:
                        for name in args.backends:
                            if name == "flex" and train and device.type == "cpu":
                                continue  # no CPU backward in FlexAttention (it would fall back to banded)
                            key = f"{name}:{preset}/w{window}"
                            fns[key] = run(patched, patched_in)
                            prepare[key] = (lambda preset=preset, window=window, name=name:
                                            patch_model(patched, temperature=args.temperature, window=window,
                                                        pattern=preset, backend=name))
                first = {}
                for name, fn in fns.items():  # compilation and lazy setup outside the timing
                    prepare.get(name, lambda: None)()
                    t0 = time.perf_counter()
                    fn()
                    first[name] = time.perf_counter() - t0
                timing = interleaved(fns, repeats=args.repeats, warmup=args.warmup, device=device, prepare=prepare)
                memory = {}
                for name, fn in fns.items():
                    prepare.get(name, lambda: None)()
                    memory[name] = None if name.startswith("flex") and device.type == "cpu" else peak_memory(fn, device)
                base = timing["stock_sdpa"][args.clock]
                bound = timing["attention_free"][args.clock]
                for name in fns:
                    variant, _, cfg = name.partition(":")
                    preset, _, w = cfg.partition("/w")
                    dense_key = f"sdpa:{cfg}"
                    mem = memory[name]
                    row = {
                        "model": kind, "layers": args.layers, "length": length, "mode": mode, "variant": variant,
                        "preset": preset or "-", "window": int(w) if w else None,
                        "time_s": timing[name][args.clock], "wall_s": timing[name]["wall"], "cpu_s": timing[name]["cpu"],
                        "speedup_vs_stock": base / timing[name][args.clock],
                        "time_vs_attention_free": timing[name][args.clock] / bound,
                        "peak_bytes": mem,
                        "memory_vs_stock": None if mem is None else mem / memory["stock_sdpa"],
                        "memory_vs_patched_sdpa": None if mem is None or memory.get(dense_key) is None else mem / memory[dense_key],
                        "first_call_s": first[name],
                        "samples": timing[name][f"{args.clock}_all"],
                    }
                    rows.append(row)
                    print(kind, length, mode, name, f"x{row['speedup_vs_stock']:.2f} vs stock,",
                          f"{row['time_vs_attention_free']:.3f} of bound", flush=True)
    columns = [
        ("model", "model", str), ("length", "tokens", str), ("mode", "mode", str), ("preset", "preset", str),
        ("window", "w", str), ("variant", "variant", str), ("time_s", "ms", fmt_ms),
        ("speedup_vs_stock", "speed-up vs stock sdpa", fmt_ratio),
        ("time_vs_attention_free", "time / attention-free", fmt_ratio),
        ("peak_bytes", "peak MiB", fmt_mb), ("memory_vs_stock", "mem / stock", fmt_ratio),
        ("memory_vs_patched_sdpa", "mem / patched sdpa", fmt_ratio),
    ]
    notes = [
        f"{args.layers}-layer BERT-base / T5-base shaped encoders, random weights, batch {args.batch}, dropout 0, "
        f"temperature {args.temperature} for the patched variants",
        "stock_sdpa = unpatched model with attn_implementation='sdpa' (CPU: fused flash kernel, no mask with full "
        "attention_mask); sdpa = patched, dense (B,1,L,L) bool mask; attention_free = attention replaced by identity",
        "time / attention-free: 1.00 is the physical limit of what sparsity can buy (target: <= 1.10 at 4096 "
        "inference, <= 1.05 at 512 inference, <= 1.15 for training at 2048)",
        "peak MiB: tensors allocated inside one call (activations, saved tensors, gradients), weights excluded; "
        "flex on CPU is n/a (compiled kernels allocate outside the tracker)",
    ]
    if args.freeze_position_bias:
        notes.append("relative-bias table frozen (requires_grad=False) in every variant")
    name = "encoder_speed" + ("_" + "_".join(args.model) if args.model != ["bert", "t5"] else "")
    write(name + ("_frozen_bias" if args.freeze_position_bias else ""), args, rows, columns, notes)


if __name__ == "__main__":
    main()
