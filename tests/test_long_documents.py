"""Longer position tables (copy / interpolate) and MaxP chunked reranking."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from conftest import WORDS, bert_tokenizer, roberta_tokenizer, tiny

from hf_sparse_tempscale import patch_model
from hf_sparse_tempscale.long_documents import extend_position_embeddings, extended_table, maxp_rank, maxp_scores


pytestmark = pytest.mark.usefixtures("one_thread")


def text(n: int, seed: int = 0) -> str:
    g = torch.Generator().manual_seed(seed)
    return " ".join(WORDS[int(i)] for i in torch.randint(0, 40, (n,), generator=g))


def test_copy_keeps_old_positions_and_repeats_them():
    model, tok = tiny("bert")  # 128 positions
    old = model.embeddings.position_embeddings.weight.detach().clone()
    short = tok([text(20)], return_tensors="pt")
    with torch.no_grad():
        before = model(**short).last_hidden_state
    extend_position_embeddings(model, 300, tokenizer=tok)
    new = model.embeddings.position_embeddings.weight
    assert new.shape == (300, old.shape[1]) and model.config.max_position_embeddings == 300
    assert torch.equal(new[:128], old) and torch.equal(new[128:256], old) and torch.equal(new[256:], old[:44])
    assert model.embeddings.position_ids.shape == (1, 300) and model.embeddings.token_type_ids.shape == (1, 300)
    assert tok.model_max_length >= 300
    long = tok([text(280)], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**short).last_hidden_state, before)  # inputs that fitted before: unchanged
        assert model(**long).last_hidden_state.shape[1] == 282


def test_roberta_reserved_rows_and_offset():
    model, _ = tiny("roberta")  # positions start at padding_idx + 1 = 2
    old = model.embeddings.position_embeddings.weight.detach().clone()
    extend_position_embeddings(model, 200)
    new = model.embeddings.position_embeddings.weight
    assert new.shape[0] == 202 and model.config.max_position_embeddings == 202
    assert torch.equal(new[:128], old)
    learned = old[2:]
    assert torch.equal(new[2 + 126 : 2 + 200], learned[:74])  # position p -> learned p mod 126
    tok = roberta_tokenizer()
    with torch.no_grad():
        assert model(**tok([text(190)], return_tensors="pt")).last_hidden_state.shape[1] == 192


def test_interpolate_resamples_linearly():
    weight = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 3)  # row i = i
    grown = extended_table(weight, 1, 17, "interpolate")  # one reserved row, 9 learned -> 17
    assert torch.equal(grown[0], weight[0])
    torch.testing.assert_close(grown[1:, 0], torch.linspace(1, 9, 17))
    with pytest.raises(ValueError):
        extended_table(weight, 0, 20, "cubic")


def test_extension_survives_save_and_load(tmp_path):
    model, tok = tiny("bert")
    extend_position_embeddings(model, 256, method="interpolate")
    model.save_pretrained(tmp_path)
    again = tf.BertModel.from_pretrained(tmp_path).eval()
    enc = tok([text(240)], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(again(**enc).last_hidden_state, model(**enc).last_hidden_state)


def test_long_inputs_with_the_banded_backend_match_sdpa():
    model, tok = tiny("bert")
    extend_position_embeddings(model, 400)
    enc = tok([text(8, 1)], [text(380, 2)], return_tensors="pt")
    with torch.no_grad():
        patch_model(model, window=4, pattern="independent_query", backend="sdpa")
        ref = model(**enc).last_hidden_state
        patch_model(model, window=4, pattern="independent_query", backend="banded")
        out = model(**enc).last_hidden_state
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_relative_position_models_are_refused():
    model, _ = tiny("t5-encoder")
    with pytest.raises(ValueError, match="relative"):
        extend_position_embeddings(model, 1024)


@pytest.fixture
def cross_encoder(tmp_path):
    from sentence_transformers import CrossEncoder

    tok = bert_tokenizer()
    torch.manual_seed(0)
    config = tf.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, num_labels=1, initializer_range=0.5)
    tf.BertForSequenceClassification(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return CrossEncoder(str(tmp_path), device="cpu", max_length=64, activation_fn=torch.nn.Identity())


def test_maxp_windows_cover_the_document_and_take_the_max(cross_encoder):
    query, long_doc, short_doc = text(5, 3), text(150, 4), text(20, 5)
    scores, chunks = maxp_scores(cross_encoder, query, [long_doc, short_doc], return_chunks=True)
    from hf_sparse_tempscale.long_documents import _chunks

    tok = cross_encoder.tokenizer
    budget = 64 - 5 - tok.num_special_tokens_to_add(pair=True)
    windows = _chunks(tok, long_doc, budget, budget // 2)
    assert len(windows) == len(chunks[0]) > 1 and len(chunks[1]) == 1
    words = long_doc.split()
    assert windows[0].split() == words[: len(windows[0].split())] and windows[-1].split() == words[-len(windows[-1].split()) :]
    for w in windows:
        assert len(tok(w, add_special_tokens=False)["input_ids"]) <= budget
        assert w in long_doc
    direct = cross_encoder.predict([(query, w) for w in windows])
    assert scores[0] == pytest.approx(float(max(direct)), abs=1e-5)
    assert scores[1] == pytest.approx(float(cross_encoder.predict([(query, short_doc)])[0]), abs=1e-5)
    first = maxp_scores(cross_encoder, query, [long_doc], aggregate="first")[0]
    mean = maxp_scores(cross_encoder, query, [long_doc], aggregate="mean")[0]
    assert first == pytest.approx(float(direct[0]), abs=1e-5) and mean == pytest.approx(float(direct.mean()), abs=1e-5)
    ranking = maxp_rank(cross_encoder, query, [long_doc, short_doc])
    assert [r["corpus_id"] for r in ranking] == sorted(range(2), key=lambda i: -scores[i])


def test_maxp_with_an_extended_patched_cross_encoder(cross_encoder):
    """Extension and MaxP compose: after extending to 256 tokens a 150-word document is one window."""
    patch_model(cross_encoder, window=4, pattern="independent_query", backend="banded")
    query, doc = text(5, 6), text(150, 7)
    assert len(maxp_scores(cross_encoder, query, [doc], return_chunks=True)[1][0]) > 1
    extend_position_embeddings(cross_encoder, 256)
    assert cross_encoder.max_length == 256
    scores, chunks = maxp_scores(cross_encoder, query, [doc], return_chunks=True)
    assert len(chunks[0]) == 1
    assert scores[0] == pytest.approx(float(cross_encoder.predict([(query, doc)])[0]), abs=1e-5)


def test_maxp_refuses_a_query_that_fills_the_model(cross_encoder):
    with pytest.raises(ValueError, match="no room"):
        maxp_scores(cross_encoder, text(60), [text(10)])


def test_real_minilm_copy_extension_keeps_short_embeddings(minilm_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_dir, device="cpu")
    sentences = ["sparse attention for long documents", "a cross-encoder reranks passages"]
    before = st.encode(sentences, convert_to_tensor=True)
    extend_position_embeddings(st, 1024)
    assert st.max_seq_length == 1024
    torch.testing.assert_close(st.encode(sentences, convert_to_tensor=True), before, atol=1e-6, rtol=0)
    long = st.encode([" ".join(["passage"] * 900)], convert_to_tensor=True)
    assert torch.isfinite(long).all()
