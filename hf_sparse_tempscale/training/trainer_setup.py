"""Pieces both recipes share: model path, patch, LoRA, callbacks, training arguments, resume and the final save/push."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..patch import get_patch_config, patch_model
from .callbacks import (
    AttentionStatisticsCallback,
    EmbeddingCollapseCallback,
    ProcessSyncCallback,
    TemperatureScheduleCallback,
    WindowCurriculumCallback,
)
from .lora import add_lora, has_lora, merge_lora
from .recipe_config import RecipeConfig

logger = logging.getLogger(__name__)


def model_path(name: str) -> str:
    """"minilm" -> the packaged all-MiniLM-L6-v2 folder; anything else (folder or hub id) passes through."""
    if name == "minilm":
        from ..models import minilm_path

        return minilm_path()
    return name


def set_threads(cfg: RecipeConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def prepare_model(model: Any, cfg: RecipeConfig) -> Any:
    """Patch (when `cfg.patch` is set; the curriculum/schedule start values come from the callbacks) and add LoRA."""
    if cfg.patch is not None:
        patch_model(model, **cfg.patch)
    if cfg.lora is not None:
        add_lora(model, cfg.lora)
    return model


def build_callbacks(cfg: RecipeConfig, pairs: list | None, texts: list[str] | None) -> list:
    callbacks: list = [ProcessSyncCallback()]  # multi-process runs check that all ranks end identical
    if cfg.temperature_schedule is not None:
        if cfg.patch is None:
            raise ValueError("temperature_schedule needs a patched model: set patch (e.g. {} for neutral settings)")
        callbacks.append(TemperatureScheduleCallback(**cfg.temperature_schedule))
    if cfg.window_curriculum is not None:
        callbacks.append(WindowCurriculumCallback(target=cfg.patch["window"], **cfg.window_curriculum))
    if cfg.attention_stats and pairs:
        callbacks.append(AttentionStatisticsCallback(pairs, max_length=cfg.max_length))
    if cfg.collapse_monitor and texts:
        callbacks.append(EmbeddingCollapseCallback(texts, max_length=cfg.max_length))
    return callbacks


def _no_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    has_xpu = xpu is not None and xpu.is_available()
    return not (torch.cuda.is_available() or torch.backends.mps.is_available() or has_xpu)


def training_arguments(cfg: RecipeConfig, args_cls, has_eval: bool, **extra):
    """`args_cls` is SentenceTransformerTrainingArguments or CrossEncoderTrainingArguments."""
    # On a machine without accelerator, use_cpu makes accelerate set up CPU DDP (gloo) when several processes run
    # (torchrun / `accelerate launch --multi_gpu`); otherwise each process would train alone.
    use_cpu = _no_accelerator() if cfg.use_cpu is None else cfg.use_cpu
    eval_strategy = "steps" if (has_eval and cfg.eval_steps) else "no"
    return args_cls(
        output_dir=cfg.output_dir,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=float(cfg.warmup_ratio),  # < 1: a fraction of the training steps
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps if eval_strategy == "steps" else None,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to,
        disable_tqdm=False,
        use_cpu=use_cpu,
        **{"ddp_find_unused_parameters": cfg.ddp_find_unused_parameters, **extra},
    )


HEAD_NAMES = ("classifier", "score")  # classification heads of transformers' *ForSequenceClassification models


def with_head_learning_rate(trainer_cls):
    """A subclass of `trainer_cls` whose optimizer gives the classification head its own learning rate
    (`trainer.head_learning_rate`). A fresh 1-logit head on a checkpoint that was not trained as a classifier (e.g.
    all-MiniLM-L6-v2, a mean-pooling bi-encoder) otherwise grows at the encoder's small learning rate and the
    scores stay flat for hundreds of steps."""

    class HeadLearningRateTrainer(trainer_cls):
        head_learning_rate: float | None = None

        def create_optimizer(self, model=None):
            fresh = self.optimizer is None
            optimizer = super().create_optimizer(model)
            if fresh and self.head_learning_rate:
                named = (self.model if model is None else model).named_parameters()
                head = {id(p) for n, p in named if any(part in HEAD_NAMES for part in n.split("."))}
                for group in list(optimizer.param_groups):
                    moved = [p for p in group["params"] if id(p) in head]
                    if moved:
                        group["params"] = [p for p in group["params"] if id(p) not in head]
                        optimizer.add_param_group({**group, "params": moved, "lr": self.head_learning_rate})
            return optimizer

    HeadLearningRateTrainer.__name__ = f"HeadLearningRate{trainer_cls.__name__}"
    return HeadLearningRateTrainer


def resume_checkpoint(cfg: RecipeConfig) -> str | None:
    """None, the newest `checkpoint-*` in output_dir (resume=True; None if there is none yet), or a given folder."""
    if not cfg.resume:
        return None
    if isinstance(cfg.resume, str) and cfg.resume not in ("auto", "true", "True"):
        if not Path(cfg.resume).is_dir():
            raise FileNotFoundError(f"checkpoint {cfg.resume} not found")
        return cfg.resume
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(cfg.output_dir) if Path(cfg.output_dir).is_dir() else None
    if last is None:
        logger.warning("resume requested but no checkpoint in %s: starting from scratch", cfg.output_dir)
    return last


def finish(trainer, model: Any, cfg: RecipeConfig, results: dict[str, Any], eval_results: list[dict[str, Any]],
           base_model: str | None, tags: list[str], details: str) -> dict[str, Any]:
    """Merge LoRA, save the final model (main process), write results.json and build/push the hub folder."""
    if has_lora(model):
        merge_lora(model)
    out = Path(cfg.output_dir)
    final = out / "final"
    if trainer.is_world_process_zero():
        model.save_pretrained(str(final))
        results["final_model"] = str(final)
        if cfg.push_to_hub or cfg.hub_folder:
            results["hub_folder"] = str(build_hub_folder(model, cfg, eval_results, base_model, tags, details))
        if cfg.push_to_hub:
            from ..hub import push_to_hub

            results["hub_commit"] = push_to_hub(
                model, cfg.push_to_hub, private=cfg.hub_private, remote_code=cfg.remote_code,
                eval_results=eval_results, base_model=base_model, tags=tags, training_details=details,
            )
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return results


def build_hub_folder(model, cfg: RecipeConfig, eval_results, base_model, tags, details) -> Path:
    from ..hub import save_for_hub

    if get_patch_config(model) is None:
        patch_model(model)  # neutral settings, so the folder records that the model runs unmodified attention
    folder = Path(cfg.hub_folder) if cfg.hub_folder else Path(cfg.output_dir) / "hub"
    return save_for_hub(
        model, folder, repo_id=cfg.push_to_hub or folder.name, remote_code=cfg.remote_code,
        eval_results=eval_results, base_model=base_model, tags=tags, training_details=details,
    )


def base_model_id(cfg: RecipeConfig) -> str | None:
    if cfg.model == "minilm":
        from ..models import MINILM_ID

        return MINILM_ID
    return None if os.path.isdir(cfg.model) else cfg.model
