"""Starting a run from a finished run's weights (``init_from=RUN``): fine-tuned context extension.

The new run is a run of its own (its own directory, config, optimizer and schedule); it only takes the source's
weights. It must be the same model with the same encoding -- only what extension changes may differ
(``EXTENSION_KEYS``: the RoPE scaling trained with, how a learned table grows, the RoPE kernel) -- and anything
else is refused naming each key. It reads the source's data, tokenized as the source was (the whole ``data``
node), unless the command line names data settings: those then replace the source's, the tokenizer still
the source's unless given too, and the start line names what differs. The record says where the weights came
from: ``init_from`` (resolved) and ``init_from_seq_len`` in the config, and the source's path, length and steps
in ``final.json``.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ropebench.errors import UserError
from ropebench.run.checkpoint import config_changes
from ropebench.run.rundir import WEIGHTS, RunDir

# Settings an extended run may choose differently from its source: how positions are stretched or grown, and
# the kernel that computes the same rotation.
EXTENSION_KEYS = ("pe.scaling", "pe.extend", "pe.backend")


def source_run(cfg) -> RunDir | None:
    """The finished run named by ``init_from``, or None; a missing or unfinished one is one clear line."""
    if not cfg.get("init_from"):
        return None
    path = Path(str(cfg.init_from)).expanduser()
    run = RunDir(path)
    if not run.has_config():
        raise UserError(f"init_from='{cfg.init_from}' is not a run directory (no config.yaml there)")
    if not run.is_finished():
        raise UserError(f"init_from='{cfg.init_from}' is an unfinished run (no final weights); finish it with "
                        f"`ropebench resume {path}` first")
    return run


def _differences(source_cfg, cfg) -> list[str]:
    wanted = {"model": cfg.model, "pe": cfg.pe}
    saved = {"model": source_cfg.model, "pe": source_cfg.pe}
    tokenizer = OmegaConf.select(cfg, "data.tokenizer", default="bytes")
    source_tokenizer = OmegaConf.select(source_cfg, "data.tokenizer", default="bytes")
    changes = config_changes(OmegaConf.create(saved), OmegaConf.create(wanted), ignore_resumable=False)
    changes = [c for c in changes if not any(c.startswith(k + ".") or c.startswith(k + ":") for k in EXTENSION_KEYS)]
    if tokenizer != source_tokenizer:
        changes.append(f"data.tokenizer: {source_tokenizer} → {tokenizer}")
    return changes


def _typed(given: Collection[str], section: str) -> set[str]:
    return {k for k in given if k == section or k.startswith(section + ".")}


def inherited_data(cfg, source_cfg, given: Collection[str] | None):
    """The data node a run starting from ``source_cfg``'s weights reads: the source's, unless ``given`` (the keys
    the command line set; None: not known, nothing inherited) names data settings -- then the composed one, with
    the source's tokenizer unless that was given too. Keys a source run's config lacks (written by an older
    ropebench) keep the composed values; where the cache lives is always this run's."""
    if given is None:
        return cfg.data
    typed = _typed(given, "data")
    if typed and _typed(typed, "data.tokenizer"):
        return cfg.data
    source = OmegaConf.to_container(source_cfg.data, resolve=True)
    source.pop("cache_dir", None)
    if typed:  # other data, the source's tokens (a different vocabulary could not load the weights)
        source = {k: source[k] for k in ("tokenizer", "trust_remote_code") if k in source}
    return OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True)), source)


def data_note(source_cfg, cfg) -> str:
    """How the run's data compares with its source's, for the start line."""
    changes = config_changes(OmegaConf.create({"data": source_cfg.data}), OmegaConf.create({"data": cfg.data}))
    if not changes:
        return f"on its data (data={cfg.data.get('name', '?')})"
    return f"on other data than it was trained on ({'; '.join(changes)})"


def prepare(cfg: DictConfig, given: Collection[str] | None = None) -> DictConfig:
    """The config of a run that starts from ``init_from``, checked and completed before anything is written:
    ``init_from`` resolved, ``init_from_seq_len`` set, the data inherited (``inherited_data``; ``given``: the keys
    the command line set), and a training-time RoPE scaling's ``original_max_position_embeddings`` defaulted to
    the source's length (the length the model knows)."""
    run = source_run(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    if run is not None:
        source_cfg = run.read_config()
        cfg.data = inherited_data(cfg, source_cfg, given)
        changes = _differences(source_cfg, cfg)
        if changes:
            raise UserError(f"init_from='{cfg.init_from}' is another model ({'; '.join(changes)}); only "
                            f"{', '.join(EXTENSION_KEYS)} may differ from the run the weights come from")
        cfg.init_from = str(run.path.resolve())
        cfg.init_from_seq_len = int(source_cfg.train.seq_len)
    scaling = OmegaConf.select(cfg, "pe.scaling")
    if scaling is not None and str(scaling.get("type", "none")) not in ("none", "default"):
        if scaling.get("original_max_position_embeddings") is None:
            scaling.original_max_position_embeddings = int(cfg.get("init_from_seq_len") or cfg.train.seq_len)
    return cfg


def load_source_weights(model, cfg, log) -> dict:
    """Load the source run's final weights into ``model``; returns what final.json records about the source."""
    from safetensors.torch import load_model

    run = RunDir(cfg.init_from)
    try:
        load_model(model, str(run / WEIGHTS), strict=True, device=str(next(model.parameters()).device))
    except Exception as exc:
        from ropebench.run.artifacts import weights_problem

        raise UserError(f"init_from='{cfg.init_from}': its weights '{run / WEIGHTS}' {weights_problem(exc)}") from None
    source = {"run": str(run.path), "seq_len": int(cfg.init_from_seq_len),
              "steps": run.read_final().get("steps")}
    log(f"starting from the weights of {run} (trained at {source['seq_len']} tokens, {source['steps']} steps), "
        f"{data_note(run.read_config(), cfg)}")
    return source
