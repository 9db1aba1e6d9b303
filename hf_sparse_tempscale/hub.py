"""Sharing patched models on the Hugging Face Hub.

`save_for_hub(model, folder, ...)` builds the exact folder that would be uploaded: the weights, `config.json` with the
patch settings under `sparse_tempscale`, a model card (rendered from `model_cards/sparse_tempscale.md` with
huggingface_hub's `ModelCard`: settings, loading snippet, evaluation results as model-index, tags, citations) and,
with `remote_code=True`, a small `auto_map` shim so the stock loaders (`AutoModel...(trust_remote_code=True)`,
`SentenceTransformer` / `CrossEncoder(..., trust_remote_code=True)`) reload the model patched.
`push_to_hub(model, repo_id, ...)` builds that folder in a temporary directory and uploads it.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import transformers
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .config import FLAG_NAMES, SparseTempScaleConfig
from .patch import CONFIG_KEY, get_patch_config, unwrap

CARD_TEMPLATE = "sparse_tempscale.md"
SHIM_MODULE = "modeling_sparse_tempscale"
BASE_TAGS = ["hf-sparse-tempscale", "sparse-attention", "tempscale"]

_SHIM_HEADER = '''"""Remote-code shim written by hf_sparse_tempscale.save_for_hub.

Each class loads the stock transformers architecture and then re-applies the TempScale / sparse-attention patch
stored in config.json (`sparse_tempscale`). It needs `pip install hf-sparse-tempscale`.
"""

import transformers
from hf_sparse_tempscale import SparseTempScaleConfig, patch_model


def _patched_subclass(base):
    class Patched(base):
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            model = super().from_pretrained(*args, **kwargs)
            settings = getattr(model.config, "sparse_tempscale", None)
            if settings:
                patch_model(model, SparseTempScaleConfig.from_dict(dict(settings)))
            return model

    Patched.__name__ = Patched.__qualname__ = "SparseTempScale" + base.__name__
    return Patched

'''


def model_card_template() -> Path:
    """The card template: shipped inside the package (`hf_sparse_tempscale/model_cards`) in a wheel, else the
    repository's top-level `model_cards/` (editable install / source checkout)."""
    packaged = resources.files("hf_sparse_tempscale") / "model_cards" / CARD_TEMPLATE
    if packaged.is_file():
        return Path(str(packaged))
    repo = Path(__file__).resolve().parents[1] / "model_cards" / CARD_TEMPLATE
    if repo.is_file():
        return repo
    raise FileNotFoundError(f"model card template {CARD_TEMPLATE} found neither in the package nor at {repo}")


def _model_kind(model: Any) -> str:
    try:
        from sentence_transformers import CrossEncoder, SentenceTransformer
    except ImportError:  # pragma: no cover - sentence-transformers is a dependency
        return "transformers"
    if isinstance(model, CrossEncoder):
        return "cross-encoder"
    if isinstance(model, SentenceTransformer):
        return "sentence-transformer"
    return "transformers"


def _auto_classes(hf: transformers.PreTrainedModel) -> dict[str, str]:
    """auto class name -> transformers class name, for every Auto class that maps this model type to its class,
    plus AutoModel -> the bare encoder (what `AutoModel.from_pretrained` must load)."""
    model_type = hf.config.model_type
    wanted = {type(hf).__name__, type(hf.base_model).__name__}
    found: dict[str, str] = {}
    for name in dir(transformers):
        if not name.startswith("AutoModel"):
            continue
        mapping = getattr(getattr(getattr(transformers, name), "_model_mapping", None), "_model_mapping", None)
        target = mapping.get(model_type) if isinstance(mapping, dict) else None
        if isinstance(target, str) and target in wanted:
            found[name] = target
    found.setdefault("AutoModel", type(hf.base_model).__name__)
    return dict(sorted(found.items()))


def _shim_source(class_names: list[str]) -> str:
    lines = [f"SparseTempScale{c} = _patched_subclass(transformers.{c})" for c in sorted(set(class_names))]
    return _SHIM_HEADER + "\n".join(lines) + "\n"


def _stored_settings(cfg: SparseTempScaleConfig, tokenizer) -> dict[str, Any]:
    settings = cfg.to_dict()
    segments = dict(settings.get("segments") or {})
    if segments.get("marker") is not None and segments.get("marker_ids") is None and tokenizer is not None:
        # Store the marker's token ids so reloading needs no tokenizer.
        segments["marker_ids"] = list(tokenizer(segments["marker"], add_special_tokens=False)["input_ids"])
        settings["segments"] = segments
    return settings


def _eval_results(results: list[EvalResult | dict[str, Any]] | None) -> list[EvalResult]:
    out = []
    for r in results or []:
        out.append(r if isinstance(r, EvalResult) else EvalResult(**r))
    return out


def _loading_snippets(kind: str, repo_id: str, auto_classes: dict[str, str]) -> tuple[str, str]:
    head = next((a for a in auto_classes if a != "AutoModel"), "AutoModel")
    if kind == "cross-encoder":
        return (
            "from hf_sparse_tempscale import load_cross_encoder\n\n"
            f'model = load_cross_encoder("{repo_id}")\n'
            'scores = model.predict([("how do plants make food", "Photosynthesis turns light into sugar.")])',
            "from sentence_transformers import CrossEncoder\n\n"
            f'model = CrossEncoder("{repo_id}", trust_remote_code=True)',
        )
    if kind == "sentence-transformer":
        return (
            "from hf_sparse_tempscale import load_sentence_transformer\n\n"
            f'model = load_sentence_transformer("{repo_id}")\n'
            'embeddings = model.encode(["TempScale keeps long-text embeddings apart."])',
            "from sentence_transformers import SentenceTransformer\n\n"
            f'model = SentenceTransformer("{repo_id}", trust_remote_code=True)',
        )
    return (
        f"from transformers import {head}\nfrom hf_sparse_tempscale import from_pretrained\n\n"
        f'model = from_pretrained("{repo_id}", auto_class={head})',
        f"from transformers import {head}\n\n"
        f'model = {head}.from_pretrained("{repo_id}", trust_remote_code=True)',
    )


def render_model_card(
    model: Any,
    *,
    repo_id: str,
    settings: dict[str, Any],
    auto_classes: dict[str, str],
    eval_results: list[EvalResult | dict[str, Any]] | None = None,
    tags: list[str] | None = None,
    base_model: str | None = None,
    model_name: str | None = None,
    description: str | None = None,
    training_details: str | None = None,
    datasets: list[str] | None = None,
    language: str | list[str] | None = "en",
    license: str | None = "apache-2.0",
    remote_code: bool = False,
) -> ModelCard:
    """The model card (front matter with model-index from `eval_results`) rendered from the template."""
    kind = _model_kind(model)
    cfg = SparseTempScaleConfig.from_dict(settings)
    results = _eval_results(eval_results)
    kind_tags = {"cross-encoder": ["sentence-transformers", "cross-encoder", "reranker", "text-ranking"],
                 "sentence-transformer": ["sentence-transformers", "sentence-similarity", "feature-extraction"],
                 "transformers": []}[kind]
    all_tags = list(dict.fromkeys(BASE_TAGS + kind_tags + list(tags or [])))
    name = model_name or repo_id.split("/")[-1]
    card_data = ModelCardData(
        model_name=name,
        base_model=base_model,
        eval_results=results or None,
        tags=all_tags,
        datasets=datasets,
        language=language,
        license=license,
        library_name="sentence-transformers" if kind != "transformers" else "transformers",
        pipeline_tag={"cross-encoder": "text-ranking", "sentence-transformer": "sentence-similarity"}.get(kind),
    )
    snippet, remote_snippet = _loading_snippets(kind, repo_id, auto_classes)
    flags = {k: "yes" if v else "no" for k, v in cfg.flags.items()}
    rows = [(k, json.dumps(v)) for k, v in settings.items()]
    eval_rows = [
        {"task": r.task_name or r.task_type, "dataset": r.dataset_name, "split": r.dataset_split or "",
         "metric": r.metric_name or r.metric_type, "value": r.metric_value}
        for r in results
    ]
    return ModelCard.from_template(
        card_data,
        template_path=str(model_card_template()),
        model_name=name,
        model_kind=kind.replace("transformers", "transformers model"),
        description=description or f"`{name}`: a {kind.replace('transformers', 'transformers model')} with "
        "TempScale / sparse attention.",
        base_model=base_model,
        settings_rows=rows,
        pattern=cfg.pattern,
        flag_overrides=any(getattr(cfg, n) is not None for n in FLAG_NAMES),
        flags=flags,
        window=cfg.window,
        loading_snippet=snippet,
        remote_code=remote_code,
        remote_code_snippet=remote_snippet,
        shim_file=f"{SHIM_MODULE}.py",
        eval_rows=eval_rows,
        training_details=training_details,
    )


def save_for_hub(
    model: Any,
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    tokenizer=None,
    remote_code: bool = False,
    eval_results: list[EvalResult | dict[str, Any]] | None = None,
    tags: list[str] | None = None,
    base_model: str | None = None,
    model_name: str | None = None,
    description: str | None = None,
    training_details: str | None = None,
    datasets: list[str] | None = None,
    language: str | list[str] | None = "en",
    license: str | None = "apache-2.0",
) -> Path:
    """Write the folder that `push_to_hub` uploads and return its path.

    `model`: a patched PreTrainedModel, SentenceTransformer or CrossEncoder (merge PEFT adapters first).
    `tokenizer`: saved next to a plain transformers model (SentenceTransformer/CrossEncoder save their own).
    `eval_results`: huggingface_hub `EvalResult`s or dicts of their fields (task_type, dataset_type, dataset_name,
    metric_type, metric_value, ...), written as model-index. `remote_code=True` adds the auto_map shim.
    """
    cfg = get_patch_config(model)
    if cfg is None:
        raise ValueError("the model is not patched: call patch_model(model, ...) before saving it for the hub")
    if hasattr(model, "get_base_model") or getattr(unwrap(model), "_hf_peft_config_loaded", False):
        raise ValueError(
            "merge the PEFT adapters first so the upload is standalone: model = model.merge_and_unload() for a "
            "PeftModel, hf_sparse_tempscale.training.lora.merge_lora(model) for adapters added with add_adapter"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf = unwrap(model)
    kind = _model_kind(model)
    model.save_pretrained(str(folder))
    if kind == "transformers" and tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    settings = _stored_settings(cfg, tok)

    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config[CONFIG_KEY] = settings
    auto_classes = _auto_classes(hf)
    if remote_code:
        (folder / f"{SHIM_MODULE}.py").write_text(_shim_source(list(auto_classes.values())), encoding="utf-8")
        config["auto_map"] = {auto: f"{SHIM_MODULE}.SparseTempScale{cls}" for auto, cls in auto_classes.items()}
    else:
        config.pop("auto_map", None)
        (folder / f"{SHIM_MODULE}.py").unlink(missing_ok=True)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    card = render_model_card(
        model, repo_id=repo_id or model_name or folder.name, settings=settings, auto_classes=auto_classes,
        eval_results=eval_results, tags=tags, base_model=base_model, model_name=model_name, description=description,
        training_details=training_details, datasets=datasets, language=language, license=license,
        remote_code=remote_code,
    )
    card.save(str(folder / "README.md"))
    return folder


def push_to_hub(
    model: Any,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload hf-sparse-tempscale model",
    **save_kwargs: Any,
) -> str:
    """Build the `save_for_hub` folder in a temporary directory and upload it to `repo_id`; returns the commit URL.

    `save_kwargs` go to `save_for_hub` (remote_code, eval_results, tags, base_model, tokenizer, ...).
    """
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="sparse_tempscale_hub_") as tmp:
        folder = save_for_hub(model, tmp, repo_id=repo_id, **save_kwargs)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
            commit_message=commit_message,
        )
    return str(getattr(info, "commit_url", info))


__all__ = ["model_card_template", "push_to_hub", "render_model_card", "save_for_hub"]
