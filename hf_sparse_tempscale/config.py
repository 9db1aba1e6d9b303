"""`SparseTempScaleConfig`: the one settings object, validated on construction and stored in `config.json`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

CONFIG_VERSION = 1

PATTERNS: dict[str, dict[str, bool]] = {
    "full": dict(cls_query=True, cls_doc=True, query_cls=True, query_doc=True, doc_cls=True, doc_query=True),
    # Schlatt et al.'s released model: query tokens see neither [CLS] nor the document.
    "independent_query": dict(cls_query=True, cls_doc=True, query_cls=False, query_doc=False, doc_cls=True, doc_query=True),
    "cls_interaction": dict(cls_query=True, cls_doc=True, query_cls=False, query_doc=False, doc_cls=False, doc_query=False),
}
FLAG_NAMES = tuple(PATTERNS["full"])
APPLY_TO = ("encoder", "decoder", "cross")
BACKENDS = ("sdpa", "eager", "flex", "banded", "auto")
SEGMENT_KEYS = ("sep_token_id", "marker", "marker_ids")


def _check_temperature(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {value}")
    return value


@dataclass
class SparseTempScaleConfig:
    """Settings of one patch.

    Attention becomes softmax((Q K^T * s + bias + mask) / tau) over the keys allowed by the token-group rules:
    [CLS], query (+ first [SEP]) and document (+ final [SEP]); document->document is limited to |i-j| <= window.
    """

    temperature: float | list[float] = 1.0
    scale_position_bias: bool = True
    window: int | None = None
    pattern: str = "full"
    cls_query: bool | None = None
    cls_doc: bool | None = None
    query_cls: bool | None = None
    query_doc: bool | None = None
    doc_cls: bool | None = None
    doc_query: bool | None = None
    layers: list[int] | None = None
    apply_to: tuple[str, ...] = ("encoder",)
    segments: dict[str, Any] = field(default_factory=dict)
    backend: str = "sdpa"
    # Length-adaptive tau: `temperature` up to short_length tokens, `long_temperature` from long_length on,
    # linear in log(length) between (length = non-padding tokens of each sequence).
    length_adaptive: dict[str, float] | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.temperature, (list, tuple)):
            if not self.temperature:
                raise ValueError("temperature list must not be empty")
            self.temperature = [_check_temperature(t, f"temperature[{i}]") for i, t in enumerate(self.temperature)]
        else:
            self.temperature = _check_temperature(self.temperature, "temperature")
        if not isinstance(self.scale_position_bias, bool):
            raise TypeError("scale_position_bias must be a bool")
        if self.window is not None:
            if isinstance(self.window, bool) or not isinstance(self.window, int):
                raise TypeError(f"window must be an int >= 0 or None, got {self.window!r}")
            if self.window < 0:
                raise ValueError(f"window must be >= 0 or None, got {self.window}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; choose one of {sorted(PATTERNS)}")
        for name in FLAG_NAMES:
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool or None, got {value!r}")
        if self.layers is not None:
            if isinstance(self.layers, int) or not all(isinstance(i, int) and not isinstance(i, bool) for i in self.layers):
                raise TypeError(f"layers must be a list of ints, got {self.layers!r}")
            self.layers = sorted(set(self.layers))
            if not self.layers:
                raise ValueError("layers must name at least one layer index (None = all layers)")
        if isinstance(self.apply_to, str):
            self.apply_to = (self.apply_to,)
        self.apply_to = tuple(self.apply_to)
        bad = [a for a in self.apply_to if a not in APPLY_TO]
        if bad or not self.apply_to:
            raise ValueError(f"apply_to must be a non-empty subset of {APPLY_TO}, got {self.apply_to!r}")
        if not isinstance(self.segments, dict):
            raise TypeError("segments must be a dict")
        unknown = set(self.segments) - set(SEGMENT_KEYS)
        if unknown:
            raise ValueError(f"unknown segments keys {sorted(unknown)}; allowed: {SEGMENT_KEYS}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {BACKENDS}")
        if self.length_adaptive is not None:
            self._check_length_adaptive()
        if self.version != CONFIG_VERSION:
            raise ValueError(f"unsupported config version {self.version} (this library writes {CONFIG_VERSION})")

    def _check_length_adaptive(self) -> None:
        la = dict(self.length_adaptive)
        keys = {"short_length", "long_length", "long_temperature"}
        if set(la) != keys:
            raise ValueError(f"length_adaptive needs exactly the keys {sorted(keys)}, got {sorted(la)}")
        if isinstance(self.temperature, list):
            raise ValueError("length_adaptive cannot be combined with a per-layer temperature list")
        short, long = la["short_length"], la["long_length"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (short, long)) or not 1 <= short < long:
            raise ValueError(f"length_adaptive needs integers 1 <= short_length < long_length, got {short}, {long}")
        la["long_temperature"] = _check_temperature(la["long_temperature"], "length_adaptive.long_temperature")
        self.length_adaptive = la

    # ---- derived views -------------------------------------------------------------------------
    @property
    def flags(self) -> dict[str, bool]:
        """The six cross-group flags: the pattern's, with explicit overrides applied."""
        base = dict(PATTERNS[self.pattern])
        base.update({n: getattr(self, n) for n in FLAG_NAMES if getattr(self, n) is not None})
        return base

    @property
    def is_sparse(self) -> bool:
        """True when the mask differs from plain padding (so token groups must be found)."""
        return self.window is not None or not all(self.flags.values())

    @property
    def has_temperature(self) -> bool:
        t = self.temperature
        return self.length_adaptive is not None or any(v != 1.0 for v in (t if isinstance(t, list) else [t]))

    def layer_temperature(self, layer: int) -> float:
        t = self.temperature
        return t[layer] if isinstance(t, list) else t

    # ---- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["apply_to"] = list(self.apply_to)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SparseTempScaleConfig":
        if not isinstance(data, dict):
            raise TypeError(f"expected a dict, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown SparseTempScaleConfig fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**data)

    def replace(self, **overrides: Any) -> "SparseTempScaleConfig":
        """A new validated config with some fields changed (unknown names raise)."""
        data = self.to_dict()
        if "pattern" in overrides:  # a new preset resets flag overrides that came with the old one
            data.update({n: None for n in FLAG_NAMES})
        data.update(overrides)
        return self.from_dict(data)
