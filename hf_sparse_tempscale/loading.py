"""Reload checkpoints whose config.json carries patch settings (`config.sparse_tempscale`), patched."""

from __future__ import annotations

from typing import Any

from .config import SparseTempScaleConfig
from .patch import CONFIG_KEY, patch_model, unwrap


def _apply_saved(model: Any, tokenizer=None) -> Any:
    saved = getattr(unwrap(model).config, CONFIG_KEY, None)
    if saved is None:
        return model
    return patch_model(model, SparseTempScaleConfig.from_dict(dict(saved)), tokenizer=tokenizer)


_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "trust_remote_code", "subfolder")


def from_pretrained(path_or_repo_id: str, auto_class=None, *, tokenizer=None, **kwargs) -> Any:
    """`auto_class.from_pretrained(...)`, then re-apply the stored patch (if any). Hub ids work as usual.

    Settings with `segments={"marker": ...}` need a tokenizer: pass `tokenizer=`, else the checkpoint's own is loaded."""
    if auto_class is None:
        from transformers import AutoModel as auto_class
    model = auto_class.from_pretrained(path_or_repo_id, **kwargs)
    saved = getattr(unwrap(model).config, CONFIG_KEY, None) or {}
    segments = saved.get("segments") or {}
    if tokenizer is None and segments.get("marker") is not None and segments.get("marker_ids") is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path_or_repo_id, **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs})
    return _apply_saved(model, tokenizer=tokenizer)


def load_sentence_transformer(path_or_repo_id: str, **kwargs) -> Any:
    from sentence_transformers import SentenceTransformer

    return _apply_saved(SentenceTransformer(path_or_repo_id, **kwargs))


def load_cross_encoder(path_or_repo_id: str, **kwargs) -> Any:
    from sentence_transformers import CrossEncoder

    return _apply_saved(CrossEncoder(path_or_repo_id, **kwargs))
