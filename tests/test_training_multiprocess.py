"""A recipe under `accelerate launch` with 2 CPU processes: both ranks train in DDP and end bit-identical.

accelerate 1.15's `accelerate launch --num_processes 2 --cpu` starts a single process (its multi-CPU path needs an MPI
hostfile), so the test launches through recipes/accelerate/cpu_ddp_2proc.yaml (torchrun launcher + use_cpu), and
checks that the processes really split the data (half the optimizer steps) rather than training side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hf_sparse_tempscale import load_cross_encoder
from hf_sparse_tempscale.training.callbacks import parameter_digest
from training_fixtures import tiny_checkpoint, tiny_data_root

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_cross_encoder_recipe_stays_in_sync(tmp_path):
    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate launcher is not on PATH")
    data = tiny_data_root(tmp_path / "data")
    model = tiny_checkpoint(tmp_path / "model")
    out = tmp_path / "out"
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump(dict(
        model=model, data_root=str(data), output_dir=str(out), epochs=1, batch_size=4, logging_steps=1, save_steps=2,
        probe_size=6, max_length=64, threads=1, report_to=["none"], eval_batch_size=8,
        patch={"window": 2, "pattern": "independent_query"}, temperature_schedule={"start": 1.0, "end": 0.8},
    )))
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [accelerate, "launch", "--config_file", str(REPO / "recipes" / "accelerate" / "cpu_ddp_2proc.yaml"),
           "--dynamo_backend", "no", "-m", "hf_sparse_tempscale.cli", "train-cross-encoder", "--config", str(cfg)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    records = [json.loads((out / "rank_sync" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in records] == [0, 1] and {r["world_size"] for r in records} == {2}
    # 30 training pairs, 4 per process and step: the two processes split the data -> 30 // 8 = 3 steps
    # (DDP drops the uneven last batch); one process alone would take 8
    assert {r["step"] for r in records} == {3}
    assert records[0]["digest"] == records[1]["digest"]

    # the model rank 0 saved is the one both ranks hold (same weights and patch settings), and training changed it
    final = load_cross_encoder(str(out / "final"))
    assert parameter_digest(final) == records[0]["digest"]
    from sentence_transformers.cross_encoder import CrossEncoder

    from hf_sparse_tempscale import patch_model

    initial = patch_model(CrossEncoder(model, num_labels=1), window=2, pattern="independent_query", temperature=0.8)
    assert parameter_digest(initial) != records[0]["digest"]
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 3 and 0.0 <= results["dl19_ndcg@10"] <= 1.0
