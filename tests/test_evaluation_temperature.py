"""Temperature tuning: the curve is made of real evaluations, the best point is its argmax, adaptive tau is saved."""

from __future__ import annotations

import json

import pytest

from evaluation_fixtures import tiny_sentence_transformer, write_beir, write_sts

from hf_sparse_tempscale import get_patch_config, is_patched, load_sentence_transformer, patch_model, patched, unpatch_model
from hf_sparse_tempscale.evaluation.data import load_beir
from hf_sparse_tempscale.evaluation.run import evaluate_tasks
from hf_sparse_tempscale.evaluation.tasks import sts_task
from hf_sparse_tempscale.evaluation.temperature import (
    compare_fixed_vs_adaptive,
    dev_retrieval_task,
    subsample_corpus,
    tune_length_adaptive,
    tune_temperature,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    return tiny_sentence_transformer(root), sts_task(write_sts(root / "sts.jsonl", n=30), name="sts"), root


def test_tune_curve_is_real_evaluations(setup, tmp_path):
    model, task, _ = setup
    result = tune_temperature(model, task, grid=[0.5, 1.0, 2.0], output_folder=tmp_path / "t", show_progress=False)
    assert [v for v, _ in result.curve] == [0.5, 1.0, 2.0]
    plain = evaluate_tasks(model, [task], show_progress=False)[0].main_score
    assert result.baseline_score == pytest.approx(plain, abs=1e-6)
    assert dict(result.curve)[1.0] == pytest.approx(plain, abs=1e-6)  # tau = 1 is the unpatched model
    for tau in (0.5, 2.0):
        with patched(model, temperature=tau):
            assert dict(result.curve)[tau] == pytest.approx(
                evaluate_tasks(model, [task], show_progress=False)[0].main_score, abs=1e-6
            )
    assert result.best_score == max(s for _, s in result.curve)
    assert result.best_settings == {"temperature": result.best_value}
    saved = json.loads((tmp_path / "t" / "tuning.json").read_text())
    assert saved["best_value"] == result.best_value and (tmp_path / "t" / "tuning.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "t" / "temperature=1").exists()  # reused the unpatched run
    assert not is_patched(model)


def test_patched_tau_one_equals_unpatched(setup):
    model, task, _ = setup
    plain = evaluate_tasks(model, [task], show_progress=False)[0].main_score
    with patched(model, temperature=1.0):
        assert evaluate_tasks(model, [task], show_progress=False)[0].main_score == pytest.approx(plain, abs=1e-6)


def test_length_adaptive_tuning_and_saving(setup, tmp_path):
    model, task, _ = setup
    result = tune_length_adaptive(model, task, short_length=4, long_length=16, long_grid=[0.5, 0.8], show_progress=False)
    assert result.parameter == "long_temperature" and [v for v, _ in result.curve] == [0.5, 0.8]
    la = result.best_settings["length_adaptive"]
    assert la == {"short_length": 4, "long_length": 16, "long_temperature": result.best_value}
    # an adaptive tau whose short range covers every text is tau = 1 everywhere: identical to unpatched
    plain = evaluate_tasks(model, [task], show_progress=False)[0].main_score
    with patched(model, temperature=1.0, length_adaptive={"short_length": 500, "long_length": 1000, "long_temperature": 0.5}):
        assert evaluate_tasks(model, [task], show_progress=False)[0].main_score == pytest.approx(plain, abs=1e-6)
    # the adaptive setting travels with the saved model
    patch_model(model, result.best_settings)
    try:
        model.save(str(tmp_path / "saved"))
        score = evaluate_tasks(model, [task], show_progress=False)[0].main_score
    finally:
        unpatch_model(model)
    reloaded = load_sentence_transformer(str(tmp_path / "saved"), device="cpu")
    assert get_patch_config(reloaded).length_adaptive == la
    assert evaluate_tasks(reloaded, [task], show_progress=False)[0].main_score == pytest.approx(score, abs=1e-6)


def test_fixed_vs_adaptive(setup):
    model, task, _ = setup
    la = {"short_length": 4, "long_length": 16, "long_temperature": 0.5}
    comp = compare_fixed_vs_adaptive(
        model, [task], fixed_temperature=0.5, length_adaptive=la, show_progress=False, print_table=False
    )
    assert list(comp.settings) == ["unpatched", "fixed tau=0.5", "adaptive tau=1->0.5"]
    assert comp.settings["adaptive tau=1->0.5"] == {"temperature": 1.0, "length_adaptive": la}


def test_dev_task_is_not_test(setup):
    _, _, root = setup
    folder = write_beir(root / "beir_train", n_docs=40, n_queries=10, split="train")
    with pytest.raises(ValueError, match="test split"):
        dev_retrieval_task(folder, "test")
    task = dev_retrieval_task(folder, "train", corpus_size=20, max_queries=5)
    task.load_data()
    data = task.dataset["default"]["train"]
    assert len(data["queries"]) == 5 and len(data["corpus"]) == 20
    judged = {d for docs in data["relevant_docs"].values() for d in docs}
    assert judged <= set(data["corpus"]["id"])


def test_subsample_keeps_judged(setup):
    _, _, root = setup
    data = load_beir(write_beir(root / "beir_sub", n_docs=50, n_queries=6))
    small = subsample_corpus(data, 30, seed=1)
    judged = {d for docs in data.qrels.values() for d in docs}
    assert len(small.corpus) == 30 and judged <= set(small.corpus)
    assert subsample_corpus(data, 30, seed=1).corpus.keys() == small.corpus.keys()


def test_known_baseline_is_not_rerun(setup):
    model, task, _ = setup
    result = tune_length_adaptive(
        model, task, short_length=4, long_length=16, long_grid=[0.5], baseline_score=0.123, show_progress=False
    )
    assert result.baseline_score == 0.123
    assert list(result.comparison.settings) == ["long_temperature=0.5"]
    with pytest.raises(ValueError, match="nothing to evaluate"):
        tune_temperature(model, task, grid=[1.0], baseline_score=0.1, show_progress=False)
