"""What must keep working on a patched model: training with dropout, gradient checkpointing, autocast, left/right
padding, torch.compile, PEFT LoRA, SentenceTransformer.encode and CrossEncoder.predict/rank."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf
from conftest import model_inputs, pairs_batch, tiny

from hf_sparse_tempscale import SparseTempScaleConfig, get_patch_config, is_patched, patch_model, patched, unpatch_model

INIT = 0.2
SPARSE = dict(temperature=0.7, window=1, pattern="independent_query")
PAIRS = [
    ("w1 w2", "w3 w4 w5 w6 w7 w8 w9 w10 w11"),
    ("w12", "w13 w14 w15"),
    ("w16 w17 w18", "w19 w20 w21 w22 w23 w24 w25 w26"),
    ("w27 w28", "w29 w30 w31 w32 w33"),
]


def seqcls(seed: int = 0, **overrides):
    base, tok = tiny("bert", seed=seed, initializer_range=INIT, **{"num_labels": 2, **overrides})
    torch.manual_seed(seed)
    return tf.BertForSequenceClassification(base.config).eval(), tok


def t5_segment_ids(input_ids, eos):
    is_eos = (input_ids == eos).long()
    return ((is_eos.cumsum(1) - is_eos) >= 1).long()


# ---- training ------------------------------------------------------------------------------------------------------
def test_training_with_dropout():
    model, tok = seqcls(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    patch_model(model, **SPARSE)
    enc = pairs_batch(tok, "right", n=8, seed=1)
    labels = torch.tensor([0, 1] * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    with torch.no_grad():  # dropout is active in train mode
        assert not torch.equal(model(**enc).logits, model(**enc).logits)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = model(**enc, labels=labels).loss
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        optimizer.step()
        losses.append(loss.item())
    assert is_patched(model) and get_patch_config(model) == SparseTempScaleConfig(**SPARSE)
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, model(**enc).logits)


def test_attention_dropout_reaches_the_patched_attention():
    """Only attention dropout is on: train-mode outputs vary, eval outputs do not."""
    model, tok = seqcls(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5)
    patch_model(model, **SPARSE)
    enc = pairs_batch(tok, "right")
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(**enc).logits, model(**enc).logits)
        model.eval()
        assert torch.equal(model(**enc).logits, model(**enc).logits)


# ---- gradient checkpointing ------------------------------------------------------------------------------------------
def _two_forwards_one_backward(model, first, second):
    """Like MultipleNegativesRankingLoss: two forwards of different batches (padding, segments), then one backward."""
    model.zero_grad()
    a = model.bert(**first).last_hidden_state[:, 0]
    b = model.bert(**second).last_hidden_state[:, 0]
    loss = torch.nn.functional.cross_entropy(a @ b[: len(a)].T, torch.arange(len(a)))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(use_reentrant):
    model, tok = seqcls(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    patch_model(model, **SPARSE)
    first = dict(pairs_batch(tok, "right", n=4, seed=2))
    second = dict(pairs_batch(tok, "left", n=4, seed=3))
    assert first["input_ids"].shape != second["input_ids"].shape  # different lengths and padding
    model.train()
    loss_ref, grads_ref = _two_forwards_one_backward(model, first, second)

    calls = []
    model.bert.encoder.layer[0].attention.register_forward_hook(lambda *_: calls.append(1))
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    loss, grads = _two_forwards_one_backward(model, first, second)
    assert len(calls) == 4  # 2 forwards + 2 recomputations during backward: checkpointing really ran
    assert torch.equal(loss, loss_ref)
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-6, rtol=1e-5, msg=name)

    # The sparse pattern matters for these gradients (so stale or missing masks would show).
    with torch.no_grad():
        unpatched = copy.deepcopy(model)
    unpatch_model(unpatched)
    unpatched.activation_checkpointing_disable()
    _, grads_stock = _two_forwards_one_backward(unpatched, first, second)
    assert max((grads_stock[n] - grads_ref[n]).abs().max() for n in grads_ref) > 1e-4


# ---- mixed precision -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_on_cpu_is_close_to_fp32(dtype, backend):
    model, tok = seqcls()
    patch_model(model, **SPARSE, backend=backend)
    enc = pairs_batch(tok, "right")
    with torch.no_grad():
        reference = model(**enc).logits
        try:
            with torch.autocast("cpu", dtype=dtype):
                low = model(**enc).logits
        except RuntimeError as err:  # pragma: no cover - depends on the CPU build
            pytest.skip(f"{dtype} autocast unsupported on this CPU build: {err}")
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), reference, atol=5e-2, rtol=5e-2)


def test_bf16_weights_with_padding_and_sparse_mask():
    model, tok = seqcls()
    enc = pairs_batch(tok, "left")
    patch_model(model, **SPARSE, backend="eager")
    with torch.no_grad():
        reference = model(**enc).logits
        model.to(torch.bfloat16)
        low = model(**enc).logits
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), reference, atol=5e-2, rtol=5e-2)


def test_accelerate_mixed_precision_prepare_and_unwrap_keep_the_patch():
    """accelerate (used by Trainer) wraps `model.forward` for autocast and re-binds it on unwrap."""
    from accelerate import Accelerator

    model, tok = tiny("bert", initializer_range=INIT)
    enc = pairs_batch(tok, "right")
    patch_model(model, **SPARSE)
    with torch.no_grad():
        expected = model(**enc).last_hidden_state
        stock = patch_model(copy.deepcopy(model), SparseTempScaleConfig())(**enc).last_hidden_state
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    prepared = accelerator.prepare(model)
    with torch.no_grad():
        low = prepared(**enc).last_hidden_state
    torch.testing.assert_close(low.float(), expected, atol=5e-2, rtol=5e-2)
    assert (low.float() - stock).abs().max() > 0.2  # still the patched attention under autocast
    unwrapped = accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
    assert is_patched(unwrapped)
    with torch.no_grad():
        assert torch.equal(unwrapped(**enc).last_hidden_state, expected)


# ---- padding side ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bert", "t5-encoder"])
def test_left_padding_equals_right_padding(kind):
    model, tok = tiny(kind, initializer_range=INIT)
    patch_model(model, **SPARSE)
    outs = {}
    for side in ("right", "left"):
        enc = pairs_batch(tok, side, n=4, seed=4)
        kwargs = model_inputs(model, enc)
        if kind == "bert":  # absolute positions must not count the left padding
            kwargs["position_ids"] = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
        else:
            kwargs["segment_ids"] = t5_segment_ids(enc["input_ids"], tok.eos_token_id)
        with torch.no_grad():
            out = model(**kwargs).last_hidden_state
        real = enc["attention_mask"].bool()
        outs[side] = [out[b, real[b]] for b in range(len(out))]
    for right, left in zip(outs["right"], outs["left"]):
        torch.testing.assert_close(left, right, atol=2e-5, rtol=1e-4)


# ---- torch.compile ---------------------------------------------------------------------------------------------------
def test_dynamo_traces_the_patched_model():
    """torch.compile's graph capture (no inductor code generation, so it stays fast) gives the eager outputs."""
    model, tok = tiny("bert", initializer_range=INIT)
    enc = pairs_batch(tok, "right")
    patch_model(model, **SPARSE)
    with torch.no_grad():
        expected = model(**enc).last_hidden_state
        got = torch.compile(model, backend="eager")(**enc).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_torch_compile_of_patched_model():
    model, tok = tiny("bert", initializer_range=INIT)
    enc = pairs_batch(tok, "right")
    patch_model(model, **SPARSE)
    with torch.no_grad():
        expected = model(**enc).last_hidden_state
        compiled = torch.compile(model)
        got = compiled(**enc).last_hidden_state
        again = compiled(**pairs_batch(tok, "left", seed=7)).last_hidden_state  # other shapes: recompiles or dynamic
        eager_again = model(**pairs_batch(tok, "left", seed=7)).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(again, eager_again, atol=1e-5, rtol=1e-4)


# ---- PEFT LoRA -------------------------------------------------------------------------------------------------------
def test_peft_lora_train_step_and_merge():
    from peft import LoraConfig, get_peft_model

    model, tok = seqcls(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    stock_model = copy.deepcopy(model)
    enc = pairs_batch(tok, "right")
    labels = torch.tensor([0, 1, 0, 1])
    lora_config = LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"])
    peft_model = get_peft_model(model, lora_config)
    patch_model(peft_model, **SPARSE)
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_B" in n}
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    loss = peft_model(**enc, labels=labels).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.equal(p, frozen[n]) for n, p in peft_model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, lora[n]) for n, p in peft_model.named_parameters() if n in lora)
    assert is_patched(peft_model) and get_patch_config(peft_model) == SparseTempScaleConfig(**SPARSE)

    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(**enc).logits
    merged = peft_model.merge_and_unload()
    # merge_and_unload keeps the same modules, so the patch (and its semantics) stays on the merged model.
    assert is_patched(merged) and get_patch_config(merged) == SparseTempScaleConfig(**SPARSE)
    with torch.no_grad():
        merged_out = merged(**enc).logits
        torch.testing.assert_close(merged_out, adapted, atol=1e-5, rtol=1e-4)
        # Independent check: the merged weights in a fresh, separately patched model give the same scores.
        stock_model.load_state_dict(merged.state_dict())
        torch.testing.assert_close(patch_model(stock_model, **SPARSE)(**enc).logits, merged_out, atol=1e-6, rtol=0)
        unpatch_model(merged)
        assert (merged(**enc).logits - merged_out).abs().max() > 1e-4


# ---- sentence-transformers -------------------------------------------------------------------------------------------
TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9", "w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20"]
REAL_TEXTS = [
    "Sparse attention lets each document token look only at its neighbours.",
    "short query",
    "Temperature scaling sharpens or flattens the attention distribution of a pretrained transformer model.",
]


def test_sentence_transformer_encode_tiny(tmp_path):
    from sentence_transformers import SentenceTransformer, models

    body, tok = tiny("bert", initializer_range=INIT)
    body.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    st = SentenceTransformer(modules=[models.Transformer(str(tmp_path)), models.Pooling(32)], device="cpu")
    stock = st.encode(TEXTS, convert_to_tensor=True)
    patch_model(st, temperature=0.5)
    assert (st.encode(TEXTS, convert_to_tensor=True) - stock).abs().max() > 1e-3
    patch_model(st, SparseTempScaleConfig())  # neutral settings
    assert (st.encode(TEXTS, convert_to_tensor=True) - stock).abs().max() <= 1e-6
    unpatch_model(st)
    assert torch.equal(st.encode(TEXTS, convert_to_tensor=True), stock)


def test_sentence_transformer_encode_real_minilm(minilm_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_dir, device="cpu")
    stock = st.encode(REAL_TEXTS, convert_to_tensor=True, batch_size=2)
    patch_model(st, temperature=0.5, window=2)
    ours = st.encode(REAL_TEXTS, convert_to_tensor=True, batch_size=2)
    assert (ours - stock).abs().max() > 1e-3
    # encode == the patched transformer run by hand (mean pooling, then normalisation as in the checkpoint).
    enc = st.tokenizer(REAL_TEXTS, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        tokens = st[0].auto_model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    manual = torch.nn.functional.normalize((tokens * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(ours, manual, atol=1e-5, rtol=1e-4)
    patch_model(st, SparseTempScaleConfig())
    assert (st.encode(REAL_TEXTS, convert_to_tensor=True) - stock).abs().max() <= 1e-6


REAL_QUERY = "what does temperature scaling do"
REAL_DOCS = [
    "Temperature scaling divides attention logits by tau, sharpening the distribution when tau is below one.",
    "Cats sleep most of the day.",
    "Sliding window attention restricts each token to a local neighbourhood of the sequence.",
]


def test_cross_encoder_predict_and_rank_with_sparse_pattern(minilm_dir):
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)  # the classification head on top of the real MiniLM body is new
    ce = CrossEncoder(minilm_dir, num_labels=1, device="cpu")
    pairs = [(REAL_QUERY, d) for d in REAL_DOCS]
    identity = torch.nn.Identity()
    stock = ce.predict(pairs, convert_to_tensor=True, activation_fn=identity)
    patch_model(ce, temperature=0.9, window=4, pattern="independent_query")
    scores = ce.predict(pairs, convert_to_tensor=True, activation_fn=identity, batch_size=2)

    enc = ce.tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation=True, return_tensors="pt")
    assert bool((enc["token_type_ids"] != 0).any())
    with torch.no_grad():
        manual = ce.model(**enc).logits.squeeze(-1)
        explicit = ce.model(**enc, segment_ids=enc["token_type_ids"]).logits.squeeze(-1)
    torch.testing.assert_close(scores, manual, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(explicit, manual, atol=1e-6, rtol=0)
    assert (scores - stock).abs().max() > 1e-4
    with patched(ce, window=None, pattern="full"):  # the pattern and window matter: temperature alone differs
        assert (ce.predict(pairs, convert_to_tensor=True, activation_fn=identity) - scores).abs().max() > 1e-4

    ranking = ce.rank(REAL_QUERY, REAL_DOCS, activation_fn=identity)
    assert [r["corpus_id"] for r in ranking] == scores.argsort(descending=True).tolist()
    for r in ranking:
        assert r["score"] == pytest.approx(scores[r["corpus_id"]].item(), abs=1e-5)
