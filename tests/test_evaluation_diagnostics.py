"""Length-collapse statistics: exact values on constructed embeddings, and the report matches direct encoding."""

from __future__ import annotations

import random

import numpy as np
import pytest

from evaluation_fixtures import random_text, tiny_sentence_transformer

from hf_sparse_tempscale import is_patched, patched
from hf_sparse_tempscale.evaluation.diagnostics import embedding_stats, length_collapse


def test_identical_embeddings_are_fully_collapsed():
    s = embedding_stats(np.tile([[1.0, 2.0, 3.0]], (5, 1)))
    assert s["mean_cosine"] == pytest.approx(1.0) and s["anisotropy"] == pytest.approx(1.0) and s["effective_rank"] == 0.0


def test_orthogonal_embeddings():
    n = 6
    s = embedding_stats(np.eye(n) * 3.0)
    assert s["mean_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert s["anisotropy"] == pytest.approx(1 / n)
    assert s["effective_rank"] == pytest.approx(n - 1)  # centring removes one direction; the rest are equal


def test_against_numpy_definitions():
    x = np.random.default_rng(0).normal(size=(20, 8)) + 2.0
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u @ u.T
    s = embedding_stats(x)
    assert s["mean_cosine"] == pytest.approx(cos[~np.eye(20, dtype=bool)].mean())
    eig = np.linalg.eigvalsh(u.T @ u)
    assert s["anisotropy"] == pytest.approx(eig.max() / eig.sum())
    sv = np.linalg.svd(u - u.mean(0), compute_uv=False)
    p = sv / sv.sum()
    assert s["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    with pytest.raises(ValueError, match="at least two rows"):
        embedding_stats(x[:1])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_sentence_transformer(tmp_path_factory.mktemp("diag"))


def _texts(n=30, seed=0):
    rng = random.Random(seed)
    return [random_text(rng, rng.randint(3, 60)) for _ in range(n)]


def test_truncate_mode_matches_direct_encoding(model, tmp_path):
    texts = _texts()
    report = length_collapse(model, texts, temperatures=[0.5], lengths=[8, 16, 32], per_group=10, show_progress=False)
    assert [(r.setting, r.bucket) for r in report.rows] == [
        (s, b) for s in ("unpatched", "tau=0.5") for b in ("<=8", "<=16", "<=32")
    ]
    assert all(r.n == 10 and r.mean_length <= r.length_hi for r in report.rows)
    # recompute one group by hand: the same 10 texts (the longest ones are >= 32 tokens), cut at 16 tokens
    lengths = [len(model.tokenizer(t)["input_ids"]) for t in texts]
    picked = [t for t, n in zip(texts, lengths) if n >= 32]
    assert len(picked) >= 10
    row = next(r for r in report.rows if r.setting == "tau=0.5" and r.bucket == "<=16")
    old = model.max_seq_length
    model.max_seq_length = 16
    try:
        with patched(model, temperature=0.5):
            options = model.encode(picked)
    finally:
        model.max_seq_length = old
    # the group is a random subset of `picked`; its mean cosine must lie within the range of all subsets' values
    cos = (options / np.linalg.norm(options, axis=1, keepdims=True)) @ (
        options / np.linalg.norm(options, axis=1, keepdims=True)
    ).T
    off = cos[~np.eye(len(picked), dtype=bool)]
    assert off.min() - 1e-6 <= row.mean_cosine <= off.max() + 1e-6
    unp = next(r for r in report.rows if r.setting == "unpatched" and r.bucket == "<=16")
    assert unp.mean_cosine != pytest.approx(row.mean_cosine, abs=1e-7)
    assert not is_patched(model)
    png = report.plot(tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert report.save_json(tmp_path / "c.json").exists()
    assert "| tau=0.5 | <=16 | 10 |" in report.to_markdown()


def test_truncate_group_exact(model):
    """With per_group = all long texts the group is deterministic: stats equal a direct computation."""
    texts = _texts(12, seed=4)
    lengths = [len(model.tokenizer(t)["input_ids"]) for t in texts]
    long_texts = [t for t, n in zip(texts, lengths) if n >= 24]
    report = length_collapse(model, long_texts, lengths=[12, 24], per_group=len(long_texts), show_progress=False)
    old = model.max_seq_length
    model.max_seq_length = 12
    try:
        emb = model.encode(long_texts)
    finally:
        model.max_seq_length = old
    assert report.rows[0].mean_cosine == pytest.approx(embedding_stats(emb)["mean_cosine"], abs=1e-5)
    assert report.rows[0].effective_rank == pytest.approx(embedding_stats(emb)["effective_rank"], rel=1e-4)


def test_natural_mode_buckets(model):
    texts = _texts(60, seed=1)
    report = length_collapse(model, texts, lengths=[10, 20, 40], mode="natural", per_group=100, show_progress=False)
    lengths = [min(len(model.tokenizer(t)["input_ids"]), 40) for t in texts]
    for r in report.rows:
        expected = [n for n in lengths if r.length_lo <= n <= r.length_hi]
        assert r.n == len(expected) and r.mean_length == pytest.approx(np.mean(expected))
    with pytest.raises(ValueError, match="mode must be"):
        length_collapse(model, texts, mode="other", show_progress=False)
