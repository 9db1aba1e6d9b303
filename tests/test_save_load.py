"""Saved checkpoints carry the patch settings in config.json and reload patched with bit-identical outputs;
plain transformers / sentence-transformers still load them, unpatched."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from conftest import model_inputs, pairs_batch, tiny

import hf_sparse_tempscale as hst
from hf_sparse_tempscale import SparseTempScaleConfig, get_patch_config, is_patched, patch_model, unpatch_model

INIT = 0.2
SPARSE = SparseTempScaleConfig(temperature=0.7, window=2, pattern="independent_query")
PAIRS = [("w1 w2", "w3 w4 w5 w6 w7 w8 w9"), ("w10", "w11 w12 w13"), ("w14 w15 w16", "w17 w18 w19 w20 w21 w22 w23 w24")]
TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9", "w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20"]


def seqcls(num_labels: int = 2):
    base, tok = tiny("bert", initializer_range=INIT, num_labels=num_labels)
    torch.manual_seed(0)
    return tf.BertForSequenceClassification(base.config).eval(), tok


def logits(model, enc) -> torch.Tensor:
    with torch.no_grad():
        return model(**model_inputs(model, enc)).logits


def saved_settings(path) -> dict | None:
    return json.loads((path / "config.json").read_text()).get("sparse_tempscale")


# ---- transformers models ---------------------------------------------------------------------------------------------
def test_bert_pair_classifier_round_trip(tmp_path):
    model, tok = seqcls()
    enc = pairs_batch(tok, "right")
    stock = logits(model, enc)
    patch_model(model, SPARSE)
    ours = logits(model, enc)
    assert (ours - stock).abs().max() > 1e-3
    model.save_pretrained(tmp_path)
    assert saved_settings(tmp_path) == SPARSE.to_dict()
    assert get_patch_config(model) == SPARSE  # saving changes nothing on the live model

    loaded = hst.from_pretrained(str(tmp_path), auto_class=tf.AutoModelForSequenceClassification).eval()
    assert isinstance(loaded, tf.BertForSequenceClassification)
    assert is_patched(loaded) and get_patch_config(loaded) == SPARSE
    assert torch.equal(logits(loaded, enc), ours)

    # Plain transformers loads the same folder without error, unpatched, with the stock outputs.
    plain = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert not is_patched(plain) and plain.config._attn_implementation == "sdpa"
    assert torch.equal(logits(plain, enc), stock)
    body = tf.AutoModel.from_pretrained(tmp_path).eval()  # another auto class on the same folder
    assert not is_patched(body)
    # ... and that plain load, unpatched, equals the reloaded patched model once unpatched.
    unpatch_model(loaded)
    assert torch.equal(logits(loaded, enc), stock)


def test_default_auto_class_and_kwargs_pass_through(tmp_path):
    model, tok = tiny("bert", initializer_range=INIT)
    enc = pairs_batch(tok, "left")
    patch_model(model, SPARSE)
    with torch.no_grad():
        ours = model(**enc).last_hidden_state
    model.save_pretrained(tmp_path)
    loaded = hst.from_pretrained(str(tmp_path), attn_implementation="eager")
    assert isinstance(loaded, tf.BertModel) and get_patch_config(loaded) == SPARSE
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**enc).last_hidden_state, ours, atol=1e-5, rtol=1e-4)
    unpatch_model(loaded)
    assert loaded.config._attn_implementation == "eager"  # the implementation it was loaded with


def test_unpatched_model_saves_without_settings(tmp_path):
    model, _ = tiny("bert")
    patch_model(model, SPARSE)
    unpatch_model(model)
    model.save_pretrained(tmp_path)
    assert saved_settings(tmp_path) is None
    assert not is_patched(hst.from_pretrained(str(tmp_path)))


def test_t5_round_trip_with_marker_and_decoder_settings(tmp_path):
    model, tok = tiny("t5", initializer_range=INIT)
    cfg = SparseTempScaleConfig(
        temperature=[0.6, 0.9], window=1, pattern="independent_query", apply_to=("encoder", "decoder", "cross"),
        segments={"marker": "document :"}, scale_position_bias=False,
    )
    patch_model(model, cfg, tokenizer=tok)
    enc = tok(["w1 w2 document : w3 w4 w5 w6 w7", "w8 document : w9 w10"], padding=True, return_tensors="pt")
    enc["decoder_input_ids"] = enc["input_ids"][:, :4]
    with torch.no_grad():
        ours = model(**enc).logits
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert saved_settings(tmp_path) == cfg.to_dict()

    loaded = hst.from_pretrained(str(tmp_path), auto_class=tf.AutoModelForSeq2SeqLM, tokenizer=tok)
    assert get_patch_config(loaded) == cfg
    with torch.no_grad():
        assert torch.equal(loaded.eval()(**enc).logits, ours)
    # Without an explicit tokenizer the one saved in the folder resolves the marker.
    loaded = hst.from_pretrained(str(tmp_path), auto_class=tf.AutoModelForSeq2SeqLM)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(**enc).logits, ours)


def test_t5_encoder_round_trip(tmp_path):
    model, tok = tiny("t5-encoder", initializer_range=INIT)
    enc = pairs_batch(tok, "right")
    eos = (enc["input_ids"] == tok.eos_token_id).long()
    segment_ids = ((eos.cumsum(1) - eos) >= 1).long()
    patch_model(model, SPARSE)
    with torch.no_grad():
        ours = model(**enc, segment_ids=segment_ids).last_hidden_state
    model.save_pretrained(tmp_path)
    loaded = hst.from_pretrained(str(tmp_path), auto_class=tf.T5EncoderModel).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**enc, segment_ids=segment_ids).last_hidden_state, ours)


# ---- sentence-transformers -------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_dirs(tmp_path):
    body, tok = tiny("bert", initializer_range=INIT)
    body.save_pretrained(tmp_path / "body")
    tok.save_pretrained(tmp_path / "body")
    head, _ = seqcls(num_labels=1)
    head.save_pretrained(tmp_path / "cross")
    tok.save_pretrained(tmp_path / "cross")
    return tmp_path


def test_sentence_transformer_round_trip(tiny_dirs):
    from sentence_transformers import SentenceTransformer, models

    st = SentenceTransformer(modules=[models.Transformer(str(tiny_dirs / "body")), models.Pooling(32)], device="cpu")
    stock = st.encode(TEXTS, convert_to_tensor=True)
    patch_model(st, SPARSE)
    ours = st.encode(TEXTS, convert_to_tensor=True)
    assert (ours - stock).abs().max() > 1e-3
    st.save(str(tiny_dirs / "st"))
    assert saved_settings(tiny_dirs / "st") == SPARSE.to_dict()

    loaded = hst.load_sentence_transformer(str(tiny_dirs / "st"), device="cpu")
    assert is_patched(loaded) and get_patch_config(loaded) == SPARSE
    assert torch.equal(loaded.encode(TEXTS, convert_to_tensor=True), ours)
    plain = SentenceTransformer(str(tiny_dirs / "st"), device="cpu")
    assert not is_patched(plain)
    assert torch.equal(plain.encode(TEXTS, convert_to_tensor=True), stock)


def test_cross_encoder_round_trip(tiny_dirs):
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(tiny_dirs / "cross"), device="cpu")
    stock = ce.predict(PAIRS, convert_to_tensor=True)
    patch_model(ce, SPARSE)
    ours = ce.predict(PAIRS, convert_to_tensor=True)
    assert (ours - stock).abs().max() > 1e-4
    ce.save_pretrained(str(tiny_dirs / "ce"))
    assert saved_settings(tiny_dirs / "ce") == SPARSE.to_dict()

    loaded = hst.load_cross_encoder(str(tiny_dirs / "ce"), device="cpu")
    assert is_patched(loaded) and get_patch_config(loaded) == SPARSE
    assert torch.equal(loaded.predict(PAIRS, convert_to_tensor=True), ours)
    plain = CrossEncoder(str(tiny_dirs / "ce"), device="cpu")
    assert not is_patched(plain)
    assert torch.equal(plain.predict(PAIRS, convert_to_tensor=True), stock)


# ---- PEFT ------------------------------------------------------------------------------------------------------------
def _lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)  # random LoRA B: the adapter changes the outputs
    return get_peft_model(model, LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False)).eval()


def test_patched_peft_model_round_trip(tmp_path):
    """PEFT saves only the adapter, so the settings travel with the base checkpoint: patch the base, save it, wrap it
    with LoRA (the patch survives wrapping), save the adapter; reload both and get bit-identical outputs."""
    from peft import PeftModel

    model, tok = seqcls()
    enc = pairs_batch(tok, "right")
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    patch_model(model, SPARSE)
    model.save_pretrained(base_dir)
    peft_model = _lora(model)
    assert is_patched(peft_model) and get_patch_config(peft_model) == SPARSE
    ours = logits(peft_model, enc)
    peft_model.save_pretrained(adapter_dir)
    assert saved_settings(base_dir) == SPARSE.to_dict()

    base = hst.from_pretrained(str(base_dir), auto_class=tf.AutoModelForSequenceClassification)
    reloaded = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    assert is_patched(reloaded) and get_patch_config(reloaded) == SPARSE
    assert torch.equal(logits(reloaded, enc), ours)
    # Patching after wrapping is the same as wrapping a patched model.
    plain = PeftModel.from_pretrained(
        tf.AutoModelForSequenceClassification.from_pretrained(base_dir), str(adapter_dir)
    ).eval()
    assert not is_patched(plain)
    assert torch.equal(logits(patch_model(plain, SPARSE), enc), ours)


def test_merged_peft_model_round_trip(tmp_path):
    model, tok = seqcls()
    peft_model = _lora(model)
    patch_model(peft_model, SPARSE)
    enc = pairs_batch(tok, "right")
    before_merge = logits(peft_model, enc)
    merged = peft_model.merge_and_unload()
    assert is_patched(merged) and get_patch_config(merged) == SPARSE
    merged_out = logits(merged, enc)
    torch.testing.assert_close(merged_out, before_merge, atol=1e-5, rtol=1e-4)
    merged.save_pretrained(tmp_path)
    loaded = hst.from_pretrained(str(tmp_path), auto_class=tf.AutoModelForSequenceClassification)
    assert torch.equal(logits(loaded.eval(), enc), merged_out)
