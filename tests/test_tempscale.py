"""TempScale against an independent reference: an unpatched copy whose query projection (and T5 bias table)
is scaled by 1/tau computes softmax((QK^T s + bias)/tau) too."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import hidden, model_inputs, pairs_batch, tiny

from hf_sparse_tempscale import patch_model
from hf_sparse_tempscale.attention import adaptive_temperature

QUERY_PROJ = {"bert": "query", "roberta": "query", "xlm-roberta": "query", "electra": "query", "distilbert": "q_lin",
              "t5-encoder": "q", "t5": "q", "mt5": "q", "umt5": "q"}


def _encoder_attention_modules(model, proj: str):
    enc = model.get_encoder() if model.config.is_encoder_decoder else model
    return [m for m in enc.modules() if isinstance(getattr(m, proj, None), torch.nn.Linear)]


def scaled_reference(model, kind, taus, scale_bias=True):
    """Deep copy of an unpatched model with each encoder layer's query projection divided by its tau."""
    ref = copy.deepcopy(model)
    layers = _encoder_attention_modules(ref, QUERY_PROJ[kind])
    assert len(layers) == len(taus)
    with torch.no_grad():
        for module, tau in zip(layers, taus):
            proj = getattr(module, QUERY_PROJ[kind])
            proj.weight /= tau
            if proj.bias is not None:
                proj.bias /= tau
            if scale_bias and getattr(module, "relative_attention_bias", None) is not None:
                module.relative_attention_bias.weight /= tau
    return ref


@pytest.mark.parametrize("kind", list(QUERY_PROJ))
def test_fixed_temperature_matches_scaled_query_reference(kind):
    model, tok = tiny(kind)
    enc = pairs_batch(tok, "right")
    ref = scaled_reference(model, kind, [0.7, 0.7])
    patch_model(model, temperature=0.7)
    with torch.no_grad():
        torch.testing.assert_close(hidden(model, **model_inputs(model, enc)), hidden(ref, **model_inputs(ref, enc)), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["t5-encoder", "umt5"])
def test_t5_position_bias_scaling_is_optional(kind):
    model, tok = tiny(kind)
    enc = pairs_batch(tok, "right")
    with_bias = scaled_reference(model, kind, [0.6, 0.6], scale_bias=True)
    without_bias = scaled_reference(model, kind, [0.6, 0.6], scale_bias=False)
    kwargs = model_inputs(model, enc)
    with torch.no_grad():
        patch_model(model, temperature=0.6, scale_position_bias=False)
        torch.testing.assert_close(hidden(model, **kwargs), hidden(without_bias, **kwargs), atol=2e-5, rtol=1e-4)
        patch_model(model, temperature=0.6, scale_position_bias=True)
        torch.testing.assert_close(hidden(model, **kwargs), hidden(with_bias, **kwargs), atol=2e-5, rtol=1e-4)
        assert (hidden(with_bias, **kwargs) - hidden(without_bias, **kwargs)).abs().max() > 1e-4


def test_per_layer_temperature():
    model, tok = tiny("bert")
    enc = pairs_batch(tok, "left")
    ref = scaled_reference(model, "bert", [0.5, 1.3])
    patch_model(model, temperature=[0.5, 1.3])
    with torch.no_grad():
        torch.testing.assert_close(hidden(model, **enc), hidden(ref, **enc), atol=2e-5, rtol=1e-4)


def test_temperature_composes_with_sparsity():
    model, tok = tiny("bert")
    enc = pairs_batch(tok, "right")
    ref = scaled_reference(model, "bert", [0.8, 0.8])
    sparse = dict(window=2, pattern="independent_query")
    patch_model(model, temperature=0.8, **sparse)
    patch_model(ref, **sparse)
    with torch.no_grad():
        torch.testing.assert_close(hidden(model, **enc), hidden(ref, **enc), atol=2e-5, rtol=1e-4)


def test_length_adaptive_temperature_per_example():
    la = {"short_length": 4, "long_length": 16, "long_temperature": 0.6}
    lengths = torch.tensor([2, 4, 8, 16, 40])
    expected = [1.0, 1.0, 1.0 + (math.log(8) - math.log(4)) / (math.log(16) - math.log(4)) * (0.6 - 1.0), 0.6, 0.6]
    torch.testing.assert_close(adaptive_temperature(lengths, 1.0, la), torch.tensor(expected))

    model, tok = tiny("bert")
    base, _ = tiny("bert")  # same seed: same weights, stays unpatched
    enc = pairs_batch(tok, "right", n=4, seed=2)
    patch_model(model, temperature=1.0, length_adaptive=la)
    with torch.no_grad():
        batch = model(**enc).last_hidden_state
    for b in range(4):
        real = enc["attention_mask"][b].bool()
        tau = float(adaptive_temperature(real.sum()[None], 1.0, la)[0])
        ref = scaled_reference(base, "bert", [tau, tau])
        alone = {k: v[b : b + 1, real] for k, v in enc.items()}
        with torch.no_grad():
            torch.testing.assert_close(batch[b, real], ref(**alone).last_hidden_state[0], atol=2e-5, rtol=1e-4)
