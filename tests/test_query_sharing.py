"""rerank_shared (query computed once per query) against CrossEncoder.predict on the same patched model."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from conftest import WORDS, bert_tokenizer, roberta_tokenizer

from hf_sparse_tempscale import patch_model, unpatch_model
from hf_sparse_tempscale.query_sharing import check_shareable, rank_shared, rerank_shared


pytestmark = pytest.mark.usefixtures("one_thread")


def text(n: int, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    return " ".join(WORDS[int(i)] for i in torch.randint(0, 40, (n,), generator=g))


def cross_encoder(folder, kind="bert"):
    from sentence_transformers import CrossEncoder

    make = {
        "bert": (tf.BertForSequenceClassification, tf.BertConfig, bert_tokenizer, {}),
        "roberta": (tf.RobertaForSequenceClassification, tf.RobertaConfig, roberta_tokenizer, {"pad_token_id": 1}),
        "distilbert": (tf.DistilBertForSequenceClassification, tf.DistilBertConfig, bert_tokenizer, {}),
    }
    cls, config_cls, make_tok, extra = make[kind]
    tok = make_tok()
    sizes = (dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64) if kind == "distilbert"
             else dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    config = config_cls(vocab_size=len(tok), max_position_embeddings=128, num_labels=1, initializer_range=0.5, **sizes, **extra)
    torch.manual_seed(0)
    cls(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return CrossEncoder(str(folder), device="cpu", activation_fn=torch.nn.Identity())


DOCS = [text(n, seed) for seed, n in enumerate([12, 3, 40, 1, 25, 7, 60])]
QUERY = text(4, 99)


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("window", [None, 2])
def test_shared_scores_equal_predict(kind, window, tmp_path):
    ce = cross_encoder(tmp_path, kind)
    patch_model(ce, temperature=0.8, window=window, pattern="independent_query")
    expected = torch.as_tensor(ce.predict([(QUERY, d) for d in DOCS]))
    assert expected.std() > 1e-3  # the candidates really get different scores
    for batch_size in (1, 3, 32):
        shared = rerank_shared(ce, QUERY, DOCS, batch_size=batch_size)
        torch.testing.assert_close(shared, expected, atol=2e-5, rtol=1e-4)
    ranking = rank_shared(ce, QUERY, DOCS, top_k=3)
    assert [r["corpus_id"] for r in ranking] == torch.argsort(expected, descending=True)[:3].tolist()


def test_candidates_skip_the_query_tokens(tmp_path, monkeypatch):
    """After the first pair, every forward sees [CLS] + document only."""
    ce = cross_encoder(tmp_path)
    patch_model(ce, window=2, pattern="independent_query")
    from hf_sparse_tempscale.patch import unwrap

    hf = unwrap(ce)
    lengths = []
    forward = hf.forward
    monkeypatch.setattr(hf, "forward", lambda **kw: lengths.append(kw["input_ids"].shape[1]) or forward(**kw))
    rerank_shared(ce, QUERY, DOCS, batch_size=len(DOCS))
    query_tokens = len(ce.tokenizer(QUERY, add_special_tokens=False)["input_ids"]) + 1  # + the first [SEP]
    longest = max(len(ce.tokenizer(QUERY, d)["input_ids"]) for d in DOCS[1:])
    assert lengths[1:] == [longest - query_tokens]


def test_refuses_patterns_where_the_query_sees_the_document(tmp_path):
    ce = cross_encoder(tmp_path)
    with pytest.raises(ValueError, match="not patched"):
        check_shareable(ce)
    for settings, reason in [
        (dict(pattern="full", window=2), "query_doc"),
        (dict(pattern="independent_query", query_cls=True), "query_cls"),
        (dict(pattern="independent_query", layers=[0]), "every encoder layer"),
        (dict(pattern="independent_query", length_adaptive={"short_length": 8, "long_length": 64, "long_temperature": 0.5}),
         "length-adaptive"),
    ]:
        patch_model(ce, **settings)
        with pytest.raises(ValueError, match=reason):
            rerank_shared(ce, QUERY, DOCS)
        unpatch_model(ce)


def test_real_minilm_cross_encoder(minilm_dir):
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    ce = CrossEncoder(minilm_dir, num_labels=1, device="cpu", activation_fn=torch.nn.Identity())
    patch_model(ce, temperature=0.9, window=4, pattern="independent_query")
    query = "what is sparse attention"
    docs = ["Sparse attention restricts which tokens attend to each other.", "The river flows to the sea.",
            "Cross-encoders score a query and a passage jointly with full attention over both texts."]
    expected = torch.as_tensor(ce.predict([(query, d) for d in docs]))
    torch.testing.assert_close(rerank_shared(ce, query, docs), expected, atol=1e-4, rtol=1e-4)
