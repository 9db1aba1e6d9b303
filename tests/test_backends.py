"""The fast backends (banded, flex) against the sdpa reference: outputs AND gradients, every preset, windows 0..8 and
a large one, left/right padding, BERT pairs and single texts, RoBERTa, T5 (position bias); plus their mask layouts
(row intervals, flex block tables) against `masks.dense_mask`, dropout, fallbacks and the `auto` choice."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import WORDS, tiny

from hf_sparse_tempscale import PATTERNS, SparseTempScaleConfig, patch_model
from hf_sparse_tempscale.backends import banded as bd
from hf_sparse_tempscale.backends import flex as fx
from hf_sparse_tempscale.backends import get_backend
from hf_sparse_tempscale.backends.auto import choose_backend
from hf_sparse_tempscale.backends.intervals import dense_from_intervals, row_intervals
from hf_sparse_tempscale.masks import dense_mask

WINDOWS = list(range(9)) + [12, 40]  # 0..8 use the small (matmul) banded kernel, 12 and 40 the fused-sdpa one
FLAG_SETS = dict(PATTERNS, odd=dict(PATTERNS["full"], doc_query=False, cls_query=False, query_cls=False))


pytestmark = pytest.mark.usefixtures("one_thread")


class _Module:  # the attributes transformers' sdpa path reads from an attention module
    is_causal = False
    training = False


def random_groups(batch: int, length: int, gen: torch.Generator, left: bool, cls: bool | None = None) -> torch.Tensor:
    """Contiguous [CLS] | query | document layouts of random lengths, padded on one side."""
    out = torch.full((batch, length), -1, dtype=torch.int8)
    for b in range(batch):
        n = int(torch.randint(max(1, length // 2), length + 1, (1,), generator=gen))
        has_cls = bool(torch.randint(0, 2, (1,), generator=gen)) if cls is None else cls
        n_cls = int(has_cls)
        q = int(torch.randint(0, min(12, n - n_cls) + 1, (1,), generator=gen))
        row = torch.tensor([0] * n_cls + [1] * q + [2] * (n - n_cls - q), dtype=torch.int8)
        if left:
            out[b, length - n :] = row
        else:
            out[b, :n] = row
    return out


def reference(q, k, v, groups, flags, window, scale, position_bias=None):
    """Dense sdpa with the rule's boolean mask (the `sdpa` backend's semantics), output (B, L, H, D)."""
    allowed = dense_mask(groups, flags, window)
    bias = torch.zeros(allowed.shape, dtype=q.dtype).masked_fill(~allowed, float("-inf"))
    if position_bias is not None:
        bias = bias + position_bias
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale).transpose(1, 2)


def attend(name, q, k, v, groups, flags, window, scale, position_bias=None, dropout=0.0):
    backend = get_backend(name)
    batch, length = groups.shape
    mask = backend.build_mask(groups=groups, flags=flags, window=window, padding=groups >= 0, batch_size=batch,
                              q_length=length, kv_length=length, device="cpu")
    out, _ = backend.attend(_Module(), q, k, v, mask, scaling=scale, dropout=dropout, position_bias=position_bias,
                            need_weights=False)
    return out, mask


def compare(name, groups, flags, window, *, heads=2, kv_heads=None, bias_batch=None, seed=0):
    """Max |difference| of outputs and of all input gradients (real rows only) between backend and reference."""
    gen = torch.Generator().manual_seed(seed)
    batch, length = groups.shape
    kv_heads = kv_heads or heads
    q = torch.randn(batch, heads, length, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(batch, kv_heads, length, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(batch, kv_heads, length, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    inputs = [q, k, v]
    pb = None
    if bias_batch is not None:
        pb = torch.randn(bias_batch, heads, length, length, generator=gen, dtype=torch.float64, requires_grad=True)
        inputs.append(pb)
    out, mask = attend(name, q, k, v, groups, flags, window, 0.3, pb)
    ref = reference(q, k, v, groups, flags, window, 0.3, pb)
    real = groups >= 0
    weight = torch.randn(out.shape, generator=gen, dtype=torch.float64) * real[:, :, None, None]
    grads = torch.autograd.grad((out * weight).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * weight).sum(), inputs)
    out_err = (out - ref)[real].abs().max().item() if real.any() else 0.0
    grad_err = max((a - b).abs().max().item() for a, b in zip(grads, ref_grads))
    return out_err, grad_err, mask


# ---- mask layouts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("left", [False, True])
def test_row_intervals_equal_dense_mask(left):
    gen = torch.Generator().manual_seed(1)
    for trial, (flags, window) in enumerate(itertools.product(FLAG_SETS.values(), [None] + WINDOWS)):
        groups = random_groups(3, int(torch.randint(1, 40, (1,), generator=gen)), gen, left)
        iv = row_intervals(groups, flags, window)
        real = (groups >= 0)[:, None, :, None]
        assert torch.equal(dense_from_intervals(iv) & real, dense_mask(groups, flags, window) & real), (trial, window)


def test_row_intervals_reject_irregular_layouts():
    assert row_intervals(torch.tensor([[0, 2, 1, 2]], dtype=torch.int8), PATTERNS["full"], 2) is None  # doc split
    assert row_intervals(torch.tensor([[1, 0, 2, 2]], dtype=torch.int8), PATTERNS["full"], 2) is None  # CLS later
    assert row_intervals(torch.tensor([[0, -1, 2, 2]], dtype=torch.int8), PATTERNS["full"], 2) is None  # pad inside


@pytest.mark.parametrize("left", [False, True])
def test_flex_block_tables_match_the_dense_rule(left):
    """Blocks marked full are entirely allowed and every allowed score lies in a listed block (both exact)."""
    gen = torch.Generator().manual_seed(2)
    for window, flags in itertools.product([None, 0, 3, 40], FLAG_SETS.values()):
        length = int(torch.randint(20, 300, (1,), generator=gen))
        groups = random_groups(2, length, gen, left)
        fm = fx.build_block_mask(groups, flags, window, groups >= 0, 2, length, "cpu")
        block = fm.block_mask.BLOCK_SIZE[0]
        partial, full = fx._dense_block_mask(dense_from_intervals(fm.intervals), fm.padded, block)
        listed = fm.block_mask.to_dense().bool()
        assert torch.equal(listed, (partial + full).bool())
        n_full = fm.block_mask.full_kv_num_blocks
        assert torch.equal(n_full, full.sum(-1).to(n_full.dtype))


# ---- kernels against the reference --------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(FLAG_SETS))
@pytest.mark.parametrize("left", [False, True])
def test_banded_matches_sdpa_outputs_and_gradients(preset, left):
    gen = torch.Generator().manual_seed(3)
    band_kernels = set()
    for window in WINDOWS:
        length = int(torch.randint(60, 160, (1,), generator=gen)) + (250 if window > 20 else 100 if window > 8 else 0)
        groups = random_groups(3, length, gen, left)
        out_err, grad_err, mask = compare("banded", groups, FLAG_SETS[preset], window, seed=window)
        band_kernels.add(mask.kernel or mask.mode)
        assert out_err < 1e-10 and grad_err < 1e-10, (window, out_err, grad_err)
    assert band_kernels == {"small", "flash"}  # both block kernels ran (never the dense fallback)


@pytest.mark.parametrize("window", [0, 3, 8, 40])
def test_banded_single_texts_and_t5_position_bias(window):
    """No [CLS] and no query (a T5 single text: pure band), and a learned (1 or B, H, L, L) bias with its gradient."""
    gen = torch.Generator().manual_seed(4)
    for cls, bias_batch, left in [(False, 1, False), (True, 3, True), (False, 3, True)]:
        groups = random_groups(3, 120 + 8 * window, gen, left, cls=cls)
        if not cls:
            groups = torch.where(groups >= 0, 2, -1).to(torch.int8)  # single texts: document only
        out_err, grad_err, mask = compare("banded", groups, PATTERNS["independent_query"], window, bias_batch=bias_batch)
        assert mask.mode == "band"
        assert out_err < 1e-10 and grad_err < 1e-10, (cls, bias_batch, out_err, grad_err)


def test_banded_grouped_query_attention():
    groups = random_groups(2, 200, torch.Generator().manual_seed(5), False, cls=True)
    for window in (2, 12):  # both block kernels
        out_err, grad_err, _ = compare("banded", groups, PATTERNS["full"], window, heads=4, kv_heads=2)
        assert out_err < 1e-10 and grad_err < 1e-10


def test_banded_falls_back_to_the_dense_rule_without_window():
    groups = random_groups(2, 50, torch.Generator().manual_seed(6), True)
    out_err, grad_err, mask = compare("banded", groups, PATTERNS["independent_query"], None)
    assert mask.mode == "dense" and out_err < 1e-10 and grad_err < 1e-10


def test_banded_inference_results_do_not_alias_the_layer_workspace():
    """Inference reuses buffers across layers; a returned output must survive the next call (one head: the
    output view would otherwise already be contiguous)."""
    groups = torch.full((1, 40), 2, dtype=torch.int8)
    groups[0, 0], groups[0, 1:6] = 0, 1
    mask = get_backend("banded").build_mask(groups=groups, flags=PATTERNS["independent_query"], window=2,
                                            padding=None, batch_size=1, q_length=40, kv_length=40, device="cpu")
    a = [torch.randn(1, 1, 40, 4) for _ in range(3)]
    b = [torch.randn(1, 1, 40, 4) for _ in range(3)]
    with torch.no_grad():
        first = bd.banded_attention(*a, mask, scaling=0.5)
        kept = first.clone()
        bd.banded_attention(*b, mask, scaling=0.5)
    assert torch.equal(first, kept)


@pytest.mark.parametrize("window, length", [(2, 40), (12, 110)])  # small and fused kernels
def test_banded_dropout_is_consistent_and_unbiased(window, length):
    """Backward matches forward under dropout (same random mask), and dropout averages out to the exact output."""
    gen = torch.Generator().manual_seed(7)
    groups = torch.full((1, length), 2, dtype=torch.int8)
    groups[0, 0], groups[0, 1:6] = 0, 1
    flags = PATTERNS["independent_query"]
    q, k, v = (torch.randn(1, 1, length, 2, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = get_backend("banded").build_mask(groups=groups, flags=flags, window=window, padding=None, batch_size=1,
                                            q_length=length, kv_length=length, device="cpu")
    assert mask.mode == "band"

    def run(q, k, v):
        torch.manual_seed(123)
        return bd.banded_attention(q, k, v, mask, scaling=0.5, dropout=0.3)

    assert torch.autograd.gradcheck(run, (q, k, v), eps=1e-6, atol=1e-6, fast_mode=True)
    exact = bd.banded_attention(q, k, v, mask, scaling=0.5)
    with torch.no_grad():
        mean = torch.stack([bd.banded_attention(q, k, v, mask, scaling=0.5, dropout=0.3) for _ in range(300)]).mean(0)
    assert (mean - exact).abs().mean() < 0.05 * exact.abs().mean()
    assert not torch.allclose(run(q, k, v), exact)


@pytest.mark.parametrize("preset", list(FLAG_SETS))
@pytest.mark.parametrize("left", [False, True])
def test_flex_matches_sdpa(preset, left, monkeypatch):
    """The BlockMask + mask_mod (+ score_mod) through FlexAttention's reference implementation: the masks, the
    block tables and the bias handling are the same objects the compiled kernels get."""
    monkeypatch.setattr(fx, "COMPILE", False)
    gen = torch.Generator().manual_seed(8)
    for window in [None, 0, 2, 5, 8, 40]:
        groups = random_groups(2, int(torch.randint(40, 140, (1,), generator=gen)), gen, left)
        q, k, v = (torch.randn(2, 2, groups.shape[1], 8, generator=gen, dtype=torch.float64) for _ in range(3))
        pb = torch.randn(1, 2, groups.shape[1], groups.shape[1], generator=gen, dtype=torch.float64)
        with torch.no_grad():
            for bias in (None, pb):
                out, _ = attend("flex", q, k, v, groups, FLAG_SETS[preset], window, 0.3, bias)
                ref = reference(q, k, v, groups, FLAG_SETS[preset], window, 0.3, bias)
                real = groups >= 0
                assert (out - ref)[real].abs().max() < 1e-10, window


def test_flex_falls_back_for_cpu_training_and_dropout(monkeypatch):
    """No CPU backward and no dropout in FlexAttention: those steps use the banded kernel (exact gradients)."""
    monkeypatch.setattr(fx, "COMPILE", False)
    groups = random_groups(2, 90, torch.Generator().manual_seed(9), True, cls=True)
    out_err, grad_err, _ = compare("flex", groups, PATTERNS["independent_query"], 3)
    assert out_err < 1e-10 and grad_err < 1e-10
    calls = []
    monkeypatch.setattr(bd, "banded_attention", lambda *a, **kw: calls.append(1) or torch.zeros(2, 90, 2, 8))
    q = torch.randn(2, 2, 90, 8)
    with torch.no_grad():
        attend("flex", q, q, q, groups, PATTERNS["independent_query"], 3, 0.3, dropout=0.1)
    assert calls


@pytest.mark.slow
def test_compiled_flex_on_cpu_matches_sdpa():
    """The compiled C++ FlexAttention kernel (inference), with and without a position bias (~40 s: two compiles)."""
    gen = torch.Generator().manual_seed(10)
    groups = random_groups(2, 200, gen, True, cls=True)
    q, k, v = (torch.randn(2, 4, 200, 16, generator=gen) for _ in range(3))
    pb = torch.randn(1, 4, 200, 200, generator=gen)
    with torch.no_grad():
        for bias in (None, pb):
            out, _ = attend("flex", q, k, v, groups, PATTERNS["independent_query"], 4, 0.25, bias)
            ref = reference(q, k, v, groups, PATTERNS["independent_query"], 4, 0.25, bias)
            assert (out - ref)[groups >= 0].abs().max() < 1e-5


# ---- whole models -------------------------------------------------------------------------------------------------


def long_batch(tok, n=3, seed=0, pair=True, padding_side="right", marker=None):
    """Pairs (or single texts) with 40-100-token documents, so the band path (not the dense fallback) runs."""
    g = torch.Generator().manual_seed(seed)
    queries, docs = [], []
    for _ in range(n):
        queries.append(" ".join(WORDS[int(i)] for i in torch.randint(0, 40, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)))
        docs.append(" ".join(WORDS[int(i)] for i in torch.randint(0, 40, (int(torch.randint(40, 100, (1,), generator=g)),), generator=g)))
    tok.padding_side = padding_side
    if marker:  # T5 cross-encoder text: "<query> document : <document>"
        return tok([f"{q} {marker} {d}" for q, d in zip(queries, docs)], padding=True, return_tensors="pt")
    if pair:
        return tok(queries, docs, padding=True, return_tensors="pt")
    return tok(docs, padding=True, return_tensors="pt")


def model_grads(model, kwargs, real):
    model.zero_grad(set_to_none=True)
    out = model(**kwargs).last_hidden_state
    weight = torch.linspace(-1, 1, out.shape[-1])
    ((out * weight).sum(-1) * real).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


CASES = {
    "bert-pairs": ("bert", dict(pair=True), {}),
    "bert-single": ("bert", dict(pair=False), {}),
    "roberta-pairs": ("roberta", dict(pair=True), {}),
    "t5-marker": ("t5-encoder", dict(marker="document :"), {"marker": "document :"}),
    "t5-single": ("t5-encoder", dict(pair=False), {"marker": "document :"}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_patched_models_match_sdpa(case, padding_side, monkeypatch):
    """patch_model(backend=...) vs backend='sdpa': hidden states of real tokens and every parameter gradient
    (train mode, dropout 0), for each preset and several windows."""
    monkeypatch.setattr(fx, "COMPILE", False)
    kind, batch_kw, segments = CASES[case]
    extra = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0) if not kind.startswith("t5") else dict(dropout_rate=0.0)
    model, tok = tiny(kind, **extra)
    model.config.max_position_embeddings = 128
    enc = long_batch(tok, padding_side=padding_side, **batch_kw)
    kwargs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if kind != "bert":
        kwargs.pop("token_type_ids", None)
    real = enc["attention_mask"].float()
    used = []
    original = bd.banded_attention
    monkeypatch.setattr(bd, "banded_attention", lambda *a, **kw: used.append(1) or original(*a, **kw))
    model.train()
    for preset, window in itertools.product(PATTERNS, [0, 2, 8]):  # every window: the kernel tests above
        settings = dict(temperature=0.8, window=window, pattern=preset, segments=segments, tokenizer=tok)
        patch_model(model, backend="sdpa", **settings)
        ref_out, ref_grads = model_grads(model, kwargs, real)
        for backend in ("banded", "flex") if window else ("banded",):
            patch_model(model, backend=backend, **settings)
            if backend == "flex":
                with torch.no_grad():
                    out = model(**kwargs).last_hidden_state
                grads = None
            else:
                out, grads = model_grads(model, kwargs, real)
            assert (out - ref_out)[real.bool()].abs().max() < 2e-5, (preset, window, backend)
            if grads is not None:
                assert grads.keys() == ref_grads.keys()
                for name in grads:
                    torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-4, rtol=1e-3, msg=f"{name} {preset} {window}")
    assert used  # the banded kernel ran (not only the dense fallback)


@pytest.mark.parametrize("temperature", [[0.7, 1.3], "adaptive"])
def test_t5_bias_scale_per_layer_and_per_example(temperature, monkeypatch):
    """The banded backend scales only the bias entries it gathers (1/tau per layer, or per example with a
    length-adaptive tau): outputs and gradients (the relative-bias table included) equal backend='sdpa'."""
    model, tok = tiny("t5-encoder", dropout_rate=0.0)
    enc = long_batch(tok, padding_side="left", marker="document :")
    real = enc["attention_mask"].float()
    kwargs = {k: enc[k] for k in ("input_ids", "attention_mask")}
    settings = dict(window=2, pattern="independent_query", segments={"marker": "document :"}, tokenizer=tok)
    if temperature == "adaptive":
        settings.update(temperature=1.0, length_adaptive={"short_length": 8, "long_length": 128, "long_temperature": 0.6})
    else:
        settings.update(temperature=temperature)
    scales = []
    original = bd.banded_attention
    monkeypatch.setattr(bd, "banded_attention", lambda *a, **kw: scales.append(kw["bias_scale"]) or original(*a, **kw))
    model.train()
    patch_model(model, backend="sdpa", **settings)
    ref_out, ref_grads = model_grads(model, kwargs, real)
    patch_model(model, backend="banded", **settings)
    out, grads = model_grads(model, kwargs, real)
    assert scales and all(s is not None for s in scales)
    if temperature == "adaptive":  # one scale per example, differing with the example's length
        assert scales[0].shape == (3, 1, 1, 1) and scales[0].flatten().unique().numel() > 1
    assert (out - ref_out)[real.bool()].abs().max() < 2e-5
    assert grads.keys() == ref_grads.keys() and any("relative_attention_bias" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-4, rtol=1e-3, msg=name)


def test_non_sparse_patch_uses_padding_only():
    """TempScale alone with backend='banded'/'flex' equals backend='sdpa' (no groups: padding mask only)."""
    model, tok = tiny("bert")
    enc = long_batch(tok, padding_side="left")
    with torch.no_grad():
        patch_model(model, temperature=0.7, backend="sdpa")
        ref = model(**enc).last_hidden_state
        for backend in ("banded", "flex"):
            fx.COMPILE, saved = False, fx.COMPILE
            try:
                patch_model(model, temperature=0.7, backend=backend)
                out = model(**enc).last_hidden_state
            finally:
                fx.COMPILE = saved
            real = enc["attention_mask"].bool()
            assert (out - ref)[real].abs().max() < 2e-5


# ---- auto ---------------------------------------------------------------------------------------------------------


def test_auto_choice():
    windowed = SparseTempScaleConfig(window=4, pattern="independent_query", backend="auto")
    assert choose_backend(SparseTempScaleConfig(temperature=0.9), device="cpu", seq_len=4096, training=False) == "sdpa"
    assert choose_backend(SparseTempScaleConfig(pattern="independent_query"), device="cpu", seq_len=4096, training=True) == "sdpa"
    assert choose_backend(windowed, device="cpu", seq_len=4096, training=False) == "banded"
    assert choose_backend(windowed, device="cpu", seq_len=2048, training=True) == "banded"
    assert choose_backend(windowed, device="cpu", seq_len=64, training=False) == "sdpa"
    assert choose_backend(windowed.replace(window=200), device="cpu", seq_len=512, training=False) == "sdpa"
    assert choose_backend(windowed.replace(window=64), device="cpu", seq_len=512, training=False) == "sdpa"
    assert choose_backend(windowed.replace(window=64), device="cpu", seq_len=1024, training=False) == "banded"
    gpu = choose_backend(windowed, device="cuda", seq_len=4096, training=True)
    assert gpu == ("flex" if fx.flex_available() and _has_triton() else "banded")


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def test_auto_backend_in_a_patched_model():
    model, tok = tiny("bert")
    enc = long_batch(tok)
    with torch.no_grad():
        patch_model(model, window=2, pattern="independent_query", backend="sdpa")
        ref = model(**enc).last_hidden_state
        patch_model(model, window=2, pattern="independent_query", backend="auto")
        out = model(**enc).last_hidden_state
    real = enc["attention_mask"].bool()
    assert (out - ref)[real].abs().max() < 2e-5
