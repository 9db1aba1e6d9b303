"""The attention and mask functions registered with transformers under one neutral name.

Data flow: patch state (config + segment spec) -> mask function (once per forward: token groups -> backend mask)
-> attention function (per layer: temperature -> backend) -> model output.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

from .backends import PreparedMask, get_backend
from .config import SparseTempScaleConfig
from .segments import SegmentSpec, find_groups

ATTENTION_NAME = "sparse_tempscale"


@dataclass
class PatchState:
    """Runtime state of one patched model (never serialised)."""

    config: SparseTempScaleConfig
    spec: SegmentSpec
    model: Any
    inputs: dict[str, Any] | None = None  # set by the captured forward, consumed by the mask function
    sites: dict[int, "Site"] = field(default_factory=dict)
    depth: int = 0  # nesting of captured forwards within one call


@dataclass(frozen=True)
class Site:
    """One attention module: which role and layer it has, and whether the patch applies to it."""

    state: PatchState
    role: str  # "encoder" | "decoder" | "cross"
    layer: int

    @property
    def active(self) -> bool:
        cfg = self.state.config
        return self.role in cfg.apply_to and (cfg.layers is None or self.layer in cfg.layers)


# id(config) -> state; a model's sub-configs (T5 encoder/decoder stacks) each map to the same state.
# Weak: the model holds its state, so a dropped patched model (or copy) is not kept alive by this table.
STATES: "weakref.WeakValueDictionary[int, PatchState]" = weakref.WeakValueDictionary()
# While set, the attention function records (module, q_len, kv_len) of every call (the patch-time probe).
PROBE: list | None = None


def _choose_backend(cfg: SparseTempScaleConfig, state: PatchState, device, seq_len: int) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    try:
        from .backends.auto import choose_backend
    except ImportError:
        return "sdpa"
    return choose_backend(cfg, device=device, seq_len=seq_len, training=bool(state.model.training))


def mask_function(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, attention_mask=None, config=None, **kwargs):
    """Builds the layer-shared mask once per forward. Encoder self-attention gets the token-group rule;
    decoder and cross-attention masks stay stock (only the temperature applies there)."""
    state = STATES.get(id(config))
    cfg = state.config if state is not None else None
    device = kwargs.get("device", "cpu")
    encoder_self = state is not None and not getattr(config, "is_decoder", False) and q_length == kv_length
    name = _choose_backend(cfg, state, device, kv_length) if encoder_self else (cfg.backend if cfg else "sdpa")
    if name not in ("sdpa", "eager") and not encoder_self:
        name = "sdpa"
    padding = attention_mask.bool() if attention_mask is not None else None

    if not encoder_self or (not cfg.is_sparse and name in ("sdpa", "eager")):
        stock_kwargs = dict(kwargs)
        if name == "eager":  # eager cannot fall back on sdpa's is_causal flag
            stock_kwargs.update(allow_is_causal_skip=False, allow_is_bidirectional_skip=False)
        stock = sdpa_mask(
            batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
            kv_offset=kv_offset, attention_mask=attention_mask, config=config, **stock_kwargs,
        )
        lengths = None
        if encoder_self and cfg.length_adaptive is not None:
            lengths = padding.sum(-1) if padding is not None else torch.full((batch_size,), kv_length, device=device)
        return PreparedMask(name, stock, None, lengths, padding)

    groups = None
    if cfg.is_sparse:
        inputs, state.inputs = state.inputs, None  # consumed: never reused by a later forward
        if inputs is None:
            raise RuntimeError(
                "sparse_tempscale: the mask was requested outside a forward of the patched model; call the model "
                "(or its encoder) itself rather than inner modules"
            )
        groups = find_groups(
            state.spec, shape=(batch_size, kv_length), need_pairs=not all(cfg.flags.values()), **inputs
        )
        if padding is None:
            padding = groups >= 0
    lengths = None
    if cfg.length_adaptive is not None:
        lengths = padding.sum(-1) if padding is not None else torch.full((batch_size,), kv_length, device=device)
    backend = get_backend(name)
    mask = backend.build_mask(
        groups=groups, flags=cfg.flags, window=cfg.window, padding=padding,
        batch_size=batch_size, q_length=q_length, kv_length=kv_length, device=device,
    )
    return PreparedMask(name, mask, groups, lengths, padding)


def adaptive_temperature(lengths: torch.Tensor, tau: float, la: dict[str, float]) -> torch.Tensor:
    """Per-example tau: `tau` up to short_length tokens, `long_temperature` from long_length on, linear in log length."""
    lo, hi = math.log(la["short_length"]), math.log(la["long_length"])
    frac = ((lengths.float().clamp(min=1).log() - lo) / (hi - lo)).clamp(0.0, 1.0)
    return tau + frac * (la["long_temperature"] - tau)


def attention_function(module, query, key, value, attention_mask, scaling=None, dropout=0.0, position_bias=None, **kwargs):
    """softmax((Q K^T * s + bias + mask) / tau) with the backend chosen by the mask function."""
    if PROBE is not None:
        PROBE.append((module, query.shape[-2], key.shape[-2]))
    prepared = attention_mask if isinstance(attention_mask, PreparedMask) else PreparedMask("sdpa", attention_mask)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    site: Site | None = getattr(module, "_sparse_tempscale_site", None)
    backend, mask = get_backend(prepared.backend), prepared.mask

    if site is None or not site.active:
        if prepared.groups is not None or prepared.backend not in ("sdpa", "eager"):
            # Layers outside `layers` keep stock attention: padding only.
            backend = get_backend("eager" if prepared.backend == "eager" else "sdpa")
            mask = None if prepared.padding is None else prepared.padding[:, None, None, :]
        return backend.attend(
            module, query, key, value, mask, scaling=scaling, dropout=dropout, position_bias=position_bias,
            need_weights=backend.name == "eager",
        )

    cfg = site.state.config
    tau = cfg.layer_temperature(site.layer)
    bias_scale = None  # 1/tau for the position bias: a number, or (B, 1, 1, 1) with length-adaptive tau
    if cfg.length_adaptive is not None and site.role == "encoder" and prepared.lengths is not None:
        bias_scale = (1.0 / adaptive_temperature(prepared.lengths, tau, cfg.length_adaptive)).to(query.dtype)
        bias_scale = bias_scale[:, None, None, None]
        query = query * bias_scale
    elif tau != 1.0:
        scaling = scaling / tau
        bias_scale = 1.0 / tau
    extra = {}
    if position_bias is not None and cfg.scale_position_bias and bias_scale is not None:
        if getattr(backend, "takes_bias_scale", False):
            extra["bias_scale"] = bias_scale  # the backend scales only the entries it reads
        elif isinstance(bias_scale, torch.Tensor):
            position_bias = position_bias * bias_scale
        else:  # divide, as before this backend option existed: the sdpa/eager reference keeps its exact values
            position_bias = position_bias / tau
    return backend.attend(
        module, query, key, value, mask, scaling=scaling, dropout=dropout, position_bias=position_bias,
        need_weights=backend.name == "eager", **extra,
    )


def register() -> None:
    """Idempotent global registration; models opt in per instance through their config."""
    AttentionInterface.register(ATTENTION_NAME, attention_function)
    AttentionMaskInterface.register(ATTENTION_NAME, mask_function)
    assert ALL_MASK_ATTENTION_FUNCTIONS[ATTENTION_NAME] is mask_function


register()
