"""Trainer callbacks: schedules change the patch as planned, statistics match brute force, metrics reach
state.log_history and TensorBoard, with transformers.Trainer, SentenceTransformerTrainer and CrossEncoderTrainer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers as tf
from datasets import Dataset

from conftest import WORDS, bert_tokenizer
from hf_sparse_tempscale import get_patch_config, patch_model
from hf_sparse_tempscale.masks import dense_mask
from hf_sparse_tempscale.segments import SegmentSpec, find_groups
from hf_sparse_tempscale.training import (
    AttentionStatisticsCallback,
    EmbeddingCollapseCallback,
    TemperatureScheduleCallback,
    WindowCurriculumCallback,
    attach,
)
from hf_sparse_tempscale.training.callbacks import schedule_progress
from training_fixtures import TINY


def _texts(n: int, seed: int = 0, lo: int = 2, hi: int = 30) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(lo, hi, (1,), generator=g))
        out.append(" ".join(WORDS[int(i)] for i in torch.randint(0, 40, (k,), generator=g)))
    return out


def _classifier(seed: int = 0):
    tok = bert_tokenizer()
    torch.manual_seed(seed)
    model = tf.BertForSequenceClassification(tf.BertConfig(vocab_size=len(tok), num_labels=1, **TINY))
    return model, tok


def _pair_dataset(tok, n: int = 16) -> Dataset:
    queries, docs = _texts(n, 1, 1, 4), _texts(n, 2, 4, 30)
    enc = tok(queries, docs, truncation=True, max_length=64)
    labels = [float(i % 2) for i in range(n)]
    return Dataset.from_dict({**enc, "labels": labels})


class _Recorder(tf.TrainerCallback):
    """Records the patch settings in force during each optimizer step's forward passes."""

    def __init__(self, model):
        self.seen: list[tuple[float, int | None]] = []
        model.register_forward_pre_hook(self._hook)
        self._model = model

    def _hook(self, module, args):
        if module.training:
            cfg = get_patch_config(self._model)
            self.seen.append((cfg.temperature, cfg.window))


def _trainer(model, tok, tmp_path: Path, callbacks, steps: int = 8, report_to="none", eval_steps=None, **kw):
    ds = _pair_dataset(tok)
    settings = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=steps, logging_steps=1,
        eval_strategy="steps" if eval_steps else "no", eval_steps=eval_steps, save_strategy="no", report_to=report_to,
        use_cpu=True, disable_tqdm=True,
    )
    args = tf.TrainingArguments(**{**settings, **kw})
    return tf.Trainer(model=model, args=args, train_dataset=ds, eval_dataset=ds.select(range(4)),
                      data_collator=tf.DataCollatorWithPadding(tok), processing_class=tok, callbacks=callbacks)


# ---- pure schedule functions --------------------------------------------------------------------------------------
def test_schedule_progress_endpoints():
    assert [schedule_progress(s, 5, 0.0, 1.0) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # ramp over the first half of 10 steps: steps 0..4, then the target
    assert [schedule_progress(s, 10, 0.0, 0.5) for s in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # a late ramp holds the start value first
    assert schedule_progress(3, 10, 0.5, 1.0) == 0.0 and schedule_progress(9, 10, 0.5, 1.0) == 1.0


def test_temperature_schedule_shapes():
    lin = TemperatureScheduleCallback(1.0, 0.5)
    cos = TemperatureScheduleCallback(1.0, 0.5, schedule="cosine")
    geo = TemperatureScheduleCallback(1.0, 0.25, schedule="geometric")
    assert lin.value_at(0.5) == pytest.approx(0.75)
    assert cos.value_at(0.0) == pytest.approx(1.0) and cos.value_at(1.0) == pytest.approx(0.5)
    assert cos.value_at(0.25) == pytest.approx(0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert geo.value_at(0.5) == pytest.approx(0.5)
    per_layer = TemperatureScheduleCallback([1.0, 1.0], [0.5, 0.9])
    assert per_layer.value_at(0.5) == pytest.approx([0.75, 0.95])
    with pytest.raises(ValueError):
        TemperatureScheduleCallback(1.0, 0.0)
    with pytest.raises(ValueError):
        TemperatureScheduleCallback([1.0], 0.5)


def test_window_curriculum_shape():
    model, _ = _classifier()
    cb = WindowCurriculumCallback(target=4, start=None, max_window=124)
    values = [cb.value_at(p / 10, model) for p in range(11)]
    assert values[0] is None and values[-1] == 4
    ints = values[1:]
    assert all(a >= b for a, b in zip(ints, ints[1:])) and ints[0] <= 124
    # geometric in (w + 1): halfway is the geometric mean of 125 and 5
    assert cb.value_at(0.5, model) == round(math.sqrt(125 * 5) - 1)
    lin = WindowCurriculumCallback(target=2, start=10, schedule="linear")
    assert [lin.value_at(p / 4) for p in range(5)] == [10, 8, 6, 4, 2]
    with pytest.raises(ValueError):
        WindowCurriculumCallback(target=8, start=4)


# ---- in a training run ------------------------------------------------------------------------------------------
def test_schedules_applied_per_step_and_logged(tmp_path):
    model, tok = _classifier()
    patch_model(model, temperature=1.0, window=6, pattern="independent_query")
    rec = _Recorder(model)
    temp = TemperatureScheduleCallback(1.0, 0.5)
    win = WindowCurriculumCallback(target=2, start=12, schedule="linear", end_fraction=0.5)
    trainer = _trainer(model, tok, tmp_path, [temp, win], steps=8)
    trainer.train()

    # one forward per optimizer step (batch 4, no accumulation): compare with the formula, step by step
    assert len(rec.seen) == 8
    for step, (t, w) in enumerate(rec.seen):
        assert t == pytest.approx(1.0 - 0.5 * step / 7)
        expected_w = round(12 + (2 - 12) * min(1.0, step / 3))
        assert w == expected_w, (step, w)
    final = get_patch_config(model)
    assert final.temperature == pytest.approx(0.5) and final.window == 2 and final.pattern == "independent_query"

    # every training record carries the values used in its last step
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in train_logs] == list(range(1, 9))
    for h in train_logs:
        t, w = rec.seen[h["step"] - 1]
        assert h["sparse_tempscale/temperature"] == pytest.approx(t)
        assert h["sparse_tempscale/window"] == w


def test_schedule_needs_patched_model(tmp_path):
    model, tok = _classifier()
    trainer = _trainer(model, tok, tmp_path, [TemperatureScheduleCallback(1.0, 0.5)], steps=2)
    with pytest.raises(RuntimeError, match="patched model"):
        trainer.train()


def test_dense_start_logged_as_minus_one(tmp_path):
    model, tok = _classifier()
    patch_model(model, window=2)
    rec = _Recorder(model)
    trainer = _trainer(model, tok, tmp_path, [WindowCurriculumCallback(target=2)], steps=4)
    trainer.train()
    assert rec.seen[0][1] is None and rec.seen[-1][1] == 2
    first = next(h for h in trainer.state.log_history if h.get("step") == 1 and "loss" in h)
    assert first["sparse_tempscale/window"] == -1


def test_attention_statistics_match_brute_force():
    model, tok = _classifier()
    model.eval()
    pairs = list(zip(_texts(6, 3, 1, 4), _texts(6, 4, 3, 25)))
    patch_model(model, window=2, pattern="independent_query", temperature=0.7)
    stats = AttentionStatisticsCallback(pairs, batch_size=4).compute(model, tok)
    assert get_patch_config(model).backend == "sdpa"  # the probe restores the settings

    # allowed share: from the mask rule directly
    enc = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
    groups = find_groups(SegmentSpec(has_cls=True, sep_token_id=tok.sep_token_id), **enc)
    mask = dense_mask(groups, get_patch_config(model).flags, 2)[:, 0]
    real = enc["attention_mask"].bool()
    share = ((mask & real[:, None, :]).sum(-1).float() / real.sum(-1, keepdim=True))[real].mean()
    for layer in range(2):
        assert stats[f"attention/allowed_share/layer_{layer}"] == pytest.approx(float(share), abs=1e-6)

    # entropy: an independent computation of softmax(Q K^T / (sqrt(d) * tau)) under the same mask, from each
    # layer's input hidden states and its own projections
    cfg = model.config
    h = cfg.num_attention_heads
    d = cfg.hidden_size // h
    with torch.no_grad():
        states = model.bert(**enc, output_hidden_states=True).hidden_states
        for layer_idx, layer in enumerate(model.bert.encoder.layer):
            att, x = layer.attention.self, states[layer_idx]
            q, k = (lin(x).view(*x.shape[:2], h, d).transpose(1, 2) for lin in (att.query, att.key))
            scores = (q @ k.transpose(-1, -2)) / (math.sqrt(d) * 0.7)
            p = scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
            ent = -(p * p.clamp_min(1e-30).log()).sum(-1).mean(1)
            assert stats[f"attention/entropy/layer_{layer_idx}"] == pytest.approx(float(ent[real].mean()), rel=1e-4)
    assert stats["attention/allowed_share_mean"] < 1.0


def test_attention_statistics_unpatched_model_full_share():
    model, tok = _classifier()
    pairs = list(zip(_texts(4, 3, 1, 4), _texts(4, 4, 3, 25)))
    stats = AttentionStatisticsCallback(pairs).compute(model, tok)
    assert get_patch_config(model) is None  # measured with neutral settings, then unpatched again
    assert stats["attention/allowed_share_mean"] == pytest.approx(1.0)


def test_collapse_monitor_matches_manual():
    tok = bert_tokenizer()
    torch.manual_seed(0)
    model = tf.BertModel(tf.BertConfig(vocab_size=len(tok), **TINY)).eval()
    texts = _texts(12, 5, 2, 40)
    cb = EmbeddingCollapseCallback(texts, batch_size=5)
    stats = cb.compute(model, tok)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hid = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hid * m).sum(1) / m.sum(1), dim=-1)
    lengths = enc["attention_mask"].sum(-1)
    thr = float(lengths.float().median())

    def mean_cos(e):
        s = e @ e.T
        n = len(e)
        return float((s.sum() - n) / (n * (n - 1)))

    assert stats["collapse/length_threshold"] == thr
    assert stats["collapse/mean_cos_short"] == pytest.approx(mean_cos(emb[lengths <= thr]), abs=1e-5)
    assert stats["collapse/mean_cos_long"] == pytest.approx(mean_cos(emb[lengths > thr]), abs=1e-5)
    assert stats["collapse/gap"] == pytest.approx(stats["collapse/mean_cos_long"] - stats["collapse/mean_cos_short"])
    # TempScale changes the embeddings, and the monitor sees it
    patch_model(model, temperature=0.3)
    assert cb.compute(model, tok)["collapse/mean_cos_long"] != pytest.approx(stats["collapse/mean_cos_long"], abs=1e-6)


def test_metrics_reach_log_history_and_tensorboard(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_dir = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tb_dir))
    model, tok = _classifier()
    patch_model(model, window=3, pattern="independent_query")
    pairs = list(zip(_texts(4, 3, 1, 4), _texts(4, 4, 3, 25)))
    cbs = [TemperatureScheduleCallback(1.0, 0.8), AttentionStatisticsCallback(pairs),
           EmbeddingCollapseCallback(_texts(8, 6, 2, 30))]
    trainer = _trainer(model, tok, tmp_path, cbs, steps=4, report_to=["tensorboard"], eval_steps=2)
    trainer.train()
    metrics = trainer.evaluate()  # a direct evaluate() call gets the statistics too, in its return value
    assert "eval_attention/entropy_mean" in metrics and "eval_collapse/gap" in metrics

    history = trainer.state.log_history
    evals = [h for h in history if "eval_loss" in h]
    assert [h["step"] for h in evals] == [2, 4, 4]
    for h in evals:
        assert 0 < h["eval_attention/allowed_share_mean"] < 1 and "eval_collapse/mean_cos_long" in h
        assert "eval_attention/entropy/layer_1" in h
    for cb in trainer.callback_handler.callbacks:
        if hasattr(cb, "tb_writer") and cb.tb_writer is not None:
            cb.tb_writer.flush()

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/sparse_tempscale/temperature", "eval/attention/entropy_mean", "eval/collapse/gap",
            "eval/attention/allowed_share/layer_0"} <= tags
    temps = {e.step: e.value for e in acc.Scalars("train/sparse_tempscale/temperature")}
    for h in history:
        if "sparse_tempscale/temperature" in h and "loss" in h:
            assert temps[h["step"]] == pytest.approx(h["sparse_tempscale/temperature"], rel=1e-6)
    gaps = [e.value for e in acc.Scalars("eval/collapse/gap")]
    assert gaps == pytest.approx([h["eval_collapse/gap"] for h in evals], rel=1e-5)


def test_callbacks_added_after_init_and_attach(tmp_path):
    model, tok = _classifier()
    patch_model(model, window=2)
    trainer = _trainer(model, tok, tmp_path, None, steps=2)
    late = TemperatureScheduleCallback(1.0, 0.9)
    trainer.add_callback(late)  # bound when training starts
    trainer.train()
    assert all("sparse_tempscale/temperature" in h for h in trainer.state.log_history if "loss" in h)

    model2, tok2 = _classifier()
    patch_model(model2, window=2, tokenizer=tok2)
    trainer2 = _trainer(model2, tok2, tmp_path, None, steps=2)
    attach(trainer2, EmbeddingCollapseCallback(_texts(8, 6, 2, 30)))
    out = trainer2.evaluate()  # no train() before: attach() already routes the metrics
    assert "eval_collapse/gap" in out and "eval_collapse/gap" in trainer2.state.log_history[-1]


def test_resumed_schedule_continues(tmp_path):
    model, tok = _classifier()
    patch_model(model, window=4)
    args_kw = dict(save_strategy="steps", save_steps=3)
    trainer = _trainer(model, tok, tmp_path, [TemperatureScheduleCallback(1.0, 0.4)], steps=6, **args_kw)
    trainer.train()
    model2, tok2 = _classifier()
    patch_model(model2, window=4)
    rec = _Recorder(model2)
    trainer2 = _trainer(model2, tok2, tmp_path, [TemperatureScheduleCallback(1.0, 0.4)], steps=6, **args_kw)
    trainer2.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-3"))
    assert [t for t, _ in rec.seen] == pytest.approx([1.0 - 0.6 * s / 5 for s in (3, 4, 5)])


def test_sentence_transformer_and_cross_encoder_trainers(tmp_path):
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from training_fixtures import tiny_checkpoint

    common = dict(per_device_train_batch_size=4, max_steps=3, logging_steps=1, eval_strategy="steps", eval_steps=3,
                  save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)
    texts = _texts(12, 7, 2, 30)

    st = SentenceTransformer(tiny_checkpoint(tmp_path / "st", head="encoder"))
    patch_model(st, temperature=1.0)
    ds = Dataset.from_dict({"anchor": _texts(12, 8, 1, 4), "positive": texts})
    st_trainer = SentenceTransformerTrainer(
        model=st, args=SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "o1"), **common),
        train_dataset=ds, eval_dataset=ds.select(range(4)), loss=MultipleNegativesRankingLoss(st),
        callbacks=[TemperatureScheduleCallback(1.0, 0.7), EmbeddingCollapseCallback(texts),
                   AttentionStatisticsCallback(texts)],
    )
    st_trainer.train()
    assert get_patch_config(st).temperature == pytest.approx(0.7)
    hist = st_trainer.state.log_history
    assert any("sparse_tempscale/temperature" in h for h in hist if "loss" in h)
    assert any("eval_collapse/gap" in h and "eval_attention/entropy_mean" in h for h in hist)

    ce = CrossEncoder(tiny_checkpoint(tmp_path / "ce"), num_labels=1)
    patch_model(ce, window=8, pattern="independent_query")
    labels = [float(i % 2) for i in range(12)]
    pairs = Dataset.from_dict({"query": _texts(12, 9, 1, 4), "passage": texts, "label": labels})
    ce_trainer = CrossEncoderTrainer(
        model=ce, args=CrossEncoderTrainingArguments(output_dir=str(tmp_path / "o2"), **common),
        train_dataset=pairs, eval_dataset=pairs.select(range(4)), loss=BinaryCrossEntropyLoss(ce),
        callbacks=[WindowCurriculumCallback(target=2, start=8, schedule="linear", end_fraction=1.0),
                   AttentionStatisticsCallback(list(zip(pairs["query"][:4], pairs["passage"][:4])))],
    )
    ce_trainer.train()
    assert get_patch_config(ce).window == 2
    hist = ce_trainer.state.log_history
    assert [h["sparse_tempscale/window"] for h in hist if "loss" in h] == [8, 5, 2]
    assert any(0 < h.get("eval_attention/allowed_share_mean", 0) < 1 for h in hist)
