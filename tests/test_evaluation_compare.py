"""compare(): each setting's scores equal a separate evaluation under that patch; results kept apart; state restored."""

from __future__ import annotations

import json

import pytest

from evaluation_fixtures import tiny_sentence_transformer, write_beir, write_sts

from hf_sparse_tempscale import get_patch_config, is_patched, patch_model, patched, unpatch_model
from hf_sparse_tempscale.evaluation.comparison import compare
from hf_sparse_tempscale.evaluation.run import evaluate_tasks
from hf_sparse_tempscale.evaluation.tasks import retrieval_task, sts_task

SETTINGS = {"tau=0.5": {"temperature": 0.5}, "window=2": {"window": 2}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    model = tiny_sentence_transformer(root)
    tasks = [
        retrieval_task(write_beir(root / "beir", n_docs=30, n_queries=8), name="beir"),
        sts_task(write_sts(root / "sts.jsonl", n=30), name="sts"),
    ]
    return model, tasks


def test_scores_equal_separate_runs(setup, tmp_path):
    model, tasks = setup
    comp = compare(model, SETTINGS, tasks, output_folder=tmp_path / "cmp", show_progress=False, print_table=False)
    assert list(comp.settings) == ["unpatched", *SETTINGS]
    plain = {r.task_name: r.main_score for r in evaluate_tasks(model, tasks, show_progress=False)}
    for task, score in plain.items():
        assert comp.score("unpatched", task) == pytest.approx(score, abs=1e-6)
    for name, cfg in SETTINGS.items():
        with patched(model, **cfg):
            alone = {r.task_name: r.main_score for r in evaluate_tasks(model, tasks, show_progress=False)}
        for task, score in alone.items():
            assert comp.score(name, task) == pytest.approx(score, abs=1e-6)
    # the patches really change the model: STS spearman moves under tau=0.5
    assert comp.score("tau=0.5", "sts") != pytest.approx(comp.score("unpatched", "sts"), abs=1e-6)
    for row in comp.rows():
        for name in SETTINGS:
            assert row["deltas"][name] == pytest.approx(row["scores"][name] - row["scores"]["unpatched"])
    assert not is_patched(model)


def test_outputs_kept_apart(setup, tmp_path):
    model, tasks = setup
    out = tmp_path / "cmp"
    comp = compare(model, SETTINGS, tasks, output_folder=out, show_progress=False, print_table=False)
    for folder, name in [("unpatched", "unpatched"), ("tau=0.5", "tau=0.5"), ("window=2", "window=2")]:
        saved = json.loads((out / folder / "beir.json").read_text())
        assert saved["scores"]["test"][0]["main_score"] == pytest.approx(comp.score(name, "beir"), abs=1e-5)
        assert json.loads((out / folder / "setting.json").read_text())["patch"] == comp.settings[name]
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["tasks"] == ["beir", "sts"] and len(summary["rows"]) == 2
    table = (out / "comparison.md").read_text()
    assert "tau=0.5 (Δ)" in table and "| beir |" in table


def test_previous_patch_is_restored_and_baseline_is_plain(setup):
    model, tasks = setup
    plain = evaluate_tasks(model, tasks[1:], show_progress=False)[0].main_score
    patch_model(model, temperature=0.7)
    try:
        comp = compare(model, {"tau=0.5": {"temperature": 0.5}}, tasks[1:], show_progress=False, print_table=False)
        assert comp.score("unpatched", "sts") == pytest.approx(plain, abs=1e-6)
        assert get_patch_config(model).temperature == 0.7
    finally:
        unpatch_model(model)


def test_bad_settings_fail_before_any_work(setup, tmp_path):
    model, tasks = setup
    with pytest.raises(ValueError, match="setting 'bad' is not a valid patch config"):
        compare(model, {"bad": {"temperature": -1}}, tasks, output_folder=tmp_path / "o", print_table=False)
    with pytest.raises(ValueError, match="setting 'typo' is not a valid patch config"):
        compare(model, {"typo": {"temprature": 0.9}}, tasks, output_folder=tmp_path / "o", print_table=False)
    with pytest.raises(ValueError, match="share the output folder"):
        compare(
            model,
            {"a b": {"temperature": 0.9}, "a/b": {"temperature": 0.8}},
            tasks,
            output_folder=tmp_path / "o",
            print_table=False,
        )
    with pytest.raises(ValueError, match="reserved"):
        compare(model, {"unpatched": {"temperature": 0.9}}, tasks, print_table=False)
    assert not (tmp_path / "o").exists()


def test_multi_subset_rows(setup, capsys):
    from hf_sparse_tempscale.evaluation.synthetic import synthetic_task

    model, _ = setup
    task = synthetic_task("passkey", lengths=[32, 64], n_docs=5, tokenizer=model.tokenizer)
    comp = compare(model, {"tau=0.5": {"temperature": 0.5}}, [task], max_seq_length=64, show_progress=False)
    rows = comp.rows()
    assert [r["subset"] for r in rows] == ["len_32", "len_64", "mean"]
    assert rows[-1]["scores"]["unpatched"] == pytest.approx((rows[0]["scores"]["unpatched"] + rows[1]["scores"]["unpatched"]) / 2)
    assert "| SyntheticPasskey | len_32 | ndcg_at_1 |" in capsys.readouterr().out
