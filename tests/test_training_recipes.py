"""Recipes end to end on a tiny model and tiny data: results, saved model, logs, resume, LoRA, CLI config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from hf_sparse_tempscale import get_patch_config, load_cross_encoder, load_sentence_transformer
from hf_sparse_tempscale.cli import main
from hf_sparse_tempscale.training.recipe_config import CrossEncoderRecipe, EmbeddingRecipe, read_config_file
from training_fixtures import tiny_checkpoint, tiny_data_root

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    return {
        "data": str(tiny_data_root(base / "data")),
        "ce": tiny_checkpoint(base / "ce"),
        "st": tiny_checkpoint(base / "st", head="encoder"),
    }


def _ce(tiny, out: Path, **kw) -> CrossEncoderRecipe:
    settings = dict(model=tiny["ce"], data_root=tiny["data"], output_dir=str(out), max_steps=4, batch_size=4,
                    logging_steps=1, eval_steps=2, save_steps=2, probe_size=6, eval_batch_size=8, threads=1,
                    max_length=64, report_to=["tensorboard"])
    settings.update(kw)
    return CrossEncoderRecipe(**settings)


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_cross_encoder_recipe_end_to_end(tiny, tmp_path):
    from hf_sparse_tempscale.evaluation.run import evaluate_reranking
    from hf_sparse_tempscale.training.cross_encoder import run_cross_encoder

    out = tmp_path / "ce"
    cfg = _ce(tiny, out, patch={"window": 2, "pattern": "independent_query"},
              window_curriculum={"start": 8, "end_fraction": 1.0},
              temperature_schedule={"start": 1.0, "end": 0.9}, hub_folder=str(tmp_path / "hub"))
    results = run_cross_encoder(cfg)

    assert results["steps"] == 4 and results["train_rows"] == 2 * 5 * 3  # 5 of 8 dl21 queries x 3 triples
    assert 0.0 <= results["dl19_ndcg@10"] <= 1.0
    assert json.loads((out / "results.json").read_text())["dl19_ndcg@10"] == results["dl19_ndcg@10"]
    # the saved model reloads patched with the curriculum's target and scores the same
    final = load_cross_encoder(str(out / "final"))
    cfg_final = get_patch_config(final)
    assert (cfg_final.window, cfg_final.pattern, cfg_final.temperature) == (2, "independent_query", 0.9)
    root = Path(tiny["data"]) / "trec-dl-2019-passage"
    again = evaluate_reranking(final, root / "candidates" / "BM25_top100.jsonl", qrels_path=root / "qrels" / "test.tsv",
                               max_length=64, show_progress=False)
    assert again.metric("ndcg_at_10") == pytest.approx(results["dl19_ndcg@10"], abs=1e-6)

    # schedule values and probe statistics in the trainer state of the last checkpoint and in TensorBoard
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    train_logs = [h for h in state["log_history"] if "loss" in h]
    assert [h["sparse_tempscale/window"] for h in train_logs] == [8, 5, 3, 2]
    assert any("eval_attention/allowed_share_mean" in h and "eval_collapse/gap" in h for h in state["log_history"])
    assert list((out / "runs").rglob("events.out.tfevents*"))
    # hub folder with the settings and the DL19 result
    hub_cfg = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert hub_cfg["sparse_tempscale"]["window"] == 2
    assert f"{round(results['dl19_ndcg@10'], 4)}" in (tmp_path / "hub" / "README.md").read_text()
    # each rank records its parameter digest (one process here)
    assert json.loads((out / "rank_sync" / "rank0.json").read_text())["world_size"] == 1


def test_resume_matches_uninterrupted_run(tiny, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from hf_sparse_tempscale.training.cross_encoder import run_cross_encoder

    out = tmp_path / "run"
    cfg = _ce(tiny, out, evaluate=False, report_to=["none"], eval_steps=None, attention_stats=False,
              collapse_monitor=False, temperature_schedule={"start": 1.0, "end": 0.8})
    run_cross_encoder(cfg)
    reference = _params(load_cross_encoder(str(out / "final")))
    shutil.copytree(out / "checkpoint-2", tmp_path / "checkpoint-2-copy")

    # interrupted after step 2: only checkpoint-2 survives; resuming finishes the same 4-step schedule
    shutil.rmtree(out / "checkpoint-4")
    shutil.rmtree(out / "final")
    cfg.resume = True
    results = run_cross_encoder(cfg)
    assert results["steps"] == 4 and results["resumed_from"].endswith("checkpoint-2")
    resumed = _params(load_cross_encoder(str(out / "final")))
    assert reference.keys() == resumed.keys()
    for k in reference:
        assert torch.allclose(reference[k], resumed[k], atol=1e-6), k
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]

    # the weights really come from the checkpoint: shift its classifier bias and resume again
    shutil.rmtree(out)
    out.mkdir()
    shutil.copytree(tmp_path / "checkpoint-2-copy", out / "checkpoint-2")
    weights = load_file(out / "checkpoint-2" / "model.safetensors")
    weights["classifier.bias"] += 1.0
    save_file(weights, out / "checkpoint-2" / "model.safetensors", metadata={"format": "pt"})
    run_cross_encoder(cfg)
    shifted = _params(load_cross_encoder(str(out / "final")))
    bias = next(k for k in shifted if k.endswith("classifier.bias"))
    assert float(shifted[bias] - reference[bias]) == pytest.approx(1.0, abs=0.05)


def test_lora_option(tiny, tmp_path):
    from hf_sparse_tempscale.training.cross_encoder import build_trainer, run_cross_encoder

    cfg = _ce(tiny, tmp_path / "lora", lora={"r": 4, "target_modules": ["query", "value"]}, learning_rate=5e-3,
              evaluate=False, report_to=["none"], patch={"window": 2, "pattern": "independent_query"})
    trainer, model, _ = build_trainer(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    assert any("classifier" in n for n in trainable)

    from sentence_transformers.cross_encoder import CrossEncoder

    initial = _params(CrossEncoder(tiny["ce"], num_labels=1))
    run_cross_encoder(cfg)
    assert (tmp_path / "lora" / "checkpoint-4" / "adapter_model.safetensors").is_file()
    final = load_cross_encoder(str(tmp_path / "lora" / "final"))
    assert get_patch_config(final).window == 2
    merged = _params(final)
    assert not any("lora" in k for k in merged)
    changed = {k for k in initial if not torch.equal(initial[k], merged[k])}
    assert changed and all(("query" in k or "value" in k or "classifier" in k) for k in changed)
    assert not any("key" in k or "intermediate" in k for k in changed)


def test_lora_resume(tiny, tmp_path):
    from hf_sparse_tempscale.training.cross_encoder import run_cross_encoder

    out = tmp_path / "lora_resume"
    cfg = _ce(tiny, out, lora={"r": 4}, learning_rate=5e-3, evaluate=False, report_to=["none"], eval_steps=None,
              attention_stats=False, collapse_monitor=False)
    run_cross_encoder(cfg)
    reference = _params(load_cross_encoder(str(out / "final")))
    import shutil

    shutil.rmtree(out / "checkpoint-4")
    shutil.rmtree(out / "final")
    cfg.resume = True
    assert run_cross_encoder(cfg)["resumed_from"].endswith("checkpoint-2")
    resumed = _params(load_cross_encoder(str(out / "final")))
    for k in reference:
        assert torch.allclose(reference[k], resumed[k], atol=1e-6), k


def test_embedding_recipe_with_and_without_tempscale(tiny, tmp_path):
    from hf_sparse_tempscale.training.embedding import run_embedding

    common = dict(model=tiny["st"], data_root=tiny["data"], max_steps=3, batch_size=4, logging_steps=1, eval_steps=3,
                  save_steps=3, probe_size=8, eval_batch_size=8, threads=1, max_length=64, report_to=["none"],
                  train_sources=["squad", "scifact"])
    plain = run_embedding(EmbeddingRecipe(output_dir=str(tmp_path / "plain"), patch=None, evaluate_base=True, **common))
    temp = run_embedding(EmbeddingRecipe(output_dir=str(tmp_path / "temp"), patch={"temperature": 0.5}, **common))
    for r in (plain, temp):
        assert 0.0 <= r["scifact_ndcg@10"] <= 1.0 and -1.0 <= r["stsb_spearman"] <= 1.0
        assert r["train_rows"] == (24 - 2 * 3) + 5  # squad minus 3 held-out passages (2 questions each) + scifact
    assert plain["patch"] is None and "base" in plain
    model = load_sentence_transformer(str(tmp_path / "temp" / "final"))
    assert get_patch_config(model).temperature == 0.5
    assert get_patch_config(load_sentence_transformer(str(tmp_path / "plain" / "final"))) is None


def test_cli_with_yaml_and_json_configs(tiny, tmp_path, capsys):
    yaml_cfg = tmp_path / "ce.yaml"
    yaml_cfg.write_text(yaml.safe_dump(dict(
        model=tiny["ce"], data_root=tiny["data"], max_steps=2, batch_size=4, save_steps=2, probe_size=6,
        max_length=64, threads=1, report_to=["none"], patch={"window": 3, "pattern": "independent_query"},
        output_dir=str(tmp_path / "from_yaml"),
    )))
    # options override the file
    assert main(["train-cross-encoder", "--config", str(yaml_cfg), "--max-steps", "3", "--no-attention-stats",
                 "--hub-folder", str(tmp_path / "hubf"), "--remote-code"]) == 0
    assert '"dl19_ndcg@10"' in capsys.readouterr().out
    results = json.loads((tmp_path / "from_yaml" / "results.json").read_text())
    assert results["steps"] == 3 and results["config"]["attention_stats"] is False
    assert (tmp_path / "hubf" / "modeling_sparse_tempscale.py").is_file()

    json_cfg = tmp_path / "emb.json"
    json_cfg.write_text(json.dumps(dict(
        model=tiny["st"], data_root=tiny["data"], max_steps=2, batch_size=4, save_steps=2, probe_size=8,
        max_length=64, threads=1, report_to=["none"], output_dir=str(tmp_path / "from_json"), evaluate=False,
    )))
    assert main(["train-embedding", "--config", str(json_cfg), "--patch", '{"temperature": 0.7}']) == 0
    results = json.loads((tmp_path / "from_json" / "results.json").read_text())
    assert results["patch"]["temperature"] == 0.7 and results["steps"] == 2


def test_shipped_recipe_configs_are_valid():
    files = sorted((REPO / "recipes").glob("*.yaml"))
    assert len(files) >= 4
    for f in files:
        data = read_config_file(f)
        recipe = CrossEncoderRecipe if "cross_encoder" in f.name else EmbeddingRecipe
        recipe.from_dict(data)
    accel = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))
    assert {"ddp_multi_gpu.yaml", "ddp_multi_node.yaml", "deepspeed_zero2.yaml", "fsdp.yaml"} <= {a.name for a in accel}
    from accelerate.commands.config.config_args import ClusterConfig

    for a in accel:
        assert ClusterConfig.from_yaml_file(str(a)).num_processes >= 2


def test_config_validation():
    with pytest.raises(ValueError, match="unknown"):
        CrossEncoderRecipe.from_dict({"windw": 4})
    with pytest.raises(ValueError, match="same TREC DL year"):
        CrossEncoderRecipe(train_set="dl19")
    with pytest.raises(ValueError, match="target"):
        CrossEncoderRecipe(patch={"pattern": "full"}, window_curriculum={})
    with pytest.raises(ValueError):
        EmbeddingRecipe(train_sources=["msmarco"])


def test_real_training_data_splits():
    from conftest import DATA_ROOT
    from hf_sparse_tempscale.training.data import cross_encoder_data, embedding_data

    judged = DATA_ROOT / "msmarco-trecdl-judged-pairs"
    if not (judged / "triples.jsonl").is_file() or not (DATA_ROOT / "squad-v1.1-train-subset").is_dir():
        pytest.skip(f"shared training data not found at {DATA_ROOT}")
    rows = [json.loads(line) for line in (judged / "triples.jsonl").open()]
    dl21 = [r for r in rows if r["set"] == "dl21"]

    train, held = cross_encoder_data(DATA_ROOT, limit=500, holdout_queries=3, holdout_limit=40, seed=1)
    assert len(train) == 2 * 500 and len(held) == 2 * 40
    assert train["label"].count(1.0) == 500
    train_q, held_q = set(train["query"]), set(held["query"])
    assert not train_q & held_q
    assert len({r["qid"] for r in dl21 if r["query"] in held_q}) == 3
    dl19_queries = {r["query"] for r in rows if r["set"] == "dl19"}
    assert not train_q & dl19_queries  # never the evaluation year
    again, _ = cross_encoder_data(DATA_ROOT, limit=500, holdout_queries=3, holdout_limit=40, seed=1)
    assert again["passage"] == train["passage"]  # seeded subset

    emb_train, emb_held = embedding_data(DATA_ROOT, limit=300, holdout_queries=5, seed=0)
    assert len(emb_train) == 300
    assert not set(emb_train["positive"]) & set(emb_held["positive"])  # held-out paragraphs are unseen


def test_cli_options_parse_and_override():
    from hf_sparse_tempscale.cli import build_parser
    from hf_sparse_tempscale.training.cli import recipe_from_args

    parser = build_parser()
    args = parser.parse_args([
        "train-cross-encoder", "--config", str(REPO / "recipes" / "cross_encoder_sparse.yaml"), "--train-limit", "none",
        "--lora", "--resume", "--patch", '{"window": 8, "pattern": "cls_interaction"}', "--no-attention-stats",
        "--report-to", "none", "--push-to-hub", "org/model", "--remote-code",
    ])
    cfg = recipe_from_args(CrossEncoderRecipe, args)
    assert cfg.train_limit is None and cfg.lora == {} and cfg.resume is True and cfg.attention_stats is False
    assert cfg.patch == {"window": 8, "pattern": "cls_interaction"} and cfg.report_to == ["none"]
    assert (cfg.push_to_hub, cfg.remote_code) == ("org/model", True)
    assert cfg.batch_size == 16 and cfg.holdout_limit == 128  # untouched values come from the file
    args = parser.parse_args(["train-embedding", "--train-sources", "squad", "scifact", "--lora", '{"r": 4}',
                              "--resume", "out/checkpoint-10", "--patch", "null"])
    cfg = recipe_from_args(EmbeddingRecipe, args)
    assert cfg.train_sources == ["squad", "scifact"] and cfg.lora == {"r": 4}
    assert cfg.resume == "out/checkpoint-10" and cfg.patch is None
    with pytest.raises(SystemExit):
        parser.parse_args(["train-embedding", "--patch", "{not json"])


def test_squad_triples_and_head_learning_rate(tiny, tmp_path):
    from hf_sparse_tempscale.training.cross_encoder import build_trainer
    from hf_sparse_tempscale.training.data import cross_encoder_data, squad_triples

    rows = [json.loads(line) for line in (Path(tiny["data"]) / "squad-v1.1-train-subset" / "train_pairs.jsonl").open()]
    article = {r["pos_id"]: r["pos_title"] for r in rows}
    hard, easy = squad_triples(tiny["data"], negative="article"), squad_triples(tiny["data"], negative="random")
    assert len(hard) == len(easy) == len(rows)
    assert all(article[t["neg_id"]] == article[t["pos_id"]] and t["neg_id"] != t["pos_id"] for t in hard)
    assert all(article[t["neg_id"]] != article[t["pos_id"]] for t in easy)
    assert [t["neg_id"] for t in easy] == [t["neg_id"] for t in squad_triples(tiny["data"], negative="random")]

    train, held = cross_encoder_data(tiny["data"], squad_questions=10, holdout_queries=3, seed=42)
    assert len(train) == 2 * (5 * 3 + 10)
    assert not set(held["query"]) & {t["query"] for t in squad_triples(tiny["data"], limit=10, seed=42)}

    cfg = _ce(tiny, tmp_path / "head", head_learning_rate=1e-2, learning_rate=1e-4, report_to=["none"])
    trainer, model, _ = build_trainer(cfg)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {names[id(p)]: group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert len(lrs) == len(names)  # every trainable parameter exactly once
    assert {n for n, lr in lrs.items() if lr == 1e-2} == {n for n in names.values() if ".classifier." in n}
    assert all(lr == 1e-4 for n, lr in lrs.items() if ".classifier." not in n)
