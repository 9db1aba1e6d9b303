"""LoRA through PEFT for SentenceTransformer / CrossEncoder recipes, and merging it back for a standalone model.

Adapters are injected with sentence-transformers' `add_adapter` (transformers' PEFT integration), so the model keeps
its class, its patch and its checkpoint format (adapter files that the trainers reload on resume).
"""

from __future__ import annotations

from typing import Any

from ..patch import unwrap


def add_lora(model: Any, options: dict[str, Any] | None = None) -> Any:
    """Add a trainable LoRA adapter (peft `LoraConfig` fields in `options`); the base weights are frozen.

    A classification head (`classifier` / `score`) is trained in full (`modules_to_save`) unless options say otherwise.
    """
    from peft import LoraConfig

    options = dict(options or {})
    options.setdefault("r", 16)
    options.setdefault("lora_alpha", 32)
    options.setdefault("lora_dropout", 0.05)
    hf = unwrap(model)
    if "modules_to_save" not in options:
        heads = [name for name in ("classifier", "score") if hasattr(hf, name)]
        options["modules_to_save"] = heads or None
    model.add_adapter(LoraConfig(**options))
    return model


def has_lora(model: Any) -> bool:
    return bool(getattr(unwrap(model), "_hf_peft_config_loaded", False))


def merge_lora(model: Any) -> Any:
    """Fold the active LoRA adapter into the base weights and remove all PEFT wrappers (in place)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    hf = unwrap(model)
    if not has_lora(model):
        return model
    for name, module in list(hf.named_modules()):
        if not isinstance(module, (BaseTunerLayer, ModulesToSaveWrapper)):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = hf.get_submodule(parent_name) if parent_name else hf
        if isinstance(module, ModulesToSaveWrapper):
            active = module.active_adapter if isinstance(module.active_adapter, str) else module.active_adapter[0]
            replacement = module.modules_to_save[active]
        else:
            module.merge()
            replacement = module.get_base_layer()
        setattr(parent, child, replacement)
    for p in hf.parameters():
        p.requires_grad_(True)
    hf._hf_peft_config_loaded = False
    hf.__dict__.pop("peft_config", None)
    return model
