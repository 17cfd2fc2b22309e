"""Typed schemas for every Hydra config group, so a misspelled key or a wrong type fails before work starts.

The YAML files in ``conf/`` fill these in; the schemas are registered in Hydra's ConfigStore under
``ropebench_schema`` (top level) and ``pe/<name>_schema`` (one per registered encoding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from ropebench.core.layers import TRAINED_LOGIT_SCALES
from ropebench.errors import UserError, choose


class Choice(str, Enum):
    """A config value from a fixed set: Hydra refuses anything else at composition, listing the allowed values."""

    def __str__(self) -> str:
        return self.value


Attention = Choice("Attention", {n: n for n in ("auto", "sdpa", "flex")})
Dtype = Choice("Dtype", {n: n for n in ("auto", "float32", "bfloat16", "float16")})
# hub: run configs written before data=hf (WikiText from the Hub); read as data=hf with WikiText articles.
DataSource = Choice("DataSource", {n: n for n in ("stdlib", "text_files", "hf", "hub", "passkey")})
Documents = Choice("Documents", {n: n for n in ("rows", "wikitext_articles")})
WandbMode = Choice("WandbMode", {n: n for n in ("disabled", "offline", "online")})
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
    # hf: any Hugging Face `datasets` source (path); passkey: the synthetic retrieval task.
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
    # and its extensions) are scored on the same tokens at the same lengths.
    lengths: list[int] = field(default_factory=list)
    region_len: int = 0
    # Also measure passkey retrieval after training (data=passkey runs always do), with these cells.
    passkey: bool = False
    passkey_trials: int = 16
    passkey_depths: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])


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


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    # A sweep job whose overrides are all shared would get an empty sub-directory name (the sweep dir itself).
    if not OmegaConf.has_resolver("ropebench_subdir"):
        OmegaConf.register_new_resolver("ropebench_subdir", lambda name: name or "run")
    if not OmegaConf.has_resolver("ropebench_core_encodings"):
        OmegaConf.register_new_resolver("ropebench_core_encodings", _core_encodings)
    if not OmegaConf.has_resolver("ropebench_local_jobs"):
        OmegaConf.register_new_resolver("ropebench_local_jobs", local_jobs)
        OmegaConf.register_new_resolver("ropebench_job_threads", lambda: 1 if local_jobs() > 1 else 0)


def local_jobs() -> int:
    """How many sweep jobs `launcher=auto` runs side by side: ROPEBENCH_LOCAL_JOBS if set, else one per CPU core
    this process may use, or one when a GPU is there (jobs would share it)."""
    import os

    import torch

    if os.environ.get("ROPEBENCH_LOCAL_JOBS", "").strip():
        try:
            return max(1, int(os.environ["ROPEBENCH_LOCAL_JOBS"]))
        except ValueError:
            raise UserError(f"ROPEBENCH_LOCAL_JOBS must be a positive integer, got "
                            f"'{os.environ['ROPEBENCH_LOCAL_JOBS']}'") from None
    if torch.cuda.is_available():
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _core_encodings() -> str:
    from ropebench.core.pe import CORE_ENCODINGS

    return ",".join(CORE_ENCODINGS)


_register_resolvers()


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


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _unresolved(cfg, key: str):
    """A top-level value without resolving it: a sweep's ``${hydra:sweep.dir}`` cannot resolve outside a job."""
    node = cfg._get_node(key) if OmegaConf.is_config(cfg) else None
    return node._value() if node is not None else None


def _check_scaling(cfg) -> None:
    """pe.scaling (RoPE scaling while training) is checked before the run starts, in one line."""
    scaling = OmegaConf.select(cfg, "pe.scaling", default=None)
    if scaling is None or str(scaling.get("type", "none")) in ("none", "default"):
        return
    from ropebench.core.pe.rope import trained_scaling

    _check(scaling.get("factor") is not None or str(scaling.type) == "dynamic",
           f"pe.scaling.type={scaling.type} needs pe.scaling.factor (new length / trained length, e.g. 4.0)")
    try:
        trained_scaling(cfg.pe)
    except UserError as exc:
        raise UserError(f"pe.scaling: {exc}") from None


def _check_pose(t) -> None:
    target, chunks = t.get("pose_target_len", 0), t.get("pose_chunks", 2)
    if not target:
        return
    _check(target >= t.seq_len, f"train.pose_target_len={target} must be >= train.seq_len={t.seq_len} "
                                "(PoSE stretches the positions of a short window to a longer target; 0: off)")
    _check(1 <= chunks <= t.seq_len, f"train.pose_chunks must be in [1, train.seq_len={t.seq_len}], got {chunks}")


def _check_methods(cfg) -> None:
    """The layer pattern, the trained logit scale and DroPE's drop point, before anything is built."""
    from ropebench.core.layers import check_logit_scale, layer_pattern

    names, _ = layer_pattern(cfg.model, str(cfg.pe.name))
    check_logit_scale(cfg.model, str(cfg.pe.name))
    drop_at = cfg.train.get("drop_rope_at")
    if drop_at is None:
        return
    _check(0 < drop_at < 1, f"train.drop_rope_at must be in (0, 1) (the fraction of the steps trained with RoPE), "
                            f"got {drop_at}")
    from ropebench.core.pe import registry

    _check(any(registry()[name].cls.kind == "qk" for name in names),
           f"train.drop_rope_at drops the rotary encoding of every layer; pe={cfg.pe.name} with model.layers="
           f"[{','.join(dict.fromkeys(names))}] has none (use pe=rope)")


def _check_data(d) -> None:
    """The data node's checks. A run config saved before data=hf lacks its keys: they read as their defaults."""
    own_split = d.source == "hub" or (d.source == "hf" and d.get("val_split", ""))
    if not own_split:
        _check(0 < d.val_fraction < 1, f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    _check(d.source != "text_files" or len(d.paths) > 0, "data=text_files needs data.paths=[DIR_OR_FILE,...]")
    _check(d.source != "hf" or bool(d.get("path", "")),
           "data=hf needs data.path=HUB_NAME_OR_LOCAL_PATH (a Hub data set, a directory, or parquet/json/arrow/csv/txt "
           "files)")
    _check(d.get("min_doc_tokens", 0) >= 0, f"data.min_doc_tokens must be >= 0, got {d.get('min_doc_tokens')}")
    tokenizer = str(d.get("tokenizer", "bytes")).strip()
    _check(bool(tokenizer), "data.tokenizer is empty; use bytes, a tokenizer directory or a Hugging Face Hub name")
    _check(d.source != "passkey" or tokenizer == "bytes",
           f"data=passkey is byte-level; it takes no data.tokenizer (got {tokenizer}; use data.tokenizer=bytes)")
    if d.get("documents") is not None:
        choose("data.documents", str(d.documents), [c.value for c in Documents])


def validate_config(cfg) -> None:
    """Range checks Hydra's types cannot express, run before anything is created or computed."""
    m, t, e, d = cfg.model, cfg.train, cfg.eval, cfg.data
    for key in ("n_layer", "n_head", "n_embd"):
        _check(m[key] > 0, f"model.{key} must be a positive integer, got {m[key]}")
    _check(m.n_embd % m.n_head == 0, f"model.n_head={m.n_head} must divide model.n_embd={m.n_embd}")
    _check(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    for key in ("seq_len", "batch_size", "log_interval", "eval_interval", "ckpt_interval", "eval_batches"):
        _check(t[key] > 0, f"train.{key} must be a positive integer, got {t[key]}")
    # 0 steps is the step-0 point of a fine-tuning curve: the source run's weights, saved as a run of its own.
    _check(t.steps > 0 or (t.steps == 0 and _unresolved(cfg, "init_from")),
           f"train.steps must be a positive integer (0 only with init_from=RUN), got {t.steps}")
    _check_pose(t)
    _check_scaling(cfg)
    _check_methods(cfg)
    _check(t.lr > 0, f"train.lr must be positive, got {t.lr}")
    _check(0 <= t.min_lr <= t.lr, f"train.min_lr must be in [0, train.lr={t.lr}], got {t.min_lr}")
    _check(t.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    _check(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    _check(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, f"train.beta1/beta2 must be in [0, 1), got {t.beta1}, {t.beta2}")
    _check(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 turns clipping off), got {t.grad_clip}")
    _check(t.threads >= 0, f"train.threads must be >= 0 (0: torch's default), got {t.threads}")
    _check(e.max_tokens >= 0, f"eval.max_tokens must be >= 0 (0: every token), got {e.max_tokens}")
    _check(e.region_multiple >= 1, f"eval.region_multiple must be >= 1, got {e.region_multiple}")
    _check(e.get("region_len", 0) >= 0, f"eval.region_len must be >= 0 (0: region_multiple), got {e.get('region_len')}")
    _check(all(int(x) > 0 for x in e.get("lengths", [])),
           f"eval.lengths must be positive integers, got {list(e.get('lengths', []))}")
    _check(len(e.multiples) > 0 and all(x > 0 for x in e.multiples),
           f"eval.multiples must be positive numbers, got {list(e.multiples)}")
    _check_data(d)
    # Hydra checks these at composition; a continued run's saved config (plain YAML) is checked here.
    for key, kind in (("model.attention", Attention), ("train.dtype", Dtype), ("data.source", DataSource),
                      ("logger.wandb.mode", WandbMode), ("model.logit_scale", LogitScale)):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            choose(key, str(value), [c.value for c in kind])
