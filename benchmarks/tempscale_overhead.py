"""Question: does TempScale alone (a temperature, no sparsity) cost anything over stock sdpa?

The same BERT-base-shaped encoder (random weights, `--layers` deep) unpatched vs patched with temperature 0.9 only
(backend sdpa, and backend auto which resolves to sdpa without a window), batches of padded and unpadded inputs.
The patch folds 1/tau into sdpa's `scale` argument, so the attention kernel is the very same call; what remains is
the mask function's per-forward bookkeeping. Target: under 2% (within noise).

    python benchmarks/tempscale_overhead.py        # ~3 min on 1 thread
"""

from __future__ import annotations

import copy

import torch
from common import base_parser, fmt_ms, interleaved, setup, write
from encoders import build

from hf_sparse_tempscale import patch_model


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--shapes", nargs="+", default=["8x128", "8x512", "1x2048"], help="BATCHxLENGTH")
    args = p.parse_args()
    if not any(a.startswith("--repeats") for a in __import__("sys").argv):
        args.repeats = 9  # the differences are small: more repeats than the other scripts
    setup(args)
    if args.quick:
        args.shapes = ["2x128"]
    stock = build("bert", args.layers, 2048)
    variants = {
        "stock_sdpa": stock,
        "tempscale_sdpa": patch_model(copy.deepcopy(stock), temperature=0.9),
        "tempscale_auto": patch_model(copy.deepcopy(stock), temperature=0.9, backend="auto"),
    }
    rows = []
    for shape in args.shapes:
        batch, length = map(int, shape.split("x"))
        g = torch.Generator().manual_seed(length)
        ids = torch.randint(1000, 20000, (batch, length), generator=g)
        for padded in (False, True):
            mask = torch.ones(batch, length, dtype=torch.long)
            if padded:  # a realistic batch: lengths from 50% to 100%
                for b in range(batch):
                    mask[b, int(length * (0.5 + 0.5 * b / max(1, batch - 1))) :] = 0
            inputs = {"input_ids": ids, "attention_mask": mask}

            def run(model):
                def call():
                    with torch.no_grad():
                        return model(**inputs).last_hidden_state
                return call

            t = interleaved({n: run(m) for n, m in variants.items()}, repeats=args.repeats, warmup=args.warmup)
            base = t["stock_sdpa"][args.clock]
            for name in variants:
                rows.append({"shape": shape, "padded": padded, "variant": name, "time_s": t[name][args.clock],
                             "overhead": t[name][args.clock] / base - 1, "samples": t[name][f"{args.clock}_all"]})
                print(shape, padded, name, f"{rows[-1]['overhead']:+.3%}", flush=True)
    columns = [("shape", "batch x tokens", str), ("padded", "padded", str), ("variant", "variant", str),
               ("time_s", "ms", fmt_ms), ("overhead", "overhead vs stock", lambda x: f"{100 * x:+.1f}%")]
    notes = [f"{args.layers}-layer BERT-base-shaped encoder, inference, temperature 0.9, no window / full pattern"]
    write("tempscale_overhead", args, rows, columns, notes)


if __name__ == "__main__":
    main()
