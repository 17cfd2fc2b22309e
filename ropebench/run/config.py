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

from ropebench.errors import UserError, choose


class Choice(str, Enum):
    """A config value from a fixed set: Hydra refuses anything else at composition, listing the allowed values."""

    def __str__(self) -> str:
        return self.value


Attention = Choice("Attention", {n: n for n in ("auto", "sdpa", "flex")})
Dtype = Choice("Dtype", {n: n for n in ("auto", "float32", "bfloat16", "float16")})
DataSource = Choice("DataSource", {n: n for n in ("stdlib", "text_files", "hub", "passkey")})
WandbMode = Choice("WandbMode", {n: n for n in ("disabled", "offline", "online")})


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


@dataclass
class DataConfig:
    name: str = "stdlib"
    # stdlib: the Python standard library's own source files; text_files: the user's files (paths);
    # hub: a Hugging Face Hub data set (needs network once); passkey: the synthetic retrieval task.
    source: DataSource = DataSource.stdlib
    paths: list[str] = field(default_factory=list)
    hub_path: str = ""
    hub_name: str = ""
    text_column: str = "text"
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
    # Set by sweep configs; names the sweep in the run's metadata.
    sweep_name: str = ""


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    # A sweep job whose overrides are all shared would get an empty sub-directory name (the sweep dir itself).
    if not OmegaConf.has_resolver("ropebench_subdir"):
        OmegaConf.register_new_resolver("ropebench_subdir", lambda name: name or "run")
    if not OmegaConf.has_resolver("ropebench_core_encodings"):
        OmegaConf.register_new_resolver("ropebench_core_encodings", _core_encodings)


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


def validate_config(cfg) -> None:
    """Range checks Hydra's types cannot express, run before anything is created or computed."""
    m, t, e, d = cfg.model, cfg.train, cfg.eval, cfg.data
    for key in ("n_layer", "n_head", "n_embd"):
        _check(m[key] > 0, f"model.{key} must be a positive integer, got {m[key]}")
    _check(m.n_embd % m.n_head == 0, f"model.n_head={m.n_head} must divide model.n_embd={m.n_embd}")
    _check(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    for key in ("seq_len", "steps", "batch_size", "log_interval", "eval_interval", "ckpt_interval", "eval_batches"):
        _check(t[key] > 0, f"train.{key} must be a positive integer, got {t[key]}")
    _check(t.lr > 0, f"train.lr must be positive, got {t.lr}")
    _check(0 <= t.min_lr <= t.lr, f"train.min_lr must be in [0, train.lr={t.lr}], got {t.min_lr}")
    _check(t.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    _check(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    _check(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, f"train.beta1/beta2 must be in [0, 1), got {t.beta1}, {t.beta2}")
    _check(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 turns clipping off), got {t.grad_clip}")
    _check(t.threads >= 0, f"train.threads must be >= 0 (0: torch's default), got {t.threads}")
    _check(e.max_tokens >= 0, f"eval.max_tokens must be >= 0 (0: every token), got {e.max_tokens}")
    _check(e.region_multiple >= 1, f"eval.region_multiple must be >= 1, got {e.region_multiple}")
    _check(len(e.multiples) > 0 and all(x > 0 for x in e.multiples),
           f"eval.multiples must be positive numbers, got {list(e.multiples)}")
    if d.source != "hub":
        _check(0 < d.val_fraction < 1, f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    _check(d.source != "text_files" or len(d.paths) > 0, "data=text_files needs data.paths=[DIR_OR_FILE,...]")
    # Hydra checks these at composition; a continued run's saved config (plain YAML) is checked here.
    for key, kind in (("model.attention", Attention), ("train.dtype", Dtype), ("data.source", DataSource),
                      ("logger.wandb.mode", WandbMode)):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            choose(key, str(value), [c.value for c in kind])
