"""Checkpoints and the resume contract.

A checkpoint holds what makes a continued run equal an uninterrupted one: weights, optimizer state, the data
generator's state, torch's RNG state, the step, and the config it was trained with. It is written atomically
(a crash mid-write keeps the previous one) and never when the loss has gone non-finite (a NaN never replaces
the last good state); it is loaded with ``weights_only=True``, so loading never executes code from the file.

What may change when a run continues: only keys that do not change what the model learns up to the checkpoint
(``RESUMABLE``). Anything else is refused, naming each key with its old and new value.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from ropebench.errors import UserError
from ropebench.run.config import flatten_config
from ropebench.run.rundir import CHECKPOINT, atomic_write

# Keys a continued run may change: how long it trains, how often it logs, evaluates and saves, where it runs,
# what is evaluated afterwards, and permissions (remote code). Everything else is part of the experiment.
RESUMABLE = ("train.steps", "train.log_interval", "train.eval_interval", "train.ckpt_interval", "train.eval_batches",
             "train.device", "train.threads", "train.compile", "train.peak_tflops", "eval", "logger", "resume",
             "sweep_name", "data.cache_dir", "data.trust_remote_code", "lr_by_encoding")


# Keys added after runs were recorded, with the value that means "as before": a saved config without the key
# and a new config holding that value describe the same experiment (an old sweep directory can be relaunched).
# Keys since removed are listed the same way: an old config holding the value that meant "not used" is the same.
ADDED_DEFAULTS = {"init_from": "", "init_from_seq_len": 0, "train.pose_target_len": 0, "train.pose_chunks": 2,
                  "pe.extend": "none", "pe.scaling.type": "none", "data.tokenizer": "bytes", "data.path": "",
                  "data.subset": "", "data.split": "train", "data.val_split": "", "data.text_field": "text",
                  "data.documents": "rows", "data.min_doc_tokens": 0, "data.trust_remote_code": False,
                  "data.hub_path": "", "data.hub_name": "", "data.text_column": "text", "pe.lr_mult": 1.0,
                  "pe.weight_decay": None, "data.test_fraction": 0.0, "data.test_split": "", "lr_by_encoding": {},
                  "eval.probes": False, "data.task": "", "data.task_len": 0, "train.random_positions": 0}


def _added_default(key: str, value) -> bool:
    if key in ADDED_DEFAULTS:
        return value == ADDED_DEFAULTS[key]
    return key.startswith("pe.scaling.") and value is None  # the scaling's parameters, unset


def _is_resumable(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE)


def _in_renamed_group(key: str, old: dict, new: dict) -> bool:
    """Whether ``key`` lies in a config group whose choice differs (``pe.name: rope → alibi``): a key only one
    of the two encodings (models, data sources) has is then implied by that one line."""
    parts = key.split(".")
    for depth in range(1, len(parts)):
        name = ".".join(parts[:depth]) + ".name"
        if name != key and name in old and name in new and old[name] != new[name]:
            return True
    return False


def config_changes(saved, current, ignore_resumable: bool = True) -> list[str]:
    """``key: old -> new`` for every key that differs between two configs (containers or DictConfigs); a key
    present in one config only because a group's choice differs is left to that group's ``name`` line."""
    def plain(c):
        return OmegaConf.to_container(c, resolve=True) if OmegaConf.is_config(c) else c

    old, new = flatten_config(plain(saved)), flatten_config(plain(current))
    changes = []
    for key in sorted(set(old) | set(new)):
        if ignore_resumable and _is_resumable(key):
            continue
        if key not in old and _added_default(key, new[key]) or key not in new and _added_default(key, old[key]):
            continue
        if (key not in old or key not in new) and _in_renamed_group(key, old, new):
            continue
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            changes.append(f"{key}: {old.get(key, '<unset>')} → {new.get(key, '<unset>')}")
    return changes


def save(run_dir: Path, state: dict) -> None:
    atomic_write(Path(run_dir) / CHECKPOINT, lambda f: torch.save(state, f))


def load(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint '{path}' is corrupt or unreadable ({type(exc).__name__})") from None


def _unchanged(cfg, key: str, value) -> bool:
    """Whether ``key=value`` asks for what the saved config already has (a group choice names its ``name``)."""
    current = OmegaConf.select(cfg, key, default=None)
    if OmegaConf.is_dict(current):
        return current.get("name") == value
    if OmegaConf.is_list(current):
        current = OmegaConf.to_container(current)
    if isinstance(current, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(current) == float(value)
    return current == value


def _same_type(key: str, current, value):
    """``value`` as the type the saved config holds at ``key`` (the saved config is untyped YAML, so nothing else
    would stop ``train.steps=abc``): an integer stays an integer, a number a number, a flag a flag."""
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, int):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
        value = int(value) if ok else value
    elif isinstance(current, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        return value
    if not ok:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[type(current)]
        raise UserError(f"{key}={value} must be {kind}, like the run's saved value {current}")
    return value


def continued_config(saved, overrides: list[tuple[str, object]]):
    """The config a continued run uses: the run's own saved config with only resumable keys changed.

    ``overrides`` are (key, value) pairs already parsed (by Hydra's override parser in the CLI). Repeating a
    saved value is fine (so the original command plus ``resume=`` works); changing a key outside ``RESUMABLE``
    is refused, naming it with its saved and requested values. Launcher and Hydra settings do not apply."""
    cfg = OmegaConf.create(OmegaConf.to_container(saved, resolve=True))
    refused = []
    for key, value in overrides:
        if key == "launcher" or key.startswith("hydra.") or _unchanged(cfg, key, value):
            continue
        current = OmegaConf.select(cfg, key, default="<unset>")
        if not _is_resumable(key):
            # A config group (pe=alibi) is named by its choice, not printed whole.
            refused.append(f"{key}: {current.get('name', '…') if OmegaConf.is_dict(current) else current} → {value}")
            continue
        OmegaConf.update(cfg, key, _same_type(key, current, value), merge=True)
    if refused:
        allowed = ", ".join(k for k in RESUMABLE if k not in ("resume", "sweep_name"))
        raise UserError(f"a continued run keeps its experiment; cannot change {'; '.join(refused)} "
                        f"(only {allowed} may change)")
    return cfg
