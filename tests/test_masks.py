"""The mask a patched model really uses (read back from eager attention probabilities) against a brute-force,
token-by-token reference of the rules written from the issue, independent of the library's group code."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import model_inputs, pairs_batch, tiny

from hf_sparse_tempscale import PATTERNS, patch_model
from hf_sparse_tempscale.masks import window_mask

MARKER = ["document", ":"]


def reference(tokens, real, *, has_cls, sep, marker, flags, window):
    """allowed[i][j] for real query rows i, by the rules of issue #2, from token strings."""
    pos = [i for i, r in enumerate(real) if r]
    group = {}
    rest = pos
    if has_cls:
        group[pos[0]] = "cls"
        rest = pos[1:]
    split = None
    if marker:
        starts = [p for k, p in enumerate(rest) if [tokens[q] for q in rest[k : k + len(marker)]] == marker]
        if starts:
            split = rest.index(starts[0])  # marker starts the document
    elif sep:
        seps = [k for k, p in enumerate(rest) if tokens[p] == sep]
        if len(seps) >= 2:
            split = seps[0] + 1  # the first separator ends the query
    for k, p in enumerate(rest):
        group[p] = "query" if split is not None and k < split else "doc"
    allowed = {}
    for i in pos:
        for j in range(len(tokens)):
            if not real[j]:
                ok = False
            elif group[i] == group[j]:
                ok = group[i] != "doc" or window is None or abs(i - j) <= window
            else:
                ok = flags[f"{group[i]}_{group[j]}"]
            allowed[i, j] = ok
    return allowed


CASES = {
    # name: (kind, drop token_type_ids, has_cls, separator string, marker)
    "bert-token-types": ("bert", False, True, "[SEP]", None),
    "bert-sep": ("bert", True, True, "[SEP]", None),
    "roberta": ("roberta", True, True, "</s>", None),
    "distilbert": ("distilbert", True, True, "[SEP]", None),
    "t5-marker": ("t5-encoder", True, False, None, MARKER),
}
FLAG_SETS = list(PATTERNS.items()) + [
    ("doc_only_cls", dict(PATTERNS["full"], doc_query=False, cls_query=False)),
    ("query_sees_doc", dict(PATTERNS["independent_query"], query_doc=True)),
]


def _batch(kind, tok, padding_side, seed):
    if kind.startswith("t5"):
        base = pairs_batch(tok, padding_side, seed=seed)
        texts = []
        for ids, am in zip(base["input_ids"], base["attention_mask"]):
            words = [t for t, a in zip(tok.convert_ids_to_tokens(ids), am) if a and t not in ("</s>", "<pad>")]
            texts.append(f"query : {' '.join(words[:2])} document : {' '.join(words[2:])} relevant :")
        texts[-1] = "w1 w2 w3 w4"  # no marker: a single text
        tok.padding_side = padding_side
        return tok(texts, padding=True, return_tensors="pt")
    enc = pairs_batch(tok, padding_side, seed=seed)
    single = pairs_batch(tok, padding_side, seed=seed + 1, pair=False, n=1)
    # a single text inside a batch of pairs (one separator only)
    width = enc["input_ids"].shape[1]
    if single["input_ids"].shape[1] <= width:
        row = {k: v[0] for k, v in single.items()}
        pad = width - row["input_ids"].shape[0]
        for k in enc:
            fill = tok.pad_token_id if k == "input_ids" else 0
            filler = torch.full((pad,), fill, dtype=enc[k].dtype)
            enc[k][-1] = torch.cat([row[k], filler]) if padding_side == "right" else torch.cat([filler, row[k]])
    return enc


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_model_mask_matches_brute_force(case, padding_side):
    kind, drop_tt, has_cls, sep, marker = CASES[case]
    model, tok = tiny(kind, attn="eager")
    enc = _batch(kind, tok, padding_side, seed=3)
    if drop_tt:
        enc.pop("token_type_ids", None)
    tokens = [tok.convert_ids_to_tokens(ids) for ids in enc["input_ids"]]
    real = enc["attention_mask"].bool().tolist()
    segments = {"marker": " ".join(marker)} if marker else {}
    checked = 0
    for (name, flags), window in itertools.product(FLAG_SETS, [None, *range(9)]):
        overrides = dict(flags) if name not in PATTERNS else {}
        patch_model(model, backend="eager", pattern=name if name in PATTERNS else "full", window=window,
                    segments=segments, tokenizer=tok, **overrides)
        with torch.no_grad():
            probs = model(**model_inputs(model, enc), output_attentions=True).attentions
        for layer in probs:
            got = (layer > 0).all(dim=1)  # every head must agree
            for b in range(len(tokens)):
                ref = reference(tokens[b], real[b], has_cls=has_cls, sep=sep, marker=marker, flags=flags, window=window)
                expected = torch.zeros_like(got[b])
                rows = sorted({i for i, _ in ref})
                for (i, j), ok in ref.items():
                    expected[i, j] = ok
                assert torch.equal(got[b][rows], expected[rows]), (case, name, window, b)
                checked += 1
    assert checked == len(FLAG_SETS) * 10 * 2 * len(tokens)


def test_window_mask_is_a_band():
    for n, w in [(1, 0), (7, 0), (7, 2), (9, 8), (5, 20)]:
        expected = torch.tensor([[abs(i - j) <= w for j in range(n)] for i in range(n)])
        assert torch.equal(window_mask(n, w), expected)


def test_no_nan_when_query_rows_see_only_themselves():
    model, tok = tiny("bert")
    enc = pairs_batch(tok, "left")
    patch_model(model, pattern="cls_interaction", window=0, cls_query=False, cls_doc=False)
    out = model(**model_inputs(model, enc)).last_hidden_state
    assert torch.isfinite(out).all()
