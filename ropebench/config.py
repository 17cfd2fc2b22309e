"""Typed schemas for every Hydra config group, so a misspelled key or a wrong type fails before work starts.

The YAML files in ``conf/`` fill these in; the schemas are registered in Hydra's ConfigStore under
``ropebench_schema`` (top level) and ``pe/<name>_schema`` (one per registered encoding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = "tiny"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    # Attention kernel: sdpa (everywhere), flex (FlexAttention score_mod for bias encodings, CUDA), or auto.
    attention: str = "auto"


@dataclass
class DataConfig:
    name: str = "stdlib"
    # stdlib: the Python standard library's own source files; text_files: the user's files (paths);
    # hub: a Hugging Face Hub data set (needs network once); passkey: the synthetic retrieval task.
    source: str = "stdlib"
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
    dtype: str = "auto"
    compile: bool = False
    threads: int = 0
    # Peak FLOP/s (in TFLOP/s) for the MFU column; 0 = known GPUs' dense bf16 peak, none elsewhere.
    peak_tflops: float = 0.0


@dataclass
class EvalConfig:
    # Evaluate at these multiples of the training length after training (empty: skip).
    after_train: bool = False
    multiples: list[float] = field(default_factory=lambda: [1, 1.25, 1.5, 2, 4, 8, 16])
    protocol: str = "nonoverlapping"
    stride: int = 0
    # Tokens scored per length (0: every token of every long-enough validation document).
    max_tokens: int = 65536
    # Each document contributes its first region_multiple x train.seq_len tokens at every length up to that,
    # so those lengths score the same text (see ropebench/evaluate.py).
    region_multiple: float = 16
    batch_size: int = 8


@dataclass
class WandbConfig:
    mode: str = "disabled"
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


_register_resolvers()


def conf_dir() -> Path:
    """The Hydra config directory: inside an installed wheel, else the repository's top-level conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"ropebench's conf/ directory was not found next to {here}")


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from ropebench.pe import registry

    cs = ConfigStore.instance()
    cs.store(name="ropebench_schema", node=Config)
    for name, entry in registry().items():
        cs.store(group="pe", name=f"{name}_schema", node=entry.config_cls)
