"""Recipe: a (sparse) cross-encoder trained on the judged DL21 pairs/triples, evaluated by reranking DL19 BM25 top-100.

    from hf_sparse_tempscale.training.cross_encoder import run_cross_encoder
    from hf_sparse_tempscale.training.recipe_config import CrossEncoderRecipe
    results = run_cross_encoder(CrossEncoderRecipe(patch={"window": 4, "pattern": "independent_query"}))
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..patch import get_patch_config
from .callbacks import install_log_hook
from .data import cross_encoder_data, data_root, probe_pairs, probe_texts
from .recipe_config import CrossEncoderRecipe
from .trainer_setup import (
    base_model_id,
    build_callbacks,
    finish,
    model_path,
    prepare_model,
    resume_checkpoint,
    set_threads,
    training_arguments,
    with_head_learning_rate,
)

BM25_DL19_NDCG10 = 0.5058  # BM25 top-100 order against the complete DL19 qrels (shared/data README)


def build_trainer(cfg: CrossEncoderRecipe):
    """(trainer, model, train rows) with the patched CrossEncoder, its loss, data and callbacks."""
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MultipleNegativesRankingLoss

    set_threads(cfg)
    train, held = cross_encoder_data(
        cfg.data_root, train_set=cfg.train_set, source=cfg.train_source, loss=cfg.loss, label=cfg.label,
        limit=cfg.train_limit, holdout_queries=cfg.holdout_queries, holdout_limit=cfg.holdout_limit,
        squad_questions=cfg.squad_questions, squad_negative=cfg.squad_negative, seed=cfg.seed,
    )
    model = CrossEncoder(model_path(cfg.model), num_labels=1, max_length=cfg.max_length)
    prepare_model(model, cfg)
    loss = BinaryCrossEntropyLoss(model) if cfg.loss == "bce" else MultipleNegativesRankingLoss(model)
    probe_source = held if held is not None else train
    pairs = probe_pairs(probe_source, cfg.probe_size, seed=cfg.seed)
    texts = probe_texts(list(probe_source[probe_source.column_names[1]]), cfg.probe_size)
    # Every CrossEncoder parameter gets a gradient; with find_unused_parameters=True (the Trainer's default for
    # non-transformers modules) DDP fails on CrossEncoder ("classifier.bias marked as ready twice").
    find_unused = False if cfg.ddp_find_unused_parameters is None else cfg.ddp_find_unused_parameters
    trainer = with_head_learning_rate(CrossEncoderTrainer)(
        model=model,
        args=training_arguments(cfg, CrossEncoderTrainingArguments, has_eval=held is not None,
                                ddp_find_unused_parameters=find_unused),
        train_dataset=train,
        eval_dataset=held,
        loss=loss,
        callbacks=build_callbacks(cfg, pairs, texts),
    )
    trainer.head_learning_rate = cfg.head_learning_rate
    install_log_hook(trainer)
    return trainer, model, train


def evaluate_dl19(model, cfg: CrossEncoderRecipe, output_folder: Path):
    from ..evaluation.run import evaluate_reranking

    root = data_root(cfg.data_root)
    qrels = root / cfg.eval_qrels if cfg.eval_qrels else None
    return evaluate_reranking(
        model, root / cfg.eval_candidates, qrels_path=qrels, output_folder=output_folder,
        batch_size=cfg.eval_batch_size, max_length=cfg.max_length,
    )


def run_cross_encoder(cfg: CrossEncoderRecipe) -> dict[str, Any]:
    """Train, evaluate on DL19 (nDCG@10 via mteb / pytrec_eval), save `<output_dir>/final` and results.json, and push
    to the hub if asked."""
    trainer, model, train = build_trainer(cfg)
    start = time.time()
    checkpoint = resume_checkpoint(cfg)
    trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.time() - start
    if trainer.eval_dataset is not None:
        trainer.evaluate()  # held-out loss + probe statistics of the final model, in log_history / TensorBoard
    results: dict[str, Any] = {
        "recipe": "cross-encoder",
        "config": cfg.to_dict(),
        "patch": (get_patch_config(model).to_dict() if get_patch_config(model) else None),
        "train_rows": len(train),
        "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 1),
        "resumed_from": checkpoint,
        "bm25_ndcg@10": BM25_DL19_NDCG10,
    }
    eval_results = []
    if cfg.evaluate and trainer.is_world_process_zero():
        from .lora import has_lora, merge_lora

        if has_lora(model):
            merge_lora(model)
        res = evaluate_dl19(model, cfg, Path(cfg.output_dir) / "eval")
        results["dl19_ndcg@10"] = res.metric("ndcg_at_10")
        results["dl19_mrr@10"] = res.metric("mrr_at_10")
        trainer.log({"test_dl19_ndcg@10": results["dl19_ndcg@10"], "test_dl19_mrr@10": results["dl19_mrr@10"]})
        eval_results.append(dict(
            task_type="text-ranking", task_name="Reranking (BM25 top-100)", dataset_type="trec-dl-2019-passage",
            dataset_name="TREC DL 2019 passage (BM25 top-100)", dataset_split="test", metric_type="ndcg_at_10",
            metric_name="nDCG@10", metric_value=round(results["dl19_ndcg@10"], 4),
        ))
    patch = results["patch"] or {}
    details = (
        f"Trained with `hf-sparse-tempscale train-cross-encoder` on {len(train)} (query, passage) rows from the judged "
        f"TREC DL {cfg.train_set[2:]} {cfg.train_source} ({cfg.loss} loss, {trainer.state.global_step} steps, batch "
        f"{cfg.batch_size}, max_length {cfg.max_length}); evaluated by reranking the DL19 BM25 top-100 "
        f"(BM25 nDCG@10 {BM25_DL19_NDCG10})."
    )
    tags = ["trec-dl", "msmarco"] + (["windowed-attention"] if patch.get("window") is not None else [])
    return finish(trainer, model, cfg, results, eval_results, base_model_id(cfg), tags, details)
