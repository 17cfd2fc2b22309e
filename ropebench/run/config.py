"""Typed schemas for every Hydra config group, so a misspelled key or a wrong type fails before work starts (the
range checks the types cannot express: ropebench.run.validate).

The YAML files in ``conf/`` fill these in; the schemas are registered in Hydra's ConfigStore under
``ropebench_schema`` (top level) and ``pe/<name>_schema`` (one per registered encoding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from ropebench.core.layers import TRAINED_LOGIT_SCALES
from ropebench.run.resolvers import register_resolvers


class Choice(str, Enum):
    """A config value from a fixed set: Hydra refuses anything else at composition, listing the allowed values."""

    def __str__(self) -> str:
        return self.value


Attention = Choice("Attention", {n: n for n in ("auto", "sdpa", "flex")})
Dtype = Choice("Dtype", {n: n for n in ("auto", "float32", "bfloat16", "float16")})
# hub: run configs written before data=hf (WikiText from the Hub); read as data=hf with WikiText articles.
DataSource = Choice("DataSource", {n: n for n in ("stdlib", "text_files", "hf", "hub", "passkey", "task")})
Documents = Choice("Documents", {n: n for n in ("rows", "wikitext_articles")})
WandbMode = Choice("WandbMode", {n: n for n in ("disabled", "offline", "online")})
EvalSplit = Choice("EvalSplit", {n: n for n in ("test", "val")})
LogitScale = Choice("LogitScale", {n: n for n in TRAINED_LOGIT_SCALES})


@dataclass
class ModelConfig:
    name: str = "tiny"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    # Attention kernel: sdpa (everywhere), flex (FlexAttention score_mod for bias encodings, CUDA), or auto.
    attention: Attention = Attention.auto
    # Encoding per layer, a pattern repeated over the depth (e.g. [rope,rope,rope,nope]); empty: pe everywhere.
    layers: list[str] = field(default_factory=list)
    # Sliding-window width per entry of the pattern (null: full causal attention); empty: none windowed.
    windows: list[int | None] = field(default_factory=list)
    # Attention temperature trained with the model: none, ssmax (Scalable-Softmax), llama4 (on NoPE layers).
    logit_scale: LogitScale = LogitScale.none


@dataclass
class DataConfig:
    name: str = "stdlib"
    # stdlib: the Python standard library's own source files; text_files: the user's files (paths);
    # hf: any Hugging Face `datasets` source (path); passkey: the synthetic retrieval task; task: an algorithmic
    # task (ropebench.data.tasks).
    source: DataSource = DataSource.stdlib
    paths: list[str] = field(default_factory=list)
    # data=hf: a Hub data set name (needs network), a directory, or parquet/json/jsonl/arrow/csv/txt files (a glob).
    path: str = ""
    # The data set's configuration (load_dataset's `name`; `data.name` is the preset's own name, as in every group).
    subset: str = ""
    split: str = "train"
    # A split used whole for validation (e.g. `validation`); empty: `split` is divided by document (val_fraction).
    val_split: str = ""
    text_field: str = "text"
    # rows: one row is one document; wikitext_articles: rows are lines, articles rebuilt at WikiText headings.
    documents: Documents = Documents.rows
    # Documents with fewer tokens are dropped (0 keeps all).
    min_doc_tokens: int = 0
    # bytes (UTF-8 bytes + an end-of-document token), or a tokenizer directory / Hub name (the [hf] extra).
    tokenizer: str = "bytes"
    # Let a tokenizer that ships its own Python code (auto_map) run it; only for a source you trust.
    trust_remote_code: bool = False
    val_fraction: float = 0.1
    # Held-out test documents, drawn like validation (near-duplicates on one side): learning rates and other
    # choices are made on validation, results are reported on test. A run recorded before the test split
    # existed has no such key and reads as 0 (no test split: its training data holds those documents).
    test_fraction: float = 0.1
    # A split of the data set used whole as the test set (e.g. `test`); empty: drawn by test_fraction.
    test_split: str = ""
    # data=task: the task (copy, reverse, sort, addition, parity, mqar) and L, the longest training instance
    # (training lengths are U(1, L); 0: the task's default).
    task: str = ""
    task_len: int = 0
    # Where tokenized, memory-mapped copies are cached (keyed by a fingerprint of the inputs).
    cache_dir: str = "${oc.env:ROPEBENCH_CACHE,'~/.cache/ropebench'}"


@dataclass
class TrainConfig:
    seq_len: int = 64
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    log_interval: int = 25
    eval_interval: int = 250
    eval_batches: int = 8
    ckpt_interval: int = 250
    device: str = "auto"
    # auto: bf16 autocast on CUDA, fp32 on CPU.
    dtype: Dtype = Dtype.auto
    compile: bool = False
    threads: int = 0
    # Peak FLOP/s (in TFLOP/s) for the MFU column; 0 = known GPUs' dense bf16 peak, none elsewhere.
    peak_tflops: float = 0.0
    # PoSE (Zhu et al. 2023, arXiv 2309.10400): train on seq_len tokens whose position ids skip so that relative
    # distances cover this target length (0: off); the window is cut into pose_chunks contiguous chunks.
    pose_target_len: int = 0
    pose_chunks: int = 2
    # Randomized positions (Ruoss et al. 2023, arXiv 2305.16843): each training example's position ids are
    # seq_len sorted positions drawn without replacement from [0, N) (0: off); evaluation uses 0, 1, 2, ...
    random_positions: int = 0
    # DroPE (Gelberg et al. 2025): train with RoPE, then without it in every layer from this fraction of the
    # steps on (e.g. 0.88); null: off. Evaluation then scales the logits by 1 + c ln(s), c fitted after training.
    drop_rope_at: float | None = None


@dataclass
class EvalConfig:
    # Evaluate at these multiples of the training length after training (empty: skip).
    after_train: bool = False
    multiples: list[float] = field(default_factory=lambda: [1, 1.25, 1.5, 2, 4, 8, 16])
    # Tokens scored per length (0: every token of every long-enough validation document).
    max_tokens: int = 65536
    # Each document contributes its first region_multiple x train.seq_len tokens at every length up to that,
    # so those lengths score the same text (see ropebench/eval/perplexity.py).
    region_multiple: float = 16
    # Absolute alternatives: evaluate at these lengths instead of the multiples, and score regions of this many
    # tokens instead of region_multiple x train.seq_len (0) -- so runs trained at different lengths (a base run
    # and its extensions) are scored on the same tokens at the same lengths. -1: each document whole, every one
    # longer than the length (lengths then score different text; `eval-length MODEL --data FILES` uses it).
    lengths: list[int] = field(default_factory=list)
    region_len: int = 0
    # Also measure passkey retrieval after training (data=passkey runs always do), with these cells.
    passkey: bool = False
    passkey_trials: int = 16
    passkey_depths: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    # Which held-out documents evaluation scores: test (reported results) or val (choosing settings).
    split: EvalSplit = EvalSplit.test
    # Beside each length longer than the training length, score the same tokens with each token's context cut
    # to (about) the training length: ppl_crop and nll_gain (see ropebench/eval/crop.py).
    crop: bool = True
    # Stride of the cropped windows (0: training length / 16, so every cropped context is within 1/16 of it).
    crop_stride: int = 0
    # The crop scores one chunk of crop_stride targets in this many past the training length (1: every target),
    # which keeps its cost within about 4x the plain evaluation's (see ropebench/eval/crop.py).
    crop_sample: int = 4
    # Also measure the retrieval probes after training (`ropebench probe`'s defaults; not for data=passkey).
    probes: bool = False


@dataclass
class WandbConfig:
    mode: WandbMode = WandbMode.disabled
    project: str = "ropebench"
    entity: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    pe: Any = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    # A run directory to continue from (its checkpoint and config).
    resume: str = ""
    # A finished run whose weights a new run starts from (fine-tuned context extension), and that run's training
    # length (filled in when the run starts: the record says where the weights came from).
    init_from: str = ""
    init_from_seq_len: int = 0
    # Set by sweep configs; names the sweep in the run's metadata.
    sweep_name: str = ""
    # A sweep's peak learning rate per encoding (e.g. each at its best, chosen on validation), read through
    # `train.lr: ${oc.select:lr_by_encoding.${pe.name},${lr_by_encoding.default}}`; the run records train.lr.
    lr_by_encoding: dict[str, float] = field(default_factory=dict)
    # The run's name in tables and figures instead of its encoding's (conf/method/ sets it); empty: pe.name.
    label: str = ""


def flatten_config(node, prefix: str = "") -> dict[str, object]:
    """A nested config (plain containers) as ``{"model.n_embd": 128, ...}``; an empty section stays a key with
    value ``{}`` so that adding or removing one shows as a difference."""
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


# The ${ropebench_...:} interpolations the YAML files use, registered before any config is composed.
register_resolvers()


def conf_dir() -> Path:
    """The Hydra config directory: inside an installed wheel, else the repository's top-level conf/."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"ropebench's conf/ directory was not found next to {package}")


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from ropebench.core.pe import registry

    cs = ConfigStore.instance()
    cs.store(name="ropebench_schema", node=Config)
    for name, entry in registry().items():
        cs.store(group="pe", name=f"{name}_schema", node=entry.config_cls)


def encoding_length(t) -> int:
    """The training length an encoding is built for: the positions training reaches -- train.seq_len, or N with
    randomized positions, or PoSE's target length (a learned table then has that many rows; T5's and FIRE's
    default ranges cover it)."""
    return max(int(t.seq_len), int(t.get("random_positions", 0) or 0), int(t.get("pose_target_len", 0) or 0))

