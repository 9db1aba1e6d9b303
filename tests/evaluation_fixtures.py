"""Tiny local models and data for the evaluation tests (no hub access, seconds on CPU)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import torch

DATA_ROOT = Path(os.environ.get("HF_SPARSE_TEMPSCALE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))

WORDS = (  # noqa: SIM905
    "cat dog bird fish horse cow sheep goat mouse lion tiger bear wolf fox deer red blue green yellow "
    "black white small big fast slow old new hot cold river lake sea hill tree grass stone house road "
    "city farm park school eats runs sleeps swims jumps sings reads the a in on of is what where which "
    "who pass key best thing to do"
).split()


def word_tokenizer():
    """A BERT-style ([CLS] a [SEP] b [SEP]) word-level tokenizer over WORDS, built locally."""
    import transformers as tf
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate([*special, "?", ".", ",", "'", *WORDS, *[str(i) for i in range(10)]])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def tiny_bert_dir(folder: Path, kind: str = "bi", seed: int = 0, max_positions: int = 256) -> Path:
    """Save a 2-layer BERT (random weights) + word-level tokenizer; kind 'bi' (SentenceTransformer) or 'cross'."""
    import transformers as tf

    tok = word_tokenizer()
    cfg = tf.BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        num_labels=1,
        initializer_range=0.3,  # peaked attention: tau matters
    )
    torch.manual_seed(seed)
    model = tf.BertModel(cfg) if kind == "bi" else tf.BertForSequenceClassification(cfg)
    out = folder / f"tiny-{kind}"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_sentence_transformer(folder: Path, seed: int = 0):
    from sentence_transformers import SentenceTransformer, models

    hf_dir = tiny_bert_dir(folder, "bi", seed)
    word = models.Transformer(str(hf_dir), max_seq_length=128)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[word, pool], device="cpu")


def tiny_cross_encoder(folder: Path, seed: int = 0):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(tiny_bert_dir(folder, "cross", seed)), device="cpu", max_length=128)


def random_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def write_beir(folder: Path, n_docs: int = 30, n_queries: int = 8, seed: int = 0, split: str = "test") -> Path:
    """A small BEIR folder: each query has 1-3 relevant docs (grades 1-2) and some judged non-relevant ones."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for i in range(n_docs):
            f.write(
                json.dumps({"_id": f"d{i}", "title": random_text(rng, 2), "text": random_text(rng, rng.randint(5, 30))}) + "\n"
            )
    with (folder / "queries.jsonl").open("w") as f:
        for i in range(n_queries):
            f.write(json.dumps({"_id": f"q{i}", "text": random_text(rng, rng.randint(2, 5))}) + "\n")
    with (folder / "qrels" / f"{split}.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for i in range(n_queries):
            docs = rng.sample(range(n_docs), 5)
            for j, d in enumerate(docs):
                grade = 0 if j >= rng.randint(1, 3) else rng.randint(1, 2)
                f.write(f"q{i}\td{d}\t{grade}\n")
    return folder


def write_run(beir: Path, path: Path, depth: int = 10, seed: int = 0) -> Path:
    """A TREC run over the folder's judged queries: `depth` random docs per query, judged ones included."""
    rng = random.Random(seed)
    corpus = [json.loads(l)["_id"] for l in (beir / "corpus.jsonl").read_text().splitlines()]
    qrels: dict[str, list[str]] = {}
    for line in (beir / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, _ = line.split("\t")
        qrels.setdefault(q, []).append(d)
    with path.open("w") as f:
        for q, judged in qrels.items():
            docs = list(dict.fromkeys(judged + rng.sample(corpus, depth)))[:depth]
            rng.shuffle(docs)
            for rank, d in enumerate(docs, start=1):
                f.write(f"{q} Q0 {d} {rank} {100 - rank} tiny\n")
    return path


def write_candidates(path: Path, n_queries: int = 6, depth: int = 8, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n_queries):
            cands = []
            for r in range(depth):
                label = rng.choice([0, 0, 1, 2, None]) if r else 2  # every query has a relevant candidate
                cands.append(
                    {
                        "docid": f"q{i}d{r}",
                        "rank": r + 1,
                        "score": float(depth - r),
                        "text": random_text(rng, rng.randint(4, 20)),
                        "label": label,
                    }
                )
            f.write(json.dumps({"qid": f"q{i}", "query": random_text(rng, 3), "candidates": cands}) + "\n")
    return path


def write_sts(path: Path, n: int = 20, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            f.write(
                json.dumps(
                    {"sentence1": random_text(rng, 6), "sentence2": random_text(rng, 6), "score": round(rng.uniform(0, 5), 2)}
                )
                + "\n"
            )
    return path
