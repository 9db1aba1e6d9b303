"""The public patch API: same object back, exact undo, re-patching, the context manager, every accepted wrapper,
`output_attentions`, `layers` / `apply_to`, and bad input that must fail loudly and leave the model as it was."""

from __future__ import annotations

import copy
import inspect
import math
import pickle

import pytest
import torch
import transformers as tf
from conftest import hidden, model_inputs, pairs_batch, tiny

from hf_sparse_tempscale import (
    ATTENTION_NAME,
    MissingSegmentsError,
    SparseTempScaleConfig,
    get_patch_config,
    is_patched,
    patch_model,
    patched,
    unpatch_model,
)
from hf_sparse_tempscale.patch import unwrap

INIT = 0.2  # larger random weights than the default 0.02 so that attention is far from uniform
SPARSE = dict(temperature=0.5, window=1, pattern="independent_query")
SITE_ATTR = "_sparse_tempscale_site"


# ---- helpers --------------------------------------------------------------------------------------------------------
def build(kind: str, seed: int = 0, **overrides):
    """(model, tokenizer); adds a sequence-classification head for "bert-seqcls"."""
    if kind == "bert-seqcls":
        base, tok = tiny("bert", seed=seed, initializer_range=INIT, **{"num_labels": 2, **overrides})
        torch.manual_seed(seed)
        return tf.BertForSequenceClassification(base.config).eval(), tok
    return tiny(kind, seed=seed, initializer_range=INIT, **overrides)


def segment_ids_after_first_eos(input_ids: torch.Tensor, eos: int) -> torch.Tensor:
    """T5 pairs "q </s> d </s>": 0 up to and including the first </s>, 1 after it."""
    is_eos = (input_ids == eos).long()
    return ((is_eos.cumsum(1) - is_eos) >= 1).long()


def forward_kwargs(model, tok, kind: str, padding_side: str = "right") -> dict:
    enc = pairs_batch(tok, padding_side)
    kwargs = model_inputs(model, enc)
    if kind.startswith("t5"):
        kwargs["segment_ids"] = segment_ids_after_first_eos(enc["input_ids"], tok.eos_token_id)
    return kwargs


def run(model, kwargs) -> torch.Tensor:
    with torch.no_grad():
        return hidden(model, **dict(kwargs))


def snapshot(model) -> dict:
    """Everything a patch may touch, for exact before/after comparisons."""
    hf = unwrap(model)
    return {
        "impl": [
            (type(m).__name__, m.config._attn_implementation_internal)
            for m in hf.modules()
            if isinstance(m, tf.PreTrainedModel)
        ],
        "config": hf.config.to_dict(),
        "has_key": [hasattr(m.config, "sparse_tempscale") for m in hf.modules() if isinstance(m, tf.PreTrainedModel)],
        "pre_hooks": sum(len(m._forward_pre_hooks) for m in hf.modules()),
        "hooks": sum(len(m._forward_hooks) for m in hf.modules()),
        "sites": [n for n, m in hf.named_modules() if SITE_ATTR in m.__dict__],
        "forwards": {n: m.__dict__["forward"] for n, m in hf.named_modules() if "forward" in m.__dict__},
        "private": sorted(
            (n, k) for n, m in hf.named_modules() for k in m.__dict__ if k.startswith("_sparse_tempscale")
        ),
    }


def scale_queries(model, modules, tau: float, bias_tables=()):
    """Independent TempScale reference: an unpatched copy whose query projections (and T5 bias tables) are / tau."""
    with torch.no_grad():
        for proj in modules:
            proj.weight /= tau
            if proj.bias is not None:
                proj.bias /= tau
        for table in bias_tables:
            table.weight /= tau
    return model


# ---- same object, exact undo, untouched weights -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bert", "bert-seqcls", "t5-encoder", "t5"])
def test_patch_returns_same_object_and_unpatch_is_exact(kind):
    model, tok = build(kind)
    kwargs = forward_kwargs(model, tok, kind)
    kwargs_plain = {k: v for k, v in kwargs.items() if k != "segment_ids"}
    before, stock = snapshot(model), run(model, kwargs_plain)
    assert before["impl"][0][1] == "sdpa" and not any(before["has_key"]) and not before["sites"]

    assert patch_model(model, **SPARSE) is model
    assert is_patched(model)
    assert get_patch_config(model) == SparseTempScaleConfig(**SPARSE)
    during = snapshot(model)
    assert all(impl == ATTENTION_NAME for _, impl in during["impl"])
    assert model.config.sparse_tempscale == SparseTempScaleConfig(**SPARSE).to_dict()
    assert len(during["sites"]) == (2 if kind != "t5" else 6)  # T5: 2 encoder, 2 decoder, 2 cross
    out = run(model, kwargs)
    assert (out - stock).abs().max() > 1e-3

    assert unpatch_model(model) is model
    assert not is_patched(model) and get_patch_config(model) is None
    assert snapshot(model) == before  # config, _attn_implementation, no hooks, no site attributes
    assert not hasattr(model.config, "sparse_tempscale")
    assert torch.equal(run(model, kwargs_plain), stock)
    assert unpatch_model(model) is model  # a second unpatch is a no-op
    assert snapshot(model) == before


def test_unpatch_restores_eager_implementation():
    model, tok = tiny("bert", attn="eager", initializer_range=INIT)
    enc = pairs_batch(tok)
    with torch.no_grad():
        stock = model(**enc, output_attentions=True)
        patch_model(model, **SPARSE, backend="eager")
        unpatch_model(model)
        again = model(**enc, output_attentions=True)
    assert model.config._attn_implementation == "eager"
    assert torch.equal(again.last_hidden_state, stock.last_hidden_state)
    assert all(torch.equal(a, b) for a, b in zip(again.attentions, stock.attentions))


@pytest.mark.parametrize("kind", ["bert-seqcls", "t5"])
def test_state_dict_untouched(kind):
    model, _ = build(kind)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    patch_model(model, **SPARSE, apply_to=("encoder", "decoder", "cross") if kind == "t5" else ("encoder",))
    patched_sd = model.state_dict()
    assert list(patched_sd) == list(reference)
    assert all(torch.equal(patched_sd[k], reference[k]) for k in reference)
    unpatch_model(model)
    assert list(model.state_dict()) == list(reference)


def test_deepcopy_and_pickle_of_a_patched_model_are_independent_patched_models():
    model, tok = build("bert")
    kwargs = forward_kwargs(model, tok, "bert")
    stock_signature = inspect.signature(model.forward)
    patch_model(model, **SPARSE)
    expected = run(model, kwargs)
    assert inspect.signature(model.forward) == stock_signature  # callers that inspect forward see the real one

    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert is_patched(copied) and get_patch_config(copied) == SparseTempScaleConfig(**SPARSE)
        assert torch.equal(run(copied, kwargs), expected)
        with torch.no_grad():  # the copy runs its own weights ...
            copied.encoder.layer[0].attention.self.query.weight.mul_(2.0)
        assert (run(copied, kwargs) - expected).abs().max() > 1e-3
        patch_model(copied, temperature=2.0)  # ... and its own settings
        unpatch_model(copied)
        assert not is_patched(copied) and snapshot(copied)["private"] == []
        assert get_patch_config(model) == SparseTempScaleConfig(**SPARSE)
        assert torch.equal(run(model, kwargs), expected)


# ---- re-patching -------------------------------------------------------------------------------------------------
def test_repatch_replaces_settings_without_double_hooks():
    model, tok = build("bert")
    fresh = copy.deepcopy(model)
    kwargs = forward_kwargs(model, tok, "bert")
    stock, before = run(model, kwargs), snapshot(model)

    patch_model(model, **SPARSE)
    once = snapshot(model)
    second = SparseTempScaleConfig(temperature=2.0, window=3, pattern="cls_interaction", doc_cls=True)
    assert patch_model(model, second) is model
    again = snapshot(model)
    # Same hooks, same per-instance forward wrappers (not wrapped twice), same attention sites.
    assert {k: again[k] for k in ("pre_hooks", "hooks", "sites", "forwards")} == {
        k: once[k] for k in ("pre_hooks", "hooks", "sites", "forwards")
    }
    assert get_patch_config(model) == second
    assert model.config.sparse_tempscale == second.to_dict()
    assert torch.equal(run(model, kwargs), run(patch_model(fresh, second), kwargs))

    # Keyword overrides apply on top of the current settings.
    patch_model(model, temperature=0.7)
    assert get_patch_config(model) == second.replace(temperature=0.7)
    assert torch.equal(run(model, kwargs), run(patch_model(fresh, second.replace(temperature=0.7)), kwargs))

    # Undo after several re-patches still restores the state from before the first patch.
    unpatch_model(model)
    assert snapshot(model) == before
    assert torch.equal(run(model, kwargs), stock)


def test_is_patched_and_get_patch_config_on_unpatched_model():
    model, _ = build("bert")
    assert is_patched(model) is False
    assert get_patch_config(model) is None
    cfg = SparseTempScaleConfig(temperature=[0.5, 0.9], window=2)
    patch_model(model, cfg.to_dict())  # a dict is accepted too
    assert is_patched(model) is True
    assert get_patch_config(model) == cfg


# ---- patched(...) context manager ----------------------------------------------------------------------------------
def test_patched_context_manager_on_unpatched_model():
    model, tok = build("bert")
    kwargs = forward_kwargs(model, tok, "bert")
    stock, before = run(model, kwargs), snapshot(model)
    reference = run(patch_model(copy.deepcopy(model), **SPARSE), kwargs)
    with patched(model, **SPARSE) as inside:
        assert inside is model and is_patched(model)
        assert torch.equal(run(model, kwargs), reference)
    assert not is_patched(model)
    assert snapshot(model) == before
    assert torch.equal(run(model, kwargs), stock)


def test_patched_context_manager_restores_previous_settings():
    model, tok = build("bert")
    kwargs = forward_kwargs(model, tok, "bert")
    patch_model(model, **SPARSE)
    previous, outer = get_patch_config(model), run(model, kwargs)
    hooks = snapshot(model)
    with patched(model, temperature=2.0, window=None):
        assert get_patch_config(model) == previous.replace(temperature=2.0, window=None)
        assert (run(model, kwargs) - outer).abs().max() > 1e-3
    assert get_patch_config(model) == previous
    assert snapshot(model) == hooks
    assert torch.equal(run(model, kwargs), outer)


@pytest.mark.parametrize("start_patched", [False, True])
def test_patched_context_manager_restores_on_exception(start_patched):
    model, tok = build("bert")
    kwargs = forward_kwargs(model, tok, "bert")
    if start_patched:
        patch_model(model, temperature=0.8)
    previous, expected, before = get_patch_config(model), run(model, kwargs), snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with patched(model, **SPARSE):
            assert get_patch_config(model) != previous
            raise RuntimeError("boom")
    assert get_patch_config(model) == previous
    assert snapshot(model) == before
    assert torch.equal(run(model, kwargs), expected)
    # Invalid settings fail on entry and change nothing.
    with pytest.raises(ValueError):
        with patched(model, temperature=-1.0):
            pytest.fail("the body must not run")
    assert get_patch_config(model) == previous and snapshot(model) == before


# ---- every accepted model type / wrapper -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """Tiny BERT body and tiny BERT cross-encoder saved with their tokenizer (for SentenceTransformer/CrossEncoder)."""
    root = tmp_path_factory.mktemp("tiny_bert")
    body, tok = build("bert")
    body.save_pretrained(root / "body")
    tok.save_pretrained(root / "body")
    head, _ = build("bert-seqcls", num_labels=1)
    head.save_pretrained(root / "cross")
    tok.save_pretrained(root / "cross")
    return root


TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9", "w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20"]
PAIRS = [("w1 w2", "w3 w4 w5 w6 w7 w8 w9"), ("w10", "w11 w12 w13"), ("w14 w15 w16", "w17 w18 w19 w20 w21 w22 w23 w24")]


def wrapped(kind: str, root):
    """(object to patch, function computing its output)."""
    if kind == "sentence-transformer":
        from sentence_transformers import SentenceTransformer, models

        st = SentenceTransformer(modules=[models.Transformer(str(root / "body")), models.Pooling(32)], device="cpu")
        return st, lambda: st.encode(TEXTS, convert_to_tensor=True)
    if kind == "cross-encoder":
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(str(root / "cross"), device="cpu")
        return ce, lambda: ce.predict(PAIRS, convert_to_tensor=True)
    if kind == "peft-lora":
        from peft import LoraConfig, get_peft_model

        base, tok = build("bert-seqcls")
        torch.manual_seed(1)  # random LoRA B so that the adapter is not a no-op
        peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False))
        peft_model.eval()
        kwargs = forward_kwargs(base, tok, "bert")
        return peft_model, lambda: run(peft_model, kwargs)
    model, tok = build(kind)
    kwargs = forward_kwargs(model, tok, kind)
    return model, lambda: run(model, kwargs)


@pytest.mark.parametrize(
    "kind", ["bert", "bert-seqcls", "t5-encoder", "t5", "sentence-transformer", "cross-encoder", "peft-lora"]
)
def test_patch_and_unpatch_every_model_type(kind, saved_tiny):
    obj, compute = wrapped(kind, saved_tiny)
    with torch.no_grad():
        stock = compute()
    before = snapshot(obj)
    assert patch_model(obj, **SPARSE) is obj
    assert is_patched(obj) and is_patched(unwrap(obj))
    assert get_patch_config(obj) == SparseTempScaleConfig(**SPARSE)
    with torch.no_grad():
        ours = compute()
    assert ours.shape == stock.shape and torch.isfinite(ours).all()
    assert (ours - stock).abs().max() > 1e-4
    unpatch_model(obj)
    assert not is_patched(obj)
    assert snapshot(obj) == before
    with torch.no_grad():
        assert torch.equal(compute(), stock)


# ---- output_attentions with the eager backend ------------------------------------------------------------------------
def brute_force_allowed(token_type_ids, attention_mask, flags, window):
    """allowed[b, i, j] from the rules of the issue, token by token ([CLS] is the first token; right padding)."""
    batch, length = token_type_ids.shape
    allowed = torch.zeros(batch, length, length, dtype=torch.bool)
    for b in range(batch):
        group = {}
        for i in range(length):
            if attention_mask[b, i]:
                group[i] = "cls" if i == 0 else ("query" if token_type_ids[b, i] == 0 else "doc")
        for i in group:
            for j in group:
                if group[i] == group[j]:
                    ok = group[i] != "doc" or abs(i - j) <= window
                else:
                    ok = flags[f"{group[i]}_{group[j]}"]
                allowed[b, i, j] = ok
    return allowed


def test_output_attentions_returns_patched_probabilities():
    model, tok = tiny("bert", attn="eager", initializer_range=INIT)
    enc = pairs_batch(tok, "right")
    with torch.no_grad():
        stock = model(**enc, output_attentions=True).attentions
    cfg = SparseTempScaleConfig(**SPARSE, backend="eager")
    patch_model(model, cfg)
    with torch.no_grad():
        probs = model(**enc, output_attentions=True).attentions
    allowed = brute_force_allowed(enc["token_type_ids"], enc["attention_mask"], cfg.flags, cfg.window)[:, None]
    real_rows = enc["attention_mask"].bool()[:, None, :, None].expand_as(probs[0])
    assert len(probs) == 2
    for layer, stock_layer in zip(probs, stock):
        assert torch.all(layer.masked_select(~allowed & real_rows) == 0)
        sums = layer.sum(-1)[real_rows[..., 0]]
        torch.testing.assert_close(sums, torch.ones_like(sums))
        assert (layer - stock_layer)[real_rows].abs().max() > 1e-2

    # Layer 0 against an explicit softmax(Q K^T / (sqrt(d) tau)) over the allowed keys.
    with torch.no_grad():
        x = model.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
        attn = model.encoder.layer[0].attention.self
        heads, d = 4, 8
        q = attn.query(x).unflatten(-1, (heads, d)).transpose(1, 2)
        k = attn.key(x).unflatten(-1, (heads, d)).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d) / cfg.temperature
        expected = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    torch.testing.assert_close(probs[0][real_rows], expected[real_rows], atol=1e-5, rtol=1e-4)


# ---- layers and apply_to ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [[0], [1]])
def test_layers_patches_only_those_layers(layers):
    model, tok = build("bert")
    kwargs = forward_kwargs(model, tok, "bert")
    ref = copy.deepcopy(model)
    scale_queries(ref, [ref.encoder.layer[i].attention.self.query for i in layers], 0.5)
    all_layers = run(patch_model(copy.deepcopy(model), temperature=0.5), kwargs)
    patch_model(model, temperature=0.5, layers=layers)
    ours = run(model, kwargs)
    torch.testing.assert_close(ours, run(ref, kwargs), atol=2e-5, rtol=1e-4)
    assert (ours - all_layers).abs().max() > 1e-3
    sites = {name: m.__dict__[SITE_ATTR] for name, m in model.named_modules() if SITE_ATTR in m.__dict__}
    assert sorted(site.layer for site in sites.values() if site.active) == layers


def test_sparse_pattern_on_one_layer_leaves_the_other_stock():
    model, tok = build("bert")
    kwargs = forward_kwargs(model, tok, "bert")
    with torch.no_grad():
        stock = model(**kwargs, output_hidden_states=True).hidden_states
        patch_model(model, **SPARSE, layers=[1])
        ours = model(**kwargs, output_hidden_states=True).hidden_states
    real = kwargs["attention_mask"].bool()
    torch.testing.assert_close(ours[1][real], stock[1][real], atol=1e-6, rtol=0)  # layer 0: stock
    assert (ours[2][real] - stock[2][real]).abs().max() > 1e-3  # layer 1: patched


def _t5_projections(model, role: str):
    stack = model.encoder if role == "encoder" else model.decoder
    sub = {"encoder": "SelfAttention", "decoder": "SelfAttention", "cross": "EncDecAttention"}[role]
    index = 1 if role == "cross" else 0
    attns = [getattr(block.layer[index], sub) for block in stack.block]
    tables = [a.relative_attention_bias for a in attns if getattr(a, "has_relative_attention_bias", False)]
    return [a.q for a in attns], tables


@pytest.mark.parametrize("role", ["encoder", "decoder", "cross"])
def test_t5_apply_to_changes_only_the_chosen_attention(role):
    model, tok = build("t5")
    kwargs = forward_kwargs(model, tok, "t5")
    plain = {k: v for k, v in kwargs.items() if k != "segment_ids"}
    with torch.no_grad():
        stock = model(**plain)
    ref = copy.deepcopy(model)
    projections, tables = _t5_projections(ref, role)
    scale_queries(ref, projections, 0.5, tables)
    patch_model(model, temperature=0.5, apply_to=(role,))
    with torch.no_grad():
        ours, expected = model(**plain), ref(**plain)
    if role == "encoder":
        assert (ours.encoder_last_hidden_state - stock.encoder_last_hidden_state).abs().max() > 1e-3
    else:  # decoder-side options leave the encoder exactly stock
        assert torch.equal(ours.encoder_last_hidden_state, stock.encoder_last_hidden_state)
    assert (ours.logits - stock.logits).abs().max() > 1e-3
    torch.testing.assert_close(ours.logits, expected.logits, atol=2e-5, rtol=1e-4)


# ---- bad input: a clear error at patch time, the model left exactly as it was ----------------------------------------
BAD_SETTINGS = {
    "temperature-zero": (dict(temperature=0), ValueError),
    "temperature-negative": (dict(temperature=-0.5), ValueError),
    "temperature-nan": (dict(temperature=float("nan")), ValueError),
    "temperature-inf": (dict(temperature=float("inf")), ValueError),
    "temperature-string": (dict(temperature="0.5"), TypeError),
    "temperature-bool": (dict(temperature=True), TypeError),
    "temperature-list-bad-value": (dict(temperature=[0.5, 0.0]), ValueError),
    "temperature-list-too-short": (dict(temperature=[0.5]), ValueError),
    "temperature-list-too-long": (dict(temperature=[0.5, 0.6, 0.7]), ValueError),
    "window-negative": (dict(window=-1), ValueError),
    "window-float": (dict(window=1.5), TypeError),
    "window-string": (dict(window="4"), TypeError),
    "window-bool": (dict(window=True), TypeError),
    "pattern-unknown": (dict(pattern="sparse"), ValueError),
    "flag-unknown": (dict(cls_qry=True), ValueError),
    "flag-not-bool": (dict(query_doc="yes"), TypeError),
    "layers-out-of-range": (dict(layers=[2]), ValueError),
    "layers-negative": (dict(layers=[-1]), ValueError),
    "layers-empty": (dict(layers=[]), ValueError),
    "layers-int": (dict(layers=0), TypeError),
    "apply-to-unknown": (dict(apply_to=("everything",)), ValueError),
    "apply-to-no-such-layer": (dict(apply_to=("cross",)), ValueError),  # BERT has no cross-attention
    "backend-unknown": (dict(backend="flash"), ValueError),
    "segments-unknown-key": (dict(segments={"separator": 3}), ValueError),
    "length-adaptive-incomplete": (dict(length_adaptive={"short_length": 10}), ValueError),
    "unknown-field": (dict(temprature=0.5), ValueError),
}
BAD_CONFIGS = {
    "dict-unknown-key": ({"temprature": 0.5}, ValueError),
    "dict-bad-value": ({"temperature": 0.0}, ValueError),
    "dict-bad-version": ({"version": 99}, ValueError),
    "not-a-config": (0.5, TypeError),
}


def _expect_unchanged(model, kwargs, state_before, outputs_before, config_before):
    assert snapshot(model) == state_before
    assert get_patch_config(model) == config_before
    assert torch.equal(run(model, kwargs), outputs_before)


@pytest.mark.parametrize("already_patched", [False, True], ids=["fresh", "patched"])
@pytest.mark.parametrize("case", list(BAD_SETTINGS) + list(BAD_CONFIGS))
def test_bad_input_raises_and_leaves_model_unchanged(case, already_patched):
    model, tok = build("bert")
    kwargs = forward_kwargs(model, tok, "bert")
    if already_patched:
        patch_model(model, **SPARSE)
    state, outputs, config = snapshot(model), run(model, kwargs), get_patch_config(model)
    if case in BAD_SETTINGS:
        overrides, error = BAD_SETTINGS[case]
        with pytest.raises(error):
            patch_model(model, **overrides)
    else:
        bad, error = BAD_CONFIGS[case]
        with pytest.raises(error):
            patch_model(model, bad)
    _expect_unchanged(model, kwargs, state, outputs, config)


def test_not_a_model_raises_type_error():
    with pytest.raises(TypeError, match="PreTrainedModel"):
        patch_model(torch.nn.Linear(3, 3), temperature=0.5)


@pytest.mark.parametrize("arch", ["mpnet", "deberta-v2"])
def test_unsupported_architecture_names_the_supported_ones(arch):
    small = dict(vocab_size=49, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    if arch == "mpnet":
        model = tf.MPNetModel(tf.MPNetConfig(**small)).eval()
    else:
        model = tf.DebertaV2Model(tf.DebertaV2Config(**small)).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    state, outputs = snapshot(model), run(model, {"input_ids": ids})
    with pytest.raises(ValueError, match=arch) as err:
        patch_model(model, temperature=0.5)
    for name in ("bert", "roberta", "t5", "distilbert"):
        assert name in str(err.value)
    assert not is_patched(model)
    _expect_unchanged(model, {"input_ids": ids}, state, outputs, None)


def test_t5_missing_segments_error_at_first_forward():
    model, tok = build("t5-encoder")
    kwargs = forward_kwargs(model, tok, "t5-encoder")
    plain = {k: v for k, v in kwargs.items() if k != "segment_ids"}
    patch_model(model, **SPARSE)  # no marker, no separator: segments can only come from segment_ids
    with pytest.raises(MissingSegmentsError, match="segment_ids") as err:
        run(model, plain)
    assert isinstance(err.value, ValueError) and "marker" in str(err.value)
    with_segments = run(model, kwargs)
    with pytest.raises(MissingSegmentsError):  # no stale segments carried over from the previous call
        run(model, plain)
    assert torch.equal(run(model, kwargs), with_segments)


def test_t5_single_text_with_only_a_window_is_all_document():
    """No separator and no pairs needed (all flags on): each text is one document, windowed (sentence-T5 use)."""
    model, tok = build("t5-encoder")
    enc = tok(["w1 w2 w3 w4 w5 w6 w7", "w8 w9 w10"], padding=True, return_tensors="pt")
    stock = run(model, dict(enc))
    patch_model(model, window=1)
    windowed = run(model, dict(enc))
    as_documents = run(model, dict(enc, segment_ids=torch.ones_like(enc["input_ids"])))
    assert torch.equal(windowed, as_documents)
    assert (windowed - stock).abs().max() > 1e-4


def test_t5_encoder_decoder_takes_segment_ids_for_its_encoder():
    """segment_ids given to T5ForConditionalGeneration reach its encoder stack, exactly as for T5EncoderModel."""
    model, tok = build("t5")
    kwargs = forward_kwargs(model, tok, "t5")
    encoder = tf.T5EncoderModel(copy.deepcopy(model.config)).eval()
    encoder.load_state_dict(model.state_dict(), strict=False)
    patch_model(model, **SPARSE)
    patch_model(encoder, **SPARSE)
    with torch.no_grad():
        full = model(**kwargs).encoder_last_hidden_state
        alone = encoder(**{k: v for k, v in kwargs.items() if k != "decoder_input_ids"}).last_hidden_state
        plain = {k: v for k, v in kwargs.items() if k != "segment_ids"}
        with pytest.raises(MissingSegmentsError):
            model(**plain)
    torch.testing.assert_close(full, alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize("already_patched", [False, True], ids=["fresh", "patched"])
def test_marker_without_tokenizer_raises_at_patch_time(already_patched):
    model, tok = build("t5-encoder")
    kwargs = forward_kwargs(model, tok, "t5-encoder")
    if already_patched:
        patch_model(model, temperature=0.7)
    state, outputs, config = snapshot(model), run(model, kwargs), get_patch_config(model)
    with pytest.raises(ValueError, match="tokenizer"):
        patch_model(model, pattern="independent_query", segments={"marker": "document :"})
    _expect_unchanged(model, kwargs, state, outputs, config)
    # With the tokenizer the marker splits the pair where the explicit segment_ids do.
    texts = ["w1 w2 document : w3 w4 w5 w6", "w7 document : w8 w9"]
    enc = tok(texts, padding=True, return_tensors="pt")
    marker_at = [ids.tolist().index(tok.convert_tokens_to_ids("document")) for ids in enc["input_ids"]]
    segment_ids = torch.stack([(torch.arange(enc["input_ids"].shape[1]) >= m).long() for m in marker_at])
    patch_model(model, **SPARSE, segments={"marker": "document :"}, tokenizer=tok)
    by_marker = run(model, dict(enc))
    by_ids = run(model, dict(enc, segment_ids=segment_ids))
    assert torch.equal(by_marker, by_ids)
