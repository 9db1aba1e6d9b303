"""save_for_hub builds the exact upload folder; the remote-code shim reloads the model patched, bit-identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from huggingface_hub import ModelCard

from conftest import bert_tokenizer, pairs_batch
from hf_sparse_tempscale import SparseTempScaleConfig, get_patch_config, patch_model, unpatch_model
from hf_sparse_tempscale import hub
from hf_sparse_tempscale.hub import model_card_template, push_to_hub, save_for_hub
from training_fixtures import TINY, tiny_checkpoint

EVAL = [dict(task_type="text-ranking", task_name="Reranking", dataset_type="trec-dl-2019-passage",
             dataset_name="TREC DL 2019 passage", dataset_split="test", metric_type="ndcg_at_10",
             metric_name="nDCG@10", metric_value=0.6123)]
SETTINGS = dict(temperature=0.8, window=2, pattern="independent_query")
ST_FILES = {"README.md", "config.json", "config_sentence_transformers.json", "model.safetensors", "modules.json",
            "sentence_bert_config.json", "tokenizer.json", "tokenizer_config.json"}


def _hf_classifier(seed: int = 0):
    tok = bert_tokenizer()
    torch.manual_seed(seed)
    return tf.BertForSequenceClassification(tf.BertConfig(vocab_size=len(tok), num_labels=1, **TINY)).eval(), tok


def _cross_encoder(tmp_path: Path):
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(tiny_checkpoint(tmp_path / "base"), num_labels=1, activation_fn=torch.nn.Identity())
    return patch_model(ce, **SETTINGS)


PAIRS = [("w1 w2", "w3 w4 w5 w6 w7 w8 w9 w10 w11 w12"), ("w5", "w6 w7 w8 w9 w1 w2"), ("w9 w3", "w4 w4 w5")]


def test_template_found_in_repo():
    path = model_card_template()
    assert path.name == "sparse_tempscale.md" and path.is_file()


def test_cross_encoder_folder_exact(tmp_path):
    ce = _cross_encoder(tmp_path)
    folder = save_for_hub(ce, tmp_path / "hub", repo_id="org/sparse-minilm", eval_results=EVAL, tags=["demo"],
                          base_model="sentence-transformers/all-MiniLM-L6-v2")
    assert {p.name for p in folder.iterdir()} == ST_FILES  # no shim without remote_code
    config = json.loads((folder / "config.json").read_text())
    assert config["sparse_tempscale"] == get_patch_config(ce).to_dict()
    assert SparseTempScaleConfig.from_dict(config["sparse_tempscale"]).window == 2
    assert "auto_map" not in config

    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "text-ranking"
    assert {"hf-sparse-tempscale", "sparse-attention", "tempscale", "cross-encoder", "demo"} <= set(data.tags)
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    (result,) = data.eval_results
    assert (result.metric_type, result.metric_value) == ("ndcg_at_10", 0.6123)
    assert result.dataset_type == "trec-dl-2019-passage"
    assert data.to_dict()["model-index"][0]["name"] == "sparse-minilm"
    text = card.text
    assert "| `window` | `2` |" in text and "| `temperature` | `0.8` |" in text and '"independent_query"' in text
    assert "| query | no | yes | no |" in text  # independent_query: query sees neither [CLS] nor the document
    assert 'load_cross_encoder("org/sparse-minilm")' in text
    assert "| Reranking | TREC DL 2019 passage | test | nDCG@10 | 0.6123 |" in text
    assert "arXiv:2410.24200" in text and "Length-Induced Embedding Collapse" in text
    assert "Investigating the Effects of Sparse Attention on Cross-Encoders" in text and "ECIR 2024" in text
    assert "trust_remote_code" not in text


def test_remote_code_shim_reloads_patched_bit_identically(tmp_path):
    from sentence_transformers import CrossEncoder

    ce = _cross_encoder(tmp_path)
    expected = ce.predict(PAIRS, convert_to_tensor=True)
    folder = save_for_hub(ce, tmp_path / "hub_rc", repo_id="org/rc", remote_code=True)
    assert {p.name for p in folder.iterdir()} == ST_FILES | {"modeling_sparse_tempscale.py"}
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoModel": "modeling_sparse_tempscale.SparseTempScaleBertModel",
        "AutoModelForSequenceClassification": "modeling_sparse_tempscale.SparseTempScaleBertForSequenceClassification",
        "AutoModelForTextEncoding": "modeling_sparse_tempscale.SparseTempScaleBertModel",
    }
    assert 'CrossEncoder("org/rc", trust_remote_code=True)' in (folder / "README.md").read_text()

    reloaded = CrossEncoder(str(folder), trust_remote_code=True, activation_fn=torch.nn.Identity())
    assert type(reloaded[0].model).__name__ == "SparseTempScaleBertForSequenceClassification"
    assert get_patch_config(reloaded) == get_patch_config(ce)
    got = reloaded.predict(PAIRS, convert_to_tensor=True)
    assert torch.equal(got, expected)
    unpatch_model(ce)
    assert not torch.allclose(ce.predict(PAIRS, convert_to_tensor=True), expected)  # the patch matters here

    tok = bert_tokenizer()
    enc = tok([p[0] for p in PAIRS], [p[1] for p in PAIRS], padding=True, return_tensors="pt")
    patch_model(ce, **SETTINGS)
    with torch.no_grad():
        base = tf.AutoModel.from_pretrained(str(folder), trust_remote_code=True).eval()
        assert get_patch_config(base) == get_patch_config(ce)
        assert torch.equal(base(**enc).last_hidden_state, ce[0].model.bert(**enc).last_hidden_state)


def test_plain_transformers_model_with_tokenizer(tmp_path):
    model, tok = _hf_classifier()
    patch_model(model, tokenizer=tok, **SETTINGS)
    enc = pairs_batch(tok)
    with torch.no_grad():
        expected = model(**enc).logits
    folder = save_for_hub(model, tmp_path / "hf", repo_id="org/plain", tokenizer=tok, remote_code=True,
                          eval_results=EVAL)
    assert {p.name for p in folder.iterdir()} == {"README.md", "config.json", "model.safetensors",
                                                   "modeling_sparse_tempscale.py", "tokenizer.json",
                                                   "tokenizer_config.json"}
    text = (folder / "README.md").read_text()
    assert 'from_pretrained("org/plain", auto_class=AutoModelForSequenceClassification)' in text
    reloaded = tf.AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=True).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**enc).logits, expected)
    # without trust_remote_code the stock class loads, unpatched: the card says so
    from hf_sparse_tempscale import from_pretrained

    ours = from_pretrained(str(folder), auto_class=tf.AutoModelForSequenceClassification).eval()
    with torch.no_grad():
        assert torch.equal(ours(**enc).logits, expected)


def test_sentence_transformer_remote_code(tmp_path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(tiny_checkpoint(tmp_path / "enc", head="encoder"))
    patch_model(st, temperature=0.6)
    texts = ["w1 w2 w3 w4 w5 w6", "w7 w8", "w9 w10 w11 w12 w13 w14 w15 w16"]
    expected = st.encode(texts, convert_to_tensor=True)
    folder = save_for_hub(st, tmp_path / "st", repo_id="org/st", remote_code=True)
    assert "1_Pooling" in {p.name for p in folder.iterdir()}
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "sentence-similarity" and card.data.eval_results is None
    assert 'load_sentence_transformer("org/st")' in card.text and "No evaluation results" in card.text
    reloaded = SentenceTransformer(str(folder), trust_remote_code=True)
    assert torch.equal(reloaded.encode(texts, convert_to_tensor=True), expected)


def test_rejects_unpatched_and_peft(tmp_path):
    model, tok = _hf_classifier()
    with pytest.raises(ValueError, match="not patched"):
        save_for_hub(model, tmp_path / "x")
    from peft import LoraConfig, get_peft_model

    patch_model(model, temperature=0.9)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["query"]))
    with pytest.raises(ValueError, match="merge"):
        save_for_hub(peft_model, tmp_path / "y")


def test_push_to_hub_uploads_the_folder(tmp_path, monkeypatch):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
            calls["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, folder_path, repo_id, repo_type=None, revision=None, commit_message=None):
            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            calls["config"] = json.loads((Path(folder_path) / "config.json").read_text())

            class Info:
                commit_url = f"https://huggingface.co/{repo_id}/commit/abc"

            return Info()

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    ce = _cross_encoder(tmp_path)
    url = push_to_hub(ce, "org/pushed", token="t0k", private=True, remote_code=True, eval_results=EVAL)
    assert url == "https://huggingface.co/org/pushed/commit/abc"
    assert calls["repo"] == ("org/pushed", True, True) and calls["token"] == "t0k"
    expected = save_for_hub(ce, tmp_path / "same", repo_id="org/pushed", remote_code=True, eval_results=EVAL)
    assert calls["files"] == sorted(p.name for p in expected.iterdir())
    assert calls["config"] == json.loads((expected / "config.json").read_text())
