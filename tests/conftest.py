"""Tiny models and locally built tokenizers (no hub access) shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers, processors

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

WORDS = [f"w{i}" for i in range(40)] + ["document", ":", "query", "relevant"]
DATA_ROOT = Path(os.environ.get("HF_SPARSE_TEMPSCALE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture
def one_thread():
    """Tiny ops on a shared 2-core machine: one thread is ~50x faster than two contending ones."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _word_level(special: list[str], single: str, pair: str, unk: str) -> Tokenizer:
    vocab = {tok: i for i, tok in enumerate(special + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(s, vocab[s]) for s in special if s in single + pair]
    )
    return tok


def bert_tokenizer():
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = _word_level(special, "[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1", "[UNK]")
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def roberta_tokenizer():
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = _word_level(special, "<s> $A </s>", "<s> $A </s> </s> $B </s>", "<unk>")
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", mask_token="<mask>",
    )


def t5_tokenizer():
    special = ["<pad>", "</s>", "<unk>"]
    tok = _word_level(special, "$A </s>", "$A </s> $B </s>", "<unk>")
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
_T5 = dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2, decoder_start_token_id=0)

# kind -> (model class, config, tokenizer factory)
KINDS = {
    "bert": (tf.BertModel, lambda v: tf.BertConfig(vocab_size=v, **_SMALL), bert_tokenizer),
    "roberta": (tf.RobertaModel, lambda v: tf.RobertaConfig(vocab_size=v, pad_token_id=1, **_SMALL), roberta_tokenizer),
    "xlm-roberta": (tf.XLMRobertaModel, lambda v: tf.XLMRobertaConfig(vocab_size=v, pad_token_id=1, **_SMALL), roberta_tokenizer),
    "electra": (tf.ElectraModel, lambda v: tf.ElectraConfig(vocab_size=v, embedding_size=32, **_SMALL), bert_tokenizer),
    "distilbert": (
        tf.DistilBertModel,
        lambda v: tf.DistilBertConfig(vocab_size=v, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128),
        bert_tokenizer,
    ),
    "t5-encoder": (tf.T5EncoderModel, lambda v: tf.T5Config(vocab_size=v, **_T5), t5_tokenizer),
    "t5": (tf.T5ForConditionalGeneration, lambda v: tf.T5Config(vocab_size=v, **_T5), t5_tokenizer),
    "mt5": (tf.MT5EncoderModel, lambda v: tf.MT5Config(vocab_size=v, **_T5), t5_tokenizer),
    "umt5": (tf.UMT5EncoderModel, lambda v: tf.UMT5Config(vocab_size=v, **_T5), t5_tokenizer),
}


def tiny(kind: str, attn: str = "sdpa", seed: int = 0, **config_overrides):
    """(model in eval mode, tokenizer) with random weights."""
    cls, make_config, make_tok = KINDS[kind]
    tok = make_tok()
    config = make_config(len(tok))
    for k, v in config_overrides.items():
        setattr(config, k, v)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    return cls(config).eval(), tok


def pairs_batch(tok, padding_side: str = "right", n: int = 4, seed: int = 0, pair: bool = True):
    """A padded batch of query/document pairs (or single texts) of varied lengths."""
    g = torch.Generator().manual_seed(seed)
    queries, docs = [], []
    for _ in range(n):
        q_len, d_len = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(3, 14, (1,), generator=g))
        queries.append(" ".join(WORDS[int(i)] for i in torch.randint(0, 40, (q_len,), generator=g)))
        docs.append(" ".join(WORDS[int(i)] for i in torch.randint(0, 40, (d_len,), generator=g)))
    tok.padding_side = padding_side
    if pair:
        return tok(queries, docs, padding=True, return_tensors="pt")
    return tok(docs, padding=True, return_tensors="pt")


def model_inputs(model, enc):
    """Keyword arguments for a forward (adds decoder ids for encoder-decoder models)."""
    kwargs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if "token_type_ids" in kwargs and model.config.model_type in ("distilbert", "t5", "mt5", "umt5"):
        kwargs.pop("token_type_ids")
    if model.config.is_encoder_decoder:
        kwargs["decoder_input_ids"] = enc["input_ids"][:, :3]
    return kwargs


def hidden(model, **kwargs) -> torch.Tensor:
    out = model(**kwargs)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    try:
        from hf_sparse_tempscale.models import minilm_path

        return minilm_path()
    except ImportError as err:
        pytest.skip(f"real checkpoint unavailable: {err}")
