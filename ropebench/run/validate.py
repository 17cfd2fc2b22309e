"""Range checks that Hydra's types cannot express (``validate_config``), run before anything is created or computed:
each refuses one bad value in one line (``UserError``). The schemas they check are ropebench.run.config's.
"""

from __future__ import annotations

import math

from omegaconf import OmegaConf

from ropebench.errors import UserError, choose
from ropebench.run.config import (
    Attention,
    DataSource,
    Documents,
    Dtype,
    EvalSplit,
    LogitScale,
    WandbMode,
    flatten_config,
)


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


def _check_random_positions(t) -> None:
    n = t.get("random_positions", 0)
    if not n:
        return
    _check(n >= t.seq_len, f"train.random_positions={n} must be >= train.seq_len={t.seq_len} (the positions of "
                           "a window are drawn without replacement from [0, N); 0: off)")
    _check(not t.get("pose_target_len"), "train.random_positions and train.pose_target_len both choose the "
                                         "position ids; set one of them (the other 0)")


def _check_test_fraction(d, own_val_split: bool) -> None:
    """A new run's test split: a fraction in (0, 1) that leaves training documents beside validation. A run
    recorded before the split existed has no key: nothing to check."""
    test = d.get("test_fraction")
    if test is None or d.source in ("passkey", "task") or (d.source in ("hf", "hub") and d.get("test_split", "")):
        return
    _check(0 < test < 1, f"data.test_fraction must be in (0, 1), got {test}")
    taken = test + (0 if own_val_split else d.val_fraction)
    _check(taken < 1, f"data.val_fraction + data.test_fraction must be below 1 (training needs documents), got "
                      f"{d.val_fraction} + {test}")
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
    _check_test_fraction(d, own_split)
    _check(d.source != "text_files" or len(d.paths) > 0, "data=text_files needs data.paths=[FILE_OR_DIR,...]")
    _check(d.source != "hf" or bool(d.get("path", "")),
           "data=hf needs data.path=HUB_NAME_OR_LOCAL_PATH (a Hub data set, a directory, or parquet/json/arrow/csv/txt "
           "files)")
    _check(d.get("min_doc_tokens", 0) >= 0, f"data.min_doc_tokens must be >= 0, got {d.get('min_doc_tokens')}")
    from ropebench.data.corpus import check_data_name

    check_data_name(str(d.get("name", "")))
    tokenizer = str(d.get("tokenizer", "bytes")).strip()
    _check(bool(tokenizer), "data.tokenizer is empty; use bytes, a tokenizer directory or a Hugging Face Hub name")
    _check(d.source != "passkey" or tokenizer == "bytes",
           f"data=passkey is byte-level; it takes no data.tokenizer (got {tokenizer}; use data.tokenizer=bytes)")
    _check(d.source != "task" or tokenizer == "bytes",
           f"data=task has its own vocabulary; it takes no data.tokenizer (got {tokenizer}; use data.tokenizer=bytes)")
    if d.get("documents") is not None:
        choose("data.documents", str(d.documents), [c.value for c in Documents])


def _check_pe_optimizer(pe) -> None:
    """The encoding's own optimizer settings (its parameters' group; see run/trainer.make_optimizer)."""
    mult, decay = pe.get("lr_mult", 1.0), pe.get("weight_decay")
    _check(mult is not None and math.isfinite(mult) and mult > 0,
           f"pe.lr_mult must be a positive number (the encoding's learning rate / train.lr), got {mult}")
    _check(decay is None or (math.isfinite(decay) and decay >= 0),
           f"pe.weight_decay must be >= 0, or null to follow train.weight_decay, got {decay}")


_INT64 = 2**63  # integers the trainer hands to torch (seeds, sizes) must fit in 64 bits


def _check_numbers(cfg) -> None:
    """Every number in the config is finite (``lr=inf`` or ``pe.base=inf`` would train without complaint, and wrong)
    and every integer fits in 64 bits (``seed=1e20`` would overflow inside torch)."""
    plain = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    for key, value in flatten_config(plain).items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise UserError(f"{key} must be a finite number, got {v}")
            if isinstance(v, int) and not isinstance(v, bool) and not -_INT64 <= v < _INT64:
                raise UserError(f"{key}={v} is out of range (integers must be below 2**63)")


def _check_batch_fits(m, t) -> None:
    """One activation of a training batch (batch_size x seq_len x n_embd float32) must fit this machine's memory:
    a size that cannot is refused here, before a model is built, instead of failing in an allocation."""
    import os

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: nothing to compare with
        return
    needed = t.batch_size * t.seq_len * m.n_embd * 4
    _check(needed <= memory, f"train.batch_size={t.batch_size} x train.seq_len={t.seq_len} x model.n_embd={m.n_embd} "
                             f"floats ({needed / 2**30:.0f} GiB for one activation) exceed this machine's memory "
                             f"({memory / 2**30:.0f} GiB); lower train.batch_size")


def validate_config(cfg) -> None:
    """Range checks Hydra's types cannot express, run before anything is created or computed."""
    m, t, e, d = cfg.model, cfg.train, cfg.eval, cfg.data
    _check_pe_optimizer(cfg.pe)  # its own words for a NaN learning-rate multiple, before the generic check
    _check_numbers(cfg)
    for key in ("n_layer", "n_head", "n_embd"):
        _check(m[key] > 0, f"model.{key} must be a positive integer, got {m[key]}")
    _check(m.n_embd % m.n_head == 0, f"model.n_head={m.n_head} must divide model.n_embd={m.n_embd}")
    _check(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    for key in ("seq_len", "batch_size", "log_interval", "eval_interval", "ckpt_interval", "eval_batches"):
        _check(t[key] > 0, f"train.{key} must be a positive integer, got {t[key]}")
    _check_batch_fits(m, t)
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
    _check(e.get("crop_stride", 0) >= 0, f"eval.crop_stride must be >= 0 (0: training length / 16), got "
                                         f"{e.get('crop_stride')}")
    _check(e.get("crop_sample", 4) >= 1, f"eval.crop_sample must be >= 1 (1: crop every target), got "
                                         f"{e.get('crop_sample')}")
    _check(e.max_tokens >= 0, f"eval.max_tokens must be >= 0 (0: every token), got {e.max_tokens}")
    _check(e.region_multiple >= 1, f"eval.region_multiple must be >= 1, got {e.region_multiple}")
    _check(e.get("region_len", 0) >= -1, f"eval.region_len must be >= -1 (0: region_multiple; -1: each document "
                                         f"whole), got {e.get('region_len')}")
    _check(all(int(x) > 0 for x in e.get("lengths", [])),
           f"eval.lengths must be positive integers, got {list(e.get('lengths', []))}")
    _check(len(e.multiples) > 0 and all(x > 0 for x in e.multiples),
           f"eval.multiples must be positive numbers, got {list(e.multiples)}")
    _check_data(d)
    _check_random_positions(t)
    if d.source == "task":
        from ropebench.data.tasks import check_task_config

        check_task_config(d, t.seq_len)
    # Hydra checks these at composition; a continued run's saved config (plain YAML) is checked here.
    for key, kind in (("model.attention", Attention), ("train.dtype", Dtype), ("data.source", DataSource),
                      ("logger.wandb.mode", WandbMode), ("eval.split", EvalSplit), ("model.logit_scale", LogitScale)):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            choose(key, str(value), [c.value for c in kind])
