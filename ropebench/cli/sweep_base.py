"""Sweeps that start from base runs (`ropebench sweep extend`): the base runs are built first, by a sweep of
their own into SWEEP_DIR/base, unless they are there already (a relaunch skips finished ones) or the command
names its own ``init_from``; then `ropebench extend` runs on them with the sweep's recipe (``extension_recipe``).

The base sweep gets the settings that define the base models too -- seed, data, model, the machine and the
launcher -- and none of the extension's (steps, length, method).
"""

from __future__ import annotations

from pathlib import Path

from ropebench.errors import UserError

#: sweep -> the sweep that builds its base runs
BASE_SWEEPS = {"extend": "extend_base", "extend_passkey": "passkey"}
_SHARED = ("seed", "launcher", "data", "model", "logger", "hydra.launcher", "train.threads", "train.device",
           "train.dtype", "train.compile")


def _shared(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in _SHARED)


def base_overrides(overrides: list[str], sweep_dir: str) -> list[str]:
    """The overrides of the base sweep: the shared ones, and its own directory SWEEP_DIR/base."""
    from ropebench.cli.hydra_app import key_of, parse, quote_paths

    kept = [text for text, parsed in zip(overrides, parse(overrides)) if _shared(key_of(parsed))]
    # Named by encoding and seed whatever is swept: the extension's init_from finds them by that name.
    return [*kept, *quote_paths([f"hydra.sweep.dir={Path(sweep_dir) / 'base'}"]),
            "hydra.sweep.subdir='pe=${pe.name},seed=${seed}'"]


def build_base_runs(name: str, overrides: list[str], sweep_dir: str, run_sweep) -> None:
    """Run the base sweep of ``name`` (if it has one and no ``init_from`` is given); ``run_sweep(base_name,
    overrides)`` runs a sweep and returns its report. A failed base run stops here, naming it."""
    from ropebench.cli.hydra_app import key_of, parse

    base = BASE_SWEEPS.get(name)
    if base is None or any(key_of(o) == "init_from" for o in parse(overrides)):
        return
    report = run_sweep(base, base_overrides(overrides, sweep_dir))
    if report is None:  # stopped
        return
    if report.failed or report.unfinished:
        names = ", ".join(p.name for p, _ in report.failed) or ", ".join(p.name for p in report.unfinished)
        raise UserError(f"the base runs of sweep '{name}' did not all finish ({names}); see {report.sweep_dir}")


def _values(override) -> list[str]:
    return list(override.sweep_string_iterator()) if override.is_sweep_override() else [
        override.get_value_element_as_str()]


def extension_recipe(name: str, overrides: list[str], sweep_dir: str):
    """`sweep extend` as `ropebench extend` on the base runs in SWEEP_DIR/base (those of the seeds asked for), or on
    the command's own init_from: conf/sweep/NAME.yaml gives the methods (its conf/extend names), the budgets, the
    new length and the evaluation lengths, and the command line may change each (extend=, train.steps=,
    train.seq_len=, eval.lengths=). The other overrides (fine-tuning settings, launcher, logger) reach every job;
    the base runs' own (model, encoding) are theirs already."""
    from omegaconf import OmegaConf

    from ropebench.cli.extend import Extension, bases_of, parse_ints, parse_methods, plan
    from ropebench.cli.hydra_app import key_of, parse
    from ropebench.run.config import conf_dir

    recipe = OmegaConf.load(conf_dir() / "sweep" / f"{name}.yaml")
    params = recipe.hydra.sweeper.params
    given = {key_of(o): o for o in parse(overrides)}

    def setting(key: str, default) -> str:
        return ",".join(_values(given[key])) if key in given else str(default)

    if "init_from" in given:
        bases = bases_of([str(given["init_from"].value())])
    else:
        seeds = set(parse_ints(setting("seed", ""), "seed")) if "seed" in given else None
        bases = [b for b in bases_of([str(Path(sweep_dir) / "base")]) if seeds is None or b.seed in seeds]
    to = int(setting("train.seq_len", recipe.train.seq_len))
    lengths = [int(x) for x in given["eval.lengths"].value()] if "eval.lengths" in given else list(
        recipe.eval.lengths)
    consumed = {"extend", "train.steps", "train.seq_len", "eval.lengths", "seed", "init_from", "sweep"}
    extra = [text for text, o in zip(overrides, parse(overrides)) if key_of(o) not in consumed
             and not key_of(o).startswith(("hydra.sweep", "hydra.job", "model", "pe"))]
    return Extension(plan(bases, to, parse_methods(setting("extend", params.extend))), to,
                     parse_ints(setting("train.steps", params["train.steps"]), "train.steps"), None, lengths,
                     Path(sweep_dir), extra)
