"""patch_model / unpatch_model: switch one model instance to our attention function, and back, exactly."""

from __future__ import annotations

import contextlib
import inspect
import types
from typing import Any

import torch
from transformers import PreTrainedModel

from . import attention
from .attention import ATTENTION_NAME, STATES, PatchState, Site
from .config import SparseTempScaleConfig
from .segments import SegmentSpec
from .support import support_for

CONFIG_KEY = "sparse_tempscale"  # attribute of model.config, saved in config.json
_SITE_ATTR = "_sparse_tempscale_site"
_UNDO_ATTR = "_sparse_tempscale_undo"


class _Missing:
    """Marks an attribute that was absent before patching; a single instance, kept through deepcopy and pickle."""

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return "_MISSING"


_MISSING = _Missing()


def unwrap(model: Any) -> PreTrainedModel:
    """The transformers model inside a SentenceTransformer, CrossEncoder or PEFT wrapper."""
    for _ in range(8):
        if hasattr(model, "get_base_model"):  # peft.PeftModel
            model = model.get_base_model()
        elif isinstance(model, PreTrainedModel):
            return model
        elif hasattr(model, "auto_model"):  # sentence_transformers Transformer module
            model = model.auto_model
        elif isinstance(model, torch.nn.Sequential) and len(model):  # SentenceTransformer / CrossEncoder
            model = model[0]
        else:
            break
    raise TypeError(
        "patch_model expects a transformers PreTrainedModel, a SentenceTransformer, a CrossEncoder or a PEFT "
        f"model; got {type(model).__name__}"
    )


def _tokenizer_of(model: Any):
    return getattr(model, "tokenizer", None)


def _segment_spec(hf: PreTrainedModel, cfg: SparseTempScaleConfig, tokenizer, has_cls: bool, separator: str | None) -> SegmentSpec:
    seg = dict(cfg.segments)
    sep = seg.get("sep_token_id")
    if sep is None and separator is not None:
        sep = getattr(tokenizer, separator, None) if tokenizer is not None else None
        if sep is None:
            sep = getattr(hf.config, "sep_token_id", None)
        if sep is None and hf.config.model_type in ("roberta", "xlm-roberta"):
            sep = hf.config.eos_token_id  # RoBERTa's separator is </s>
    marker_ids = seg.get("marker_ids")
    if marker_ids is None and seg.get("marker") is not None:
        if tokenizer is None:
            raise ValueError("segments={'marker': ...} needs a tokenizer: pass patch_model(..., tokenizer=tok)")
        marker_ids = tokenizer(seg["marker"], add_special_tokens=False)["input_ids"]
        if not marker_ids:
            raise ValueError(f"the marker {seg['marker']!r} tokenizes to no tokens")
    return SegmentSpec(has_cls=has_cls, sep_token_id=sep, marker_ids=tuple(marker_ids) if marker_ids else None)


class _CapturedForward:
    """`module.forward` while patched: records the inputs the mask function needs, then runs the real forward
    (sentence-transformers and PEFT call `model.forward` directly, so forward hooks would be skipped).
    `segment_ids` is ours: removed here, and handed on to a nested patched stack of the same call
    (T5ForConditionalGeneration -> its encoder).

    A plain object holding its module and state (no closure, no `__wrapped__`), so `copy.deepcopy` and pickling
    (multi-process encode) carry a working patch along with the model, and accelerate's forward unwrapping
    stops here."""

    def __init__(self, module: torch.nn.Module, state: PatchState, inner) -> None:
        self.module, self.state = module, state
        self.inner = inner  # an instance-level forward set by someone else before patching, or None
        self.names = list(inspect.signature(self._target()).parameters)

    def _target(self):
        return self.inner if self.inner is not None else types.MethodType(type(self.module).forward, self.module)

    @property
    def __signature__(self) -> inspect.Signature:  # callers that inspect `model.forward` see the real one
        return inspect.signature(self._target())

    def __call__(self, *args, **kwargs):
        module, state = self.module, self.state
        if args and args[0] is module:  # re-bound as a method by a wrapper (accelerate's unwrap_model)
            args = args[1:]
        STATES[id(module.config)] = state  # a no-op, except on a copy: registers the copy's own config
        segment_ids = kwargs.pop("segment_ids", None)
        given = dict(zip(self.names, args))
        given.update(kwargs)
        ref = given.get("input_ids")
        if ref is None:
            ref = given.get("attention_mask")
        outer = state.inputs.get("segment_ids") if state.depth and state.inputs else None
        if segment_ids is None and outer is not None and ref is not None and outer.shape == ref.shape:
            segment_ids = outer
        state.inputs = {
            "input_ids": given.get("input_ids"),
            "attention_mask": given.get("attention_mask"),
            "token_type_ids": given.get("token_type_ids"),
            "segment_ids": segment_ids,
        }
        state.depth += 1
        try:
            return self._target()(*args, **kwargs)
        finally:
            state.depth -= 1


def _capture_inputs(module: torch.nn.Module, state: PatchState) -> None:
    module.__dict__["forward"] = _CapturedForward(module, state, module.__dict__.get("forward"))


def _probe_inputs(hf: PreTrainedModel) -> dict[str, torch.Tensor]:
    device = next(hf.parameters()).device
    vocab = int(getattr(hf.config, "vocab_size", 100) or 100)
    ids = torch.arange(5, device=device)[None] % vocab
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "segment_ids": torch.tensor([[0, 0, 1, 1, 1]], device=device)}
    if getattr(hf.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids[:, :3]
    return inputs


def _probe_sites(hf: PreTrainedModel, state: PatchState) -> dict[int, Site]:
    """Runs a 5-token forward and records which modules called our attention function, in order."""
    attention.PROBE = []
    modes = {m: m.training for m in hf.modules()}
    try:
        hf.eval()
        with torch.no_grad():
            hf(**_probe_inputs(hf))
        calls = attention.PROBE
    finally:
        attention.PROBE = None
        for m, mode in modes.items():
            m.training = mode
    sites, counts = {}, {"encoder": 0, "decoder": 0, "cross": 0}
    for module, q_len, kv_len in calls:
        if id(module) in sites:
            continue
        is_decoder = bool(getattr(getattr(module, "config", None), "is_decoder", False))
        role = ("cross" if q_len != kv_len else "decoder") if is_decoder else "encoder"
        sites[id(module)] = (module, Site(state, role, counts[role]))
        counts[role] += 1
    return sites


def _check_layers(cfg: SparseTempScaleConfig, sites: dict) -> None:
    counts: dict[str, int] = {}
    for _, site in sites.values():
        counts[site.role] = counts.get(site.role, 0) + 1
    n = max((counts.get(r, 0) for r in cfg.apply_to), default=0)
    if n == 0:
        raise ValueError(f"apply_to={cfg.apply_to} matches no attention layer of this model (has: {sorted(counts)})")
    if cfg.layers is not None and (cfg.layers[0] < 0 or cfg.layers[-1] >= n):
        raise ValueError(f"layers={cfg.layers} out of range: the model has {n} layers (0..{n - 1})")
    if isinstance(cfg.temperature, list) and len(cfg.temperature) != n:
        raise ValueError(f"temperature has {len(cfg.temperature)} values but the model has {n} layers")


def patch_model(model: Any, config: SparseTempScaleConfig | dict | None = None, *, tokenizer=None, **overrides) -> Any:
    """Patch `model` in place (and return it): TempScale and token-group sparse attention.

    Calling it again replaces the settings. Nothing in the state_dict changes; `unpatch_model` undoes it exactly.
    """
    hf = unwrap(model)
    current = get_patch_config(model)
    if isinstance(config, dict):
        config = SparseTempScaleConfig.from_dict(config)
    elif config is not None and not isinstance(config, SparseTempScaleConfig):
        raise TypeError(f"config must be a SparseTempScaleConfig or dict, got {type(config).__name__}")
    base = config or current or SparseTempScaleConfig()
    cfg = base.replace(**overrides) if overrides else base
    support = support_for(hf.config.model_type, hf._can_set_attn_implementation())
    spec = _segment_spec(hf, cfg, tokenizer or _tokenizer_of(model), support.has_cls, support.separator)

    undo = getattr(hf, _UNDO_ATTR, None)
    if undo is not None:  # re-patch: validate against known sites, then swap settings atomically
        state: PatchState = undo["state"]
        _check_layers(cfg, state.sites)
        state.config, state.spec = cfg, spec
        hf.config.__dict__[CONFIG_KEY] = cfg.to_dict()
        return model

    configs = {id(m.config): m.config for m in hf.modules() if isinstance(m, PreTrainedModel)}
    undo = {
        "impl": {cid: c._attn_implementation_internal for cid, c in configs.items()},
        "configs": configs,
        "saved": hf.config.__dict__.get(CONFIG_KEY, _MISSING),
        "forwards": {},
    }
    state = PatchState(cfg, spec, hf)
    undo["state"] = state
    setattr(hf, _UNDO_ATTR, undo)
    try:
        for cid in configs:
            STATES[cid] = state
        innermost = {}
        for m in hf.modules():
            if isinstance(m, PreTrainedModel):
                innermost[id(m.config)] = m
        for m in innermost.values():
            undo["forwards"][m] = m.__dict__.get("forward", _MISSING)
            _capture_inputs(m, state)
        for c in configs.values():
            c._attn_implementation_internal = ATTENTION_NAME
        sites = _probe_sites(hf, state)
        if not sites:
            raise ValueError(
                f"{type(hf).__name__} ({hf.config.model_type}) did not call the patched attention function: its "
                "attention does not go through transformers' AttentionInterface, so it cannot be patched"
            )
        _check_layers(cfg, sites)
        for module, site in sites.values():
            module.__dict__[_SITE_ATTR] = site
        state.sites = sites
        hf.config.__dict__[CONFIG_KEY] = cfg.to_dict()
    except BaseException:
        _restore(hf)
        raise
    return model


def _restore(hf: PreTrainedModel) -> None:
    undo = hf.__dict__.pop(_UNDO_ATTR)
    for m, previous in undo["forwards"].items():
        if previous is _MISSING:
            m.__dict__.pop("forward", None)
        else:
            m.__dict__["forward"] = previous
    for cid, c in undo["configs"].items():
        c._attn_implementation_internal = undo["impl"][cid]
        if STATES.get(id(c)) is undo["state"]:  # id(c), not cid: after a deepcopy they differ
            del STATES[id(c)]
    for m in hf.modules():
        m.__dict__.pop(_SITE_ATTR, None)
    if undo["saved"] is _MISSING:
        hf.config.__dict__.pop(CONFIG_KEY, None)
    else:
        hf.config.__dict__[CONFIG_KEY] = undo["saved"]


def unpatch_model(model: Any) -> Any:
    """Restore the exact behaviour from before `patch_model` (a no-op on an unpatched model)."""
    hf = unwrap(model)
    if getattr(hf, _UNDO_ATTR, None) is not None:
        _restore(hf)
    return model


def is_patched(model: Any) -> bool:
    return getattr(unwrap(model), _UNDO_ATTR, None) is not None


def get_patch_config(model: Any) -> SparseTempScaleConfig | None:
    undo = getattr(unwrap(model), _UNDO_ATTR, None)
    return undo["state"].config if undo is not None else None


@contextlib.contextmanager
def patched(model: Any, config: SparseTempScaleConfig | dict | None = None, **settings):
    """Temporarily patch (or re-patch with other settings); restores the previous state on exit."""
    previous = get_patch_config(model)
    patch_model(model, config, **settings)
    try:
        yield model
    finally:
        if previous is None:
            unpatch_model(model)
        else:
            patch_model(model, previous)
