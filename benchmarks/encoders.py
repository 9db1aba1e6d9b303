"""Random-weight BERT-base / T5-base shaped encoders, cross-encoder-like inputs and the attention-free bound."""

from __future__ import annotations

import copy

import torch
import transformers as tf
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from hf_sparse_tempscale import patch_model

ATTENTION_FREE = "attention_free_bound"
QUERY_TOKENS = 16


class _FreeMixing(torch.autograd.Function):
    """Output = value; query and key get zero gradients, so their projections still run forward AND backward (a
    plain identity would let autograd skip the Q/K weight gradients and understate a training step)."""

    @staticmethod
    def forward(ctx, query, key, value):
        return value.transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad):
        zero = grad.new_zeros(grad.shape).transpose(1, 2)
        return zero, zero, grad.transpose(1, 2)


def _identity_attention(module, query, key, value, attention_mask, **kwargs):
    """The attention-free lower bound: each token's output is its own value vector (all projections still run)."""
    return _FreeMixing.apply(query, key, value), None


def _no_mask(*args, **kwargs):
    return None


AttentionInterface.register(ATTENTION_FREE, _identity_attention)
AttentionMaskInterface.register(ATTENTION_FREE, _no_mask)


def build(kind: str, layers: int, max_length: int) -> torch.nn.Module:
    """BERT-base / T5-base layer shapes (768 hidden, 12 heads x 64, 3072 FFN), `layers` deep, dropout 0."""
    torch.manual_seed(0)
    if kind == "bert":
        config = tf.BertConfig(
            hidden_size=768, num_hidden_layers=layers, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=max(512, max_length), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
        config._attn_implementation = "sdpa"
        return tf.BertModel(config, add_pooling_layer=False).eval()
    if kind == "t5":
        config = tf.T5Config(d_model=768, d_kv=64, num_heads=12, d_ff=3072, num_layers=layers, dropout_rate=0.0)
        config._attn_implementation = "sdpa"
        return tf.T5EncoderModel(config).eval()
    raise ValueError(kind)


def inputs(kind: str, length: int, batch: int = 1, device="cpu") -> tuple[dict, dict]:
    """(stock inputs, patched inputs): [CLS] + query + [SEP] + document + [SEP] (BERT) or query + document (T5,
    groups given as segment_ids, as a marker would find them)."""
    g = torch.Generator().manual_seed(length)
    ids = torch.randint(1000, 20000, (batch, length), generator=g).to(device)
    mask = torch.ones(batch, length, dtype=torch.long, device=device)
    if kind == "bert":
        ids[:, 0], ids[:, QUERY_TOKENS + 1], ids[:, -1] = 101, 102, 102
        types = torch.zeros_like(ids)
        types[:, QUERY_TOKENS + 2 :] = 1
        stock = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return stock, dict(stock)
    seg = torch.zeros_like(ids)
    seg[:, QUERY_TOKENS:] = 1
    stock = {"input_ids": ids, "attention_mask": mask}
    return stock, {**stock, "segment_ids": seg}


def attention_free_copy(model: torch.nn.Module) -> torch.nn.Module:
    free = copy.deepcopy(model)
    free.set_attn_implementation(ATTENTION_FREE)
    return free


def patched_copy(model: torch.nn.Module, **settings) -> torch.nn.Module:
    return patch_model(copy.deepcopy(model), **settings)
