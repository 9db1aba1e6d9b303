"""backend="auto": the fastest correct backend for the device, the sequence length and training vs inference.

The rules follow the measurements in benchmarks/ (see benchmarks/README.md):
- no window: the rule keeps (almost) every document key, so nothing is saved -> sdpa (TempScale alone, any pattern);
- GPU: FlexAttention (compiled Triton kernels, forward and backward) when available, else banded;
- CPU: banded from max(MIN_BANDED_LENGTH, BAND_FACTOR * (2w + 1)) tokens on (below it the dense fused kernel is as
  fast or faster); flex is never chosen on CPU automatically: it compiles once per shape (~20 s), has no CPU backward
  and was slower than banded in every CPU measurement.
"""

from __future__ import annotations

import torch

from ..config import SparseTempScaleConfig

# Shortest sequence for which banded beats dense sdpa on CPU (benchmarks/attention_kernels.py, one attention call:
# window 4: banded 0.73-0.78x stock time at 512 tokens, slower at 256; window 64: 1.6-1.7x at 512, 0.71-0.73x at
# 1024). A band of 2w+1 keys pays off once the sequence is ~7 bands long.
MIN_BANDED_LENGTH = 384
BAND_FACTOR = 7


def _flex_on(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        from .flex import flex_available

        import triton  # noqa: F401  (the GPU kernels are Triton)
    except ImportError:
        return False
    return flex_available()


def choose_backend(config: SparseTempScaleConfig, *, device, seq_len: int | None, training: bool) -> str:
    """Name of a registered backend (never "auto")."""
    if not config.is_sparse or config.window is None:
        return "sdpa"
    device = torch.device(device if device is not None else "cpu")
    if _flex_on(device):
        return "flex"
    if seq_len is not None and seq_len < max(MIN_BANDED_LENGTH, BAND_FACTOR * (2 * config.window + 1)):
        return "sdpa"
    return "banded"
