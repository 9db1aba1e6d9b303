"""Neutral settings reproduce stock attention; a padded batch equals each example run alone."""

from __future__ import annotations

import pytest
import torch
from conftest import KINDS, hidden, model_inputs, pairs_batch, tiny

from hf_sparse_tempscale import patch_model, unpatch_model


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_neutral_patch_equals_stock(kind, attn):
    model, tok = tiny(kind, attn=attn)
    enc = pairs_batch(tok, "right")
    kwargs = model_inputs(model, enc)
    with torch.no_grad():
        stock = hidden(model, **kwargs)
        patch_model(model, backend=attn, apply_to=("encoder", "decoder", "cross") if model.config.is_encoder_decoder else "encoder")
        ours = hidden(model, **kwargs)
        unpatch_model(model)
        again = hidden(model, **kwargs)
    assert (ours - stock).abs().max() <= 1e-6
    assert torch.equal(again, stock)


def test_neutral_patch_equals_stock_real_minilm(minilm_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_dir, device="cpu")
    texts = ["a short one", "a somewhat longer sentence about sparse attention in cross-encoders and embeddings " * 3]
    stock = st.encode(texts, convert_to_tensor=True)
    patch_model(st)
    ours = st.encode(texts, convert_to_tensor=True)
    assert (ours - stock).abs().max() <= 1e-6
    patch_model(st, temperature=0.5)
    sharper = st.encode(texts, convert_to_tensor=True)
    assert (sharper - stock).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "t5-encoder"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batch_equals_examples_alone(kind, padding_side):
    model, tok = tiny(kind)
    segments = {"marker": "w1"} if kind.startswith("t5") else {}
    patch_model(model, temperature=0.8, window=2, pattern="independent_query", segments=segments, tokenizer=tok)
    enc = pairs_batch(tok, padding_side, n=4, seed=5)
    extra = {}
    if kind in ("bert", "distilbert"):  # absolute positions must not count the left padding
        extra["position_ids"] = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        batch = hidden(model, **model_inputs(model, enc), **extra)
        for b in range(len(enc["input_ids"])):
            real = enc["attention_mask"][b].bool()
            alone = {k: v[b : b + 1, real] for k, v in enc.items()}
            single = hidden(model, **model_inputs(model, alone))
            torch.testing.assert_close(batch[b, real], single[0], atol=2e-5, rtol=1e-4)


def test_independent_query_states_ignore_the_document():
    """With independent_query, query tokens never see the document: changing it leaves their states unchanged."""
    model, tok = tiny("bert")
    patch_model(model, pattern="independent_query", window=4)
    a = tok(["w1 w2 w3"], ["w4 w5 w6 w7 w8"], return_tensors="pt")
    b = tok(["w1 w2 w3"], ["w9 w10 w11 w12 w13"], return_tensors="pt")
    with torch.no_grad():
        ha, hb = model(**a).last_hidden_state, model(**b).last_hidden_state
    query = slice(1, 5)  # w1 w2 w3 [SEP]
    torch.testing.assert_close(ha[0, query], hb[0, query], atol=1e-6, rtol=0)
    assert (ha[0, 0] - hb[0, 0]).abs().max() > 1e-4  # [CLS] does see the document
    unpatch_model(model)
    with torch.no_grad():
        assert (model(**a).last_hidden_state[0, query] - model(**b).last_hidden_state[0, query]).abs().max() > 1e-4


def test_window_limits_the_receptive_field():
    """One layer with window w: a document token is unaffected by document tokens further than w away."""
    model, tok = tiny("bert", num_hidden_layers=1)
    patch_model(model, window=1, pattern="cls_interaction", doc_cls=False)
    a = tok(["w1"], ["w2 w3 w4 w5 w6 w7"], return_tensors="pt")
    b = tok(["w1"], ["w2 w3 w4 w5 w6 w30"], return_tensors="pt")  # only the 6th document token differs
    with torch.no_grad():
        ha, hb = model(**a).last_hidden_state[0], model(**b).last_hidden_state[0]
    doc = list(range(3, 9))  # positions of w2..w7
    torch.testing.assert_close(ha[doc[:4]], hb[doc[:4]], atol=1e-6, rtol=0)  # >= 2 tokens away
    assert (ha[doc[4]] - hb[doc[4]]).abs().max() > 1e-4  # the neighbour sees it
