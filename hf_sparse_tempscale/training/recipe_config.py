"""Recipe settings: one dataclass per recipe, read from a YAML/JSON file and/or command-line options."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class RecipeConfig:
    """Settings shared by both recipes (the defaults are the CPU-sized runs reported in the README)."""

    model: str = "minilm"  # "minilm" = the packaged all-MiniLM-L6-v2; else a local folder or a hub id
    output_dir: str = "outputs/recipe"
    data_root: str | None = None  # default: $HF_SPARSE_TEMPSCALE_DATA or <repo>/../shared/data
    patch: dict[str, Any] | None = None  # patch_model settings; None trains the stock model
    max_length: int = 256
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1  # fraction of the optimizer steps with a linear learning-rate warmup
    weight_decay: float = 0.01
    seed: int = 42
    train_limit: int | None = None  # use a seeded random subset of this many training rows (documented runs)
    holdout_queries: int = 3  # training-set queries held out for eval loss and the probe statistics
    holdout_limit: int | None = 256  # at most this many held-out rows (seeded subset), to keep evaluation cheap
    logging_steps: int = 10
    eval_steps: int | None = None  # evaluate on the held-out queries every n steps (None: once, at the end)
    save_steps: int = 100
    save_total_limit: int | None = 2
    resume: bool | str = False  # True: the last checkpoint in output_dir; or a checkpoint folder
    lora: dict[str, Any] | None = None  # peft LoraConfig fields ({} = defaults); merged into the final model
    temperature_schedule: dict[str, Any] | None = None  # TemperatureScheduleCallback kwargs (start, end, ...)
    window_curriculum: dict[str, Any] | None = None  # WindowCurriculumCallback kwargs; target = patch.window
    attention_stats: bool = True
    collapse_monitor: bool = True
    probe_size: int = 32  # probe items for the attention statistics / collapse monitor
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    threads: int | None = None  # torch.set_num_threads
    evaluate: bool = True  # final evaluation on the test sets
    eval_batch_size: int = 32
    push_to_hub: str | None = None  # repo id to upload the final model to
    hub_folder: str | None = None  # build the upload folder here (default: <output_dir>/hub when pushing)
    remote_code: bool = False  # add the auto_map shim to the hub folder
    hub_private: bool | None = None
    ddp_find_unused_parameters: bool | None = None
    use_cpu: bool | None = None  # None: CPU exactly when no CUDA / MPS / XPU device is present

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_size and gradient_accumulation_steps must be >= 1")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError("train_limit must be >= 1 or None")
        if self.holdout_queries < 0 or self.probe_size < 2:
            raise ValueError("holdout_queries must be >= 0 and probe_size >= 2")
        if self.window_curriculum is not None and (self.patch or {}).get("window") is None:
            raise ValueError("window_curriculum needs a target: set patch.window")
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecipeConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass
class CrossEncoderRecipe(RecipeConfig):
    """Reranker on the judged DL21 pairs/triples, evaluated by reranking the DL19 BM25 top-100."""

    output_dir: str = "outputs/cross-encoder"
    patch: dict[str, Any] | None = field(default_factory=lambda: {"window": 4, "pattern": "independent_query"})
    train_set: str = "dl21"  # the "set" field of msmarco-trecdl-judged-pairs; never the evaluation year
    train_source: str = "triples"  # triples -> (query, pos, 1) + (query, neg, 0); pairs -> graded labels
    label: str = "binary"  # pairs only: binary (grade >= 2) or graded (grade / 3)
    head_learning_rate: float | None = None  # learning rate of the fresh classification head (None: learning_rate)
    squad_questions: int = 0  # add this many SQuAD (question, paragraph, negative paragraph) triples
    squad_negative: str = "article"  # SQuAD negatives: "article" (same article, hard) or "random" (other article)
    loss: str = "bce"  # bce: BinaryCrossEntropyLoss on pairs; mnrl: MultipleNegativesRankingLoss on triples
    eval_candidates: str = "trec-dl-2019-passage/candidates/BM25_top100.jsonl"  # relative to data_root
    eval_qrels: str | None = "trec-dl-2019-passage/qrels/test.tsv"  # the complete official qrels

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_source not in ("triples", "pairs"):
            raise ValueError(f"train_source must be triples or pairs, got {self.train_source!r}")
        if self.label not in ("binary", "graded"):
            raise ValueError(f"label must be binary or graded, got {self.label!r}")
        if self.loss not in ("bce", "mnrl"):
            raise ValueError(f"loss must be bce or mnrl, got {self.loss!r}")
        if self.squad_negative not in ("article", "random"):
            raise ValueError(f"squad_negative must be article or random, got {self.squad_negative!r}")
        if self.squad_questions < 0:
            raise ValueError("squad_questions must be >= 0")
        if self.squad_questions and self.train_source != "triples":
            raise ValueError("squad_questions adds triples: use train_source=triples")
        if self.loss == "mnrl" and self.train_source != "triples":
            raise ValueError("loss=mnrl trains on triples (train_source=triples)")
        if self.train_set == "dl19" and "2019" in self.eval_candidates:
            raise ValueError("training and evaluating on the same TREC DL year leaks the test judgements")


@dataclass
class EmbeddingRecipe(RecipeConfig):
    """Bi-encoder with MultipleNegativesRankingLoss, evaluated on SciFact test (nDCG@10) and STS-B test."""

    output_dir: str = "outputs/embedding"
    patch: dict[str, Any] | None = field(default_factory=lambda: {"temperature": 0.9})
    batch_size: int = 32
    train_sources: list[str] = field(default_factory=lambda: ["squad"])  # squad and/or scifact (its train split)
    eval_retrieval: str | None = "scifact"  # a BEIR folder (relative to data_root); test split
    eval_sts: str | None = "stsbenchmark/test.jsonl"
    evaluate_base: bool = False  # also evaluate the starting model (unpatched) for reference

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.train_sources, str):
            self.train_sources = [self.train_sources]
        bad = [s for s in self.train_sources if s not in ("squad", "scifact")]
        if bad or not self.train_sources:
            raise ValueError(f"train_sources must be a non-empty subset of [squad, scifact], got {self.train_sources}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A recipe config file: YAML (.yaml/.yml) or JSON (.json), a mapping of recipe settings."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif p.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"{p}: a config file must be .yaml, .yml or .json")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of settings, got {type(data).__name__}")
    return data
