"""LongEmbed-style synthetic long-context retrieval tasks, generated locally from a seed (no download).

- passkey: every document is the same filler ("The grass is green. ...") with one sentence giving a person's
  pass key at a random depth; the query asks for that person's pass key.
- needle: every document is a different random haystack of plain sentences with one "needle" fact about a
  place at a random depth; the query asks about that place.

Each target length (tokens, special tokens included) is one mteb subset `len_<n>`; the main score is nDCG@1
(= accuracy@1, as in LongEmbed). The longer the text, the smaller the needle's share of it: a model whose
long-text embeddings collapse towards "generic filler" can no longer tell the documents apart.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from .data import RetrievalData

KINDS = ("passkey", "needle")

PASSKEY_FILLER = ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again."]

_FIRST = (  # noqa: SIM905 (word lists read better as text)
    "Alice Bruno Carmen Dmitri Elena Farid Greta Hiro Ines Jonas Kavya Liam Mila Nadia Oscar Priya Quentin "
    "Rosa Samir Tessa Umar Vera Wen Ximena Yusuf Zoe Anton Beatriz Cyrus Dalia Emil Fiona Gustav Hana Ivan "
    "Jia Kofi Lena"
).split()
_LAST = (  # noqa: SIM905 (word lists read better as text)
    "Abbott Brennan Castillo Dubois Eriksen Fischer Gallo Haddad Ivanova Jensen Kowalski Larsen Moreau Novak "
    "Okafor Petrov Quinn Romano Sato Torres Ueda Varga Weber Xu Yilmaz Zhou"
).split()
_PLACES = (  # noqa: SIM905 (word lists read better as text)
    "Lisbon Oslo Nairobi Kyoto Lima Quito Tbilisi Hanoi Dakar Porto Bergen Cusco Zanzibar Valparaiso Tromso "
    "Salzburg Mombasa Cartagena Seville Krakow Ljubljana Tallinn Riga Vilnius Bruges Ghent Lyon Nantes Bilbao "
    "Granada Palermo Bologna Verona Split Plovdiv Sarajevo Yerevan Baku Almaty Samarkand Kathmandu Colombo "
    "Penang Hue Cebu Hobart Darwin Nelson Dunedin Halifax Quebec Oaxaca Puebla Cuenca Arequipa Salta Mendoza "
    "Montevideo Recife Belem"
).split()
_PLACE_PREFIX = ("", "North ", "South ", "East ", "West ", "Old ", "New ")
_ACTIVITIES = (  # noqa: SIM905 (word lists read better as text)
    "eating a sandwich in the park on a sunny day|watching the boats come in at dawn|"
    "climbing the old lighthouse stairs|swimming in the cold river after lunch|"
    "reading poetry in the night market|riding a bicycle along the canal|"
    "tasting the lemon cake at the corner bakery|listening to the brass band in the square|"
    "flying a red kite on the hill|playing chess with the fishermen at noon|"
    "collecting blue stones on the beach|painting the rooftops at sunset"
).split("|")
_SUBJECTS = (  # noqa: SIM905 (word lists read better as text)
    "The committee|A young farmer|The old museum|Our neighbour|The river|A quiet student|The city council|"
    "The baker|A tired traveller|The orchestra|The small company|Every teacher|The gardener|A local newspaper|"
    "The train"
).split("|")
_VERBS = (  # noqa: SIM905 (word lists read better as text)
    "discussed painted ignored carried measured described repaired visited announced collected questioned "
    "designed followed remembered delivered"
).split()
_OBJECTS = (  # noqa: SIM905 (word lists read better as text)
    "the wooden bridge|a long report|the winter harvest|several old letters|the northern road|a new schedule|"
    "the broken clock|a list of names|the village festival|a heavy box|the morning lesson|a strange noise|"
    "the tax rules|the empty warehouse|a green umbrella"
).split("|")
_TAILS = (  # noqa: SIM905 (word lists read better as text)
    "before the rain started|after a long meeting|without much enthusiasm|during the spring holidays|"
    "with great care|for the third time this year|at the end of the week|in front of the library|"
    "despite the cold weather|as everyone expected|late in the evening|near the harbour"
).split("|")


def default_lengths(max_positions: int, start: int = 64, longest: int | None = None) -> list[int]:
    """Powers of two from `start` up to the model's position limit (or `longest` for models without one)."""
    limit = longest if longest is not None else max_positions
    out, n = [], start
    while n <= limit:
        out.append(n)
        n *= 2
    return out


def model_max_positions(model: Any) -> int | None:
    """max_position_embeddings of a SentenceTransformer/CrossEncoder/transformers model, None if positions are relative."""
    from hf_sparse_tempscale.patch import unwrap

    cfg = unwrap(model).config
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        return None
    return getattr(cfg, "max_position_embeddings", None)


class _Counter:
    """Token counts of sentences (cached); without a tokenizer ~1.3 tokens per word."""

    def __init__(self, tokenizer: Any = None):
        self.tokenizer = tokenizer
        self.cache: dict[str, int] = {}

    def __call__(self, sentence: str) -> int:
        if sentence not in self.cache:
            if self.tokenizer is None:
                self.cache[sentence] = math.ceil(1.3 * len(sentence.split()))
            else:
                self.cache[sentence] = len(self.tokenizer(sentence, add_special_tokens=False)["input_ids"])
        return self.cache[sentence]

    @property
    def specials(self) -> int:
        if self.tokenizer is None:
            return 2
        return len(self.tokenizer("", add_special_tokens=True)["input_ids"])


def _compose(needle: str, filler: Callable[[int], str], length: int, count: _Counter, rng: random.Random) -> str:
    """Filler sentences up to `length` tokens in all, with the needle inserted at a random sentence boundary."""
    budget = length - count.specials - count(needle)
    if budget < 0:
        raise ValueError(f"length {length} is too short for the needle sentence {needle!r}")
    sentences: list[str] = []
    used, i = 0, 0
    while True:
        s = filler(i)
        n = count(s)
        if used + n > budget:
            break
        sentences.append(s)
        used += n
        i += 1
    sentences.insert(rng.randint(0, len(sentences)), needle)
    return " ".join(sentences)


def _names(n: int, rng: random.Random) -> list[str]:
    pool = [f"{f} {l}" for f in _FIRST for l in _LAST]
    if n > len(pool):
        raise ValueError(f"at most {len(pool)} documents per length")
    return rng.sample(pool, n)


def _places(n: int, rng: random.Random) -> list[str]:
    pool = [f"{p}{c}" for p in _PLACE_PREFIX for c in _PLACES]
    if n > len(pool):
        raise ValueError(f"at most {len(pool)} documents per length")
    return rng.sample(pool, n)


def _haystack_sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."


def passkey_data(length: int, n_docs: int = 50, seed: int = 0, tokenizer: Any = None) -> RetrievalData:
    rng = random.Random(f"passkey-{seed}-{length}")
    count = _Counter(tokenizer)
    corpus, queries, qrels = {}, {}, {}
    for i, name in enumerate(_names(n_docs, rng)):
        key = rng.randint(10000, 99999)
        needle = f"The pass key of {name} is {key}. Remember it. {key} is the pass key of {name}."
        corpus[f"d{i}"] = {
            "title": "",
            "text": _compose(needle, lambda j: PASSKEY_FILLER[j % len(PASSKEY_FILLER)], length, count, rng),
        }
        queries[f"q{i}"] = f"What is the pass key of {name}?"
        qrels[f"q{i}"] = {f"d{i}": 1}
    return RetrievalData(corpus=corpus, queries=queries, qrels=qrels)


def needle_data(length: int, n_docs: int = 50, seed: int = 0, tokenizer: Any = None) -> RetrievalData:
    rng = random.Random(f"needle-{seed}-{length}")
    count = _Counter(tokenizer)
    corpus, queries, qrels = {}, {}, {}
    for i, place in enumerate(_places(n_docs, rng)):
        needle = f"The best thing to do in {place} is {rng.choice(_ACTIVITIES)}."
        doc_rng = random.Random(rng.random())
        hay = [_haystack_sentence(doc_rng) for _ in range(length)]  # more than enough sentences
        corpus[f"d{i}"] = {"title": "", "text": _compose(needle, hay.__getitem__, length, count, rng)}
        queries[f"q{i}"] = f"What is the best thing to do in {place}?"
        qrels[f"q{i}"] = {f"d{i}": 1}
    return RetrievalData(corpus=corpus, queries=queries, qrels=qrels)


def synthetic_data(
    kind: str, lengths: Sequence[int], n_docs: int = 50, seed: int = 0, tokenizer: Any = None
) -> dict[str, RetrievalData]:
    """{"len_<n>": data} for each length."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic task {kind!r}; choose one of {KINDS}")
    if not lengths:
        raise ValueError("need at least one length")
    make = passkey_data if kind == "passkey" else needle_data
    return {f"len_{n}": make(int(n), n_docs=n_docs, seed=seed, tokenizer=tokenizer) for n in sorted(set(lengths))}


def synthetic_task(
    kind: str,
    lengths: Sequence[int] = (64, 128, 256, 512),
    n_docs: int = 50,
    seed: int = 0,
    tokenizer: Any = None,
    name: str | None = None,
):
    """An mteb retrieval task with one subset per length; evaluate with max_seq_length >= max(lengths)."""
    from .tasks import task_from_data

    data = synthetic_data(kind, lengths, n_docs=n_docs, seed=seed, tokenizer=tokenizer)
    task = task_from_data(
        data,
        name or f"Synthetic{kind.capitalize()}",
        split="test",
        main_score="ndcg_at_1",
        k_values=(1, 3, 5, 10),
        revision=f"synthetic-{kind}-seed{seed}-n{n_docs}",
        description=f"LongEmbed-style {kind} retrieval generated locally (seed={seed}, {n_docs} documents per length)",
    )
    task.max_length = max(lengths)  # what the model must read for the needle to be visible everywhere
    return task
