"""Shared benchmark machinery: interleaved timing, tensor peak memory, model builders, JSON + markdown output.

Method (every script): all variants of one question run in the same process, interleaved (repeat r runs every
variant once, in a rotated order) so that load from other processes hits them alike; after warm-up, the median of
the repeats is reported, both as wall-clock and as process CPU time. Figures are ratios against a baseline of the
same run. Peak memory is the peak of live tensor bytes allocated inside the measured call (a TorchDispatchMode
tracker): exact for eager PyTorch, blind to buffers that compiled (inductor) kernels allocate themselves.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
import weakref
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

RESULTS = Path(__file__).resolve().parent / "results"


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smoke run: short lengths, one repeat")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable under shared load)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per variant (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="clock the ratios use: process CPU time (robust to other processes) or wall time")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--device", default="cpu")
    return p


def setup(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.quick:
        args.repeats, args.warmup = 1, 1


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int, device="cpu",
                prepare: dict[str, Callable[[], None]] | None = None) -> dict[str, dict]:
    """{name: {"wall": median s, "cpu": median s, "wall_all": [...], "cpu_all": [...]}}; `prepare[name]` runs
    untimed before each call of fns[name] (e.g. switching a model's settings)."""
    names = list(fns)
    prepare = prepare or {}
    for _ in range(warmup):
        for name in names:
            prepare.get(name, lambda: None)()
            fns[name]()
    walls = {n: [] for n in names}
    cpus = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            prepare.get(name, lambda: None)()
            sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            sync(device)
            walls[name].append(time.perf_counter() - w0)
            cpus[name].append(time.process_time() - c0)
    return {
        n: {"wall": statistics.median(walls[n]), "cpu": statistics.median(cpus[n]), "wall_all": walls[n], "cpu_all": cpus[n]}
        for n in names
    }


class TensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storages allocated (and still alive) while active; pre-existing storages don't count."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int, size: int) -> None:
        if self.live.pop(key, None) is not None:
            self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.is_meta:
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self.live or key in inputs:
                continue  # a view / in-place result of something already counted or pre-existing
            self.live[key] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key, size)
        return out


def peak_memory(fn: Callable[[], object], device="cpu") -> int:
    """Peak tensor bytes of one call (CUDA: the allocator's own peak)."""
    if torch.device(device).type == "cuda":
        from hf_sparse_tempscale.backends.banded import release_workspace

        release_workspace()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from hf_sparse_tempscale.backends.banded import release_workspace

    release_workspace()  # the banded kernel's kept inference buffers count as this call's memory
    tracker = TensorPeak()
    with tracker:
        result = fn()
    del result
    return tracker.peak


def environment(args) -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_start": load,
        "device": str(args.device),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "clock": args.clock,
    }


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def fmt_ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1e3:.1f}"


def fmt_mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 2**20:.1f}"


def write(name: str, args, rows: list[dict], columns: list[tuple[str, str, Callable]], notes: list[str]) -> None:
    """results/<name>.json (everything) and results/<name>.md (a table of `columns`: (key, header, formatter))."""
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(args)
    env["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    suffix = "_quick" if args.quick else ""
    (args.out / f"{name}{suffix}.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1, default=str))
    lines = [f"### {name}", "", f"`{env['command']}` — torch {env['torch']}, {env['threads']} thread(s), "
             f"{env['cpu_count']} cores, load average {env['load_average_start']} -> {env['load_average_end']}, "
             f"median of {env['repeats']} after {env['warmup']} warm-up, ratios on {env['clock']} time.", ""]
    lines += [f"- {n}" for n in notes]
    lines += ["", "| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f(row.get(k)) if f else str(row.get(k, "")) for k, _, f in columns) + " |")
    (args.out / f"{name}{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
