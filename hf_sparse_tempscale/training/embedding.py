"""Recipe: an embedding model fine-tuned with MultipleNegativesRankingLoss (SQuAD pairs and/or SciFact train), with or
without TempScale during training; evaluated on SciFact test (nDCG@10) and STS-B test (Spearman of cosine).

    from hf_sparse_tempscale.training.embedding import run_embedding
    from hf_sparse_tempscale.training.recipe_config import EmbeddingRecipe
    results = run_embedding(EmbeddingRecipe(patch={"temperature": 0.9}))
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..patch import get_patch_config
from .callbacks import install_log_hook
from .data import data_root, embedding_data, probe_texts
from .recipe_config import EmbeddingRecipe
from .trainer_setup import (
    base_model_id,
    build_callbacks,
    finish,
    model_path,
    prepare_model,
    resume_checkpoint,
    set_threads,
    training_arguments,
)


def build_trainer(cfg: EmbeddingRecipe):
    """(trainer, model, train rows) with the (patched) SentenceTransformer, MNRL loss, data and callbacks."""
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    set_threads(cfg)
    train, held = embedding_data(
        cfg.data_root, sources=cfg.train_sources, limit=cfg.train_limit, holdout_queries=cfg.holdout_queries,
        holdout_limit=cfg.holdout_limit, seed=cfg.seed,
    )
    model = SentenceTransformer(model_path(cfg.model))
    model.max_seq_length = cfg.max_length
    prepare_model(model, cfg)
    probe_source = held if held is not None else train
    texts = probe_texts(list(probe_source["anchor"]) + list(probe_source["positive"]), cfg.probe_size)
    args = training_arguments(
        cfg, SentenceTransformerTrainingArguments, has_eval=held is not None,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # duplicate passages in a batch would be false negatives
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=held,
        loss=MultipleNegativesRankingLoss(model),
        callbacks=build_callbacks(cfg, texts, texts),
    )
    install_log_hook(trainer)
    return trainer, model, train


def evaluate_embedding(model, cfg: EmbeddingRecipe, output_folder: Path) -> dict[str, float]:
    from ..evaluation.run import evaluate_retrieval, evaluate_tasks

    root = data_root(cfg.data_root)
    scores: dict[str, float] = {}
    if cfg.eval_retrieval:
        res = evaluate_retrieval(model, root / cfg.eval_retrieval, split="test", output_folder=output_folder,
                                 batch_size=cfg.eval_batch_size, max_seq_length=cfg.max_length)
        scores[f"{Path(cfg.eval_retrieval).name}_ndcg@10"] = res.metric("ndcg_at_10")
    if cfg.eval_sts:
        res = evaluate_tasks(model, [root / cfg.eval_sts], output_folder=output_folder,
                             batch_size=cfg.eval_batch_size, max_seq_length=cfg.max_length)[0]
        scores["stsb_spearman"] = res.metric("cosine_spearman")
    return scores


def run_embedding(cfg: EmbeddingRecipe) -> dict[str, Any]:
    """Train, evaluate (SciFact test nDCG@10, STS-B test Spearman), save `<output_dir>/final` and results.json."""
    trainer, model, train = build_trainer(cfg)
    results: dict[str, Any] = {"recipe": "embedding", "config": cfg.to_dict(), "train_rows": len(train)}
    if cfg.evaluate and cfg.evaluate_base and trainer.is_world_process_zero():
        from sentence_transformers import SentenceTransformer

        base = SentenceTransformer(model_path(cfg.model))
        base.max_seq_length = cfg.max_length
        results["base"] = evaluate_embedding(base, cfg, Path(cfg.output_dir) / "eval-base")
    start = time.time()
    results["resumed_from"] = resume_checkpoint(cfg)
    trainer.train(resume_from_checkpoint=results["resumed_from"])
    results["train_seconds"] = round(time.time() - start, 1)
    results["steps"] = trainer.state.global_step
    if trainer.eval_dataset is not None:
        trainer.evaluate()
    results["patch"] = get_patch_config(model).to_dict() if get_patch_config(model) else None
    eval_results = []
    if cfg.evaluate and trainer.is_world_process_zero():
        from .lora import has_lora, merge_lora

        if has_lora(model):
            merge_lora(model)
        scores = evaluate_embedding(model, cfg, Path(cfg.output_dir) / "eval")
        results.update(scores)
        trainer.log({f"test_{k}": v for k, v in scores.items()})
        for key, value in scores.items():
            if key.endswith("ndcg@10"):
                eval_results.append(dict(
                    task_type="retrieval", task_name="Retrieval", dataset_type=key.split("_")[0],
                    dataset_name=f"{key.split('_')[0]} (BEIR)", dataset_split="test", metric_type="ndcg_at_10",
                    metric_name="nDCG@10", metric_value=round(value, 4),
                ))
            else:
                eval_results.append(dict(
                    task_type="sentence-similarity", task_name="STS", dataset_type="stsbenchmark",
                    dataset_name="STS Benchmark", dataset_split="test", metric_type="spearman_cosine",
                    metric_name="Spearman (cosine)", metric_value=round(value, 4),
                ))
    temperature = (results["patch"] or {}).get("temperature", 1.0)
    details = (
        f"Trained with `hf-sparse-tempscale train-embedding` on {len(train)} (anchor, positive) pairs from "
        f"{' + '.join(cfg.train_sources)} (MultipleNegativesRankingLoss, {trainer.state.global_step} steps, batch "
        f"{cfg.batch_size}, max_seq_length {cfg.max_length}, attention temperature {temperature})."
    )
    return finish(trainer, model, cfg, results, eval_results, base_model_id(cfg), ["tempscale", "embeddings"], details)
