"""`ropebench extend RUN... --to L`: fine-tuned context extension of any finished run, as one sweep.

Each method (``METHODS``) that applies to a run continues it -- its weights, and through ``init_from`` its data
and tokenizer -- at the new length L for every fine-tuning budget (``--steps``; 0 is the run itself with the
method's scaling) and seed, with the fine-tuning settings of conf/train/finetune.yaml. Every run is evaluated at
the same lengths on the same document regions, and the extension report (extend.md, extend.csv, extend.png) is
written into the output directory. `ropebench sweep extend` and `sweep extend_passkey` are this command applied
to base runs they train first (their conf/sweep/*.yaml is the recipe: methods, budgets, length, lengths).

Each (run, method) pair is one Hydra multirun over budgets x seeds, so launchers (joblib, SLURM) run the jobs and
a relaunch into the same directory skips finished runs and resumes the others. Everything is checked before the
first job starts: a bad method, budget, length or path is one line and writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import typer

from ropebench.errors import UserError, choose


@dataclass(frozen=True)
class Method:
    conf: str  # its conf/extend/<conf>.yaml (the scaling type, PoSE, the learned table's growth)
    needs: str  # what the encoding must offer: "" (positions without a table), scaling, pose or table
    what: str


METHODS = {
    "direct": Method("direct", "", "fine-tuned at the new length, positions unchanged"),
    "pi": Method("linear", "scaling", "position interpolation (Chen et al. 2023): linear RoPE scaling"),
    "ntk": Method("ntk", "scaling", "static NTK-aware RoPE base change"),
    "yarn": Method("yarn", "scaling", "YaRN (Peng et al. 2023)"),
    "pose": Method("pose_yarn", "pose", "PoSE (Zhu et al. 2023) with YaRN: fine-tuned at the run's own length, "
                                        "positions skipping over the new one"),
    "interpolate": Method("learned", "table", "learned positions: the table interpolated to the new length"),
}
# conf/extend/ names, as sweep configs list them -> the method (alibi and nope: those encodings fine-tuned directly)
ALIASES = {"linear": "pi", "pose_yarn": "pose", "learned": "interpolate", "alibi": "direct", "nope": "direct"}
STEPS = (0, 50, 200)


@dataclass(frozen=True)
class Base:
    """A finished run to extend."""

    path: Path
    cfg: object

    @property
    def pe(self) -> str:
        return str(self.cfg.pe.name)

    @property
    def seq_len(self) -> int:
        return int(self.cfg.train.seq_len)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)


def conf_of(method: str, base: Base) -> str:
    """The conf/extend/ file of a method on a run: direct fine-tuning of an encoding with a file of its own
    (alibi.yaml, nope.yaml: the sweep's names for them) is that file, every other method its own."""
    from ropebench.run.config import conf_dir

    if method == "direct" and (conf_dir() / "extend" / f"{base.pe}.yaml").is_file():
        return base.pe
    return METHODS[method].conf


def parse_methods(text: str | None) -> list[str] | None:
    """``--methods direct,pi,...`` (conf/extend names accepted too) in order, each once; None: every method."""
    if not text:
        return None
    names = [ALIASES.get(m.strip(), m.strip()) for m in text.split(",") if m.strip()]
    for name in names:
        choose("extension method", name, METHODS)
    return list(dict.fromkeys(names))


def parse_ints(text: str, option: str, least: int = 0) -> list[int]:
    values = []
    for item in str(text).split(","):
        item = item.strip()
        if not item.isascii() or not item.isdigit() or int(item) < least:
            raise UserError(f"{option} '{item}' is not an integer >= {least}; give e.g. {option} 0,50,200")
        values.append(int(item))
    return sorted(set(values))


def why_not(method: str, base: Base) -> str | None:
    """Why ``method`` cannot extend ``base`` (its encoding's declared capabilities), or None."""
    from ropebench.core.pe import registry

    entry = registry().get(base.pe)
    if entry is None:
        return f"pe={base.pe} is not a registered encoding"
    table = "extend" in {f.name for f in dataclasses.fields(entry.config_cls)}  # positions end at a table's size
    needs = METHODS[method].needs
    if needs == "" and table:
        return f"pe={base.pe}'s position table ends at the run's length (use interpolate)"
    if needs in ("scaling", "pose") and not entry.cls.supports_rope_scaling:
        return f"pe={base.pe} has no RoPE scaling"
    if needs == "pose" and not entry.cls.supports_position_ids:
        return f"pe={base.pe} takes no position ids"
    if needs == "table" and not table:
        return f"pe={base.pe} has no position table to interpolate"
    return None


def plan(bases: list[Base], to: int, methods: list[str] | None) -> list[tuple[Base, str]]:
    """(base, method) for every method that applies to every base; a method asked for that applies to none of
    them, or a length that is not longer than a base's, is refused in one line."""
    for base in bases:
        if to <= base.seq_len:
            raise UserError(f"--to {to} is not longer than {base.path}'s training length {base.seq_len}; "
                            "extension needs a longer length")
    pairs = [(b, m) for b in bases for m in (methods or METHODS) if why_not(m, b) is None]
    for method in methods or []:
        if not any(m == method for _, m in pairs):
            raise UserError(f"method '{method}' does not extend {bases[0].path}: {why_not(method, bases[0])}")
    if not pairs:
        raise UserError(f"no extension method applies to pe={bases[0].pe}")
    return pairs


def default_lengths(bases: list[Base], to: int) -> list[int]:
    """The base length doubled up to 8x the new one (4x for the passkey task, slow at long lengths), and L."""
    shortest = min(b.seq_len for b in bases)
    limit = (4 if any(str(b.cfg.data.source) == "passkey" for b in bases) else 8) * to
    lengths = {to}
    length = shortest
    while length <= limit:
        lengths.add(length)
        length *= 2
    return sorted(lengths)


def value(v) -> str:
    """A config value as a Hydra override writes it; strings quoted, so that paths with '=' or ',' stay whole."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(value(x) for x in v) + "]"
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _same_model(base: Base) -> list[str]:
    """Overrides that rebuild the base's model and encoding (what init_from requires), the extension's own
    settings (scaling, table growth, kernel) left to the method."""
    from omegaconf import OmegaConf

    from ropebench.run.config import flatten_config
    from ropebench.run.init_from import EXTENSION_KEYS

    plain = OmegaConf.to_container(base.cfg, resolve=True)
    out = [f"pe={base.pe}"]
    for section in ("model", "pe"):
        for key, v in flatten_config({section: plain.get(section) or {}}).items():
            if key != "pe.name" and v != {} and not any(key == k or key.startswith(k + ".") for k in EXTENSION_KEYS):
                out.append(f"{key}={value(v)}")
    return out


# Settings this command sets itself, and the option that chooses them instead.
_OWN = {"train.steps": "--steps", "seed": "--seeds", "train.seq_len": "--to", "train.pose_target_len": "--to",
        "init_from": "RUN", "extend": "--methods", "eval.lengths": "--lengths", "eval.region_len": "--lengths",
        "hydra.sweep.dir": "--out", "hydra.sweep.subdir": "--out", "pe": "RUN", "model": "RUN"}


def _own(key: str) -> str | None:
    return next((option for k, option in _OWN.items() if key == k or key.startswith(k + ".")), None)


@dataclass
class Extension:
    """The extension sweep: which methods continue which runs, for which budgets and seeds, evaluated where."""

    pairs: list[tuple[Base, str]]
    to: int
    steps: list[int]
    seeds: list[int] | None  # None: each run's own seed
    lengths: list[int]
    out: Path
    extra: list[str]  # the user's other overrides (fine-tuning settings, launcher, logger)

    def subdir(self, base: Base, method: str) -> str:
        """``extend=CONF,seed=S,train.steps=N`` (as the sweep names its jobs), with ``pe=ENC,`` first when
        several encodings share the method's conf name."""
        sharing = {b.pe for b, m in self.pairs if conf_of(m, b) == conf_of(method, base)}
        prefix = f"pe={base.pe}," if len(sharing) > 1 else ""
        return f"{prefix}extend={conf_of(method, base)},seed=${{seed}},train.steps=${{train.steps}}"

    def overrides(self, base: Base, method: str, first_only: bool = False) -> list[str]:
        """One (run, method) multirun: its budgets x seeds (``first_only``: one of each, to check the config)."""
        m = METHODS[method]
        steps, seeds = self.steps, self.seeds or [base.seed]
        if first_only:
            steps, seeds = steps[:1], seeds[:1]
        pose = m.needs == "pose"  # PoSE trains at the run's own length, positions reaching the new one
        length = [f"train.seq_len={base.seq_len}", f"train.pose_target_len={self.to}"] if pose else [
            f"train.seq_len={self.to}"]
        factor = [f"pe.scaling.factor={value(self.to / base.seq_len)}"] if m.needs in ("scaling", "pose") else []
        return [f"extend={conf_of(method, base)}", *_same_model(base), f"init_from={value(str(base.path.resolve()))}",
                "train=finetune", *length, *factor, f"train.steps={','.join(map(str, steps))}",
                f"seed={','.join(map(str, seeds))}", "eval.after_train=true", f"eval.lengths={value(self.lengths)}",
                f"eval.region_len={max(self.lengths)}", "sweep_name=extend", f"hydra.sweep.dir={value(str(self.out))}",
                f"hydra.sweep.subdir={value(self.subdir(base, method))}", *self.extra]

    def check(self) -> None:
        """Every job's config composed and validated, and the run names unique, before anything starts."""
        from ropebench.cli.hydra_app import check_overrides

        names: dict[tuple, Path] = {}
        for base, method in self.pairs:
            for seed in self.seeds or [base.seed]:
                name = (self.subdir(base, method), seed)
                if name in names and names[name] != base.path:
                    raise UserError(f"{names[name]} and {base.path} would both be extended into "
                                    f"'{name[0].split(',seed')[0]},seed={seed}'; extend them into separate --out "
                                    "directories")
                names[name] = base.path
            check_overrides(self.overrides(base, method, first_only=True))


def bases_of(paths: list[str]) -> list[Base]:
    """The finished runs named (run or sweep directories), which must read the same data: the extension's runs
    are compared with each other, so they must score the same text."""
    from ropebench.cli.hf_eval import runs_of
    from ropebench.run.checkpoint import config_changes
    from ropebench.run.rundir import RunDir

    for path in paths:
        if not Path(os.path.expanduser(path)).is_dir():
            what = "is not a directory" if Path(os.path.expanduser(path)).exists() else "does not exist"
            raise UserError(f"'{path}' {what}; give finished run directories or sweep directories of them")
    bases = [Base(p, RunDir(p).read_config()) for p in runs_of(paths)]
    for other in bases[1:]:
        changes = config_changes({"data": bases[0].cfg.data}, {"data": other.cfg.data})
        if changes:
            raise UserError(f"{bases[0].path} and {other.path} read different data ({'; '.join(changes)}); extend "
                            "them separately")
    return bases


def default_out(bases: list[Base], to: int) -> Path:
    if len(bases) == 1:
        return bases[0].path.parent / f"{bases[0].path.name}-extend{to}"
    return bases[0].path.parent / f"extend{to}"


def run_extension(ext: Extension):
    """Train every job (one multirun per run and method), then evaluate what is missing and write the extension
    report; returns the sweep report, or None when stopped (Ctrl-C)."""
    from ropebench.cli import jobs as runner
    from ropebench.cli.hydra_app import run_hydra
    from ropebench.report.sweep import finish_sweep, print_report
    from ropebench.run.stop import StopFlag, clear_stop_request, stop_requested

    ext.check()
    clear_stop_request()
    runner.outcomes.clear()
    with StopFlag():
        for base, method in ext.pairs:
            if stop_requested():
                break
            run_hydra(runner.train_job, ext.overrides(base, method), multirun=True)
    if stop_requested():
        return None
    refused = [(run, why) for run, status, why in runner.outcomes if status in ("failed", "refused")]
    report = finish_sweep(ext.out, "extend", refused=refused)
    print_report(report)
    return report


def _split(items: list[str]) -> tuple[list[str], list[str]]:
    """(run paths, overrides): a path that exists is a run or sweep directory, even holding '='; KEY=VALUE is an
    override; anything else is a path that does not exist."""
    paths, overrides = [], []
    for item in items:
        if Path(os.path.expanduser(item)).exists() or "=" not in item:
            paths.append(item)
        else:
            overrides.append(item)
    return paths, overrides


def extend(
    ctx: typer.Context,
    items: list[str] = typer.Argument(..., metavar="RUN...", show_default=False,
                                      help="Finished runs and/or sweep directories of them, then Hydra overrides "
                                           "of the fine-tuning settings (train.lr=5e-4, launcher=auto)."),
    to: int = typer.Option(..., "--to", help="The new length, longer than each run's training length."),
    methods: str = typer.Option(None, help=f"Comma-separated, of: {', '.join(METHODS)} (pose: PoSE with YaRN; "
                                           "interpolate: learned position tables). Default: every method that "
                                           "applies to the run's encoding."),
    steps: str = typer.Option(",".join(map(str, STEPS)), help="Fine-tuning budgets in steps; 0 is the run itself "
                                                              "with the method's scaling."),
    seeds: str = typer.Option(None, help="Seeds of the fine-tuning runs (default: each run's own)."),
    lengths: str = typer.Option(None, help="Evaluation lengths (default: the run's length doubling up to 8x the "
                                           "new one; every run is scored on the same regions of that longest)."),
    out: Path = typer.Option(None, help="Where the runs and the report go (default: beside the run, "
                                        "RUN-extendL)."),
):
    """Fine-tune finished runs at a longer length with each extension method and budget, evaluate every run on the
    same tokens, and write the extension report (extend.md, extend.csv, extend.png) into --out.

    E.g. `ropebench extend runs/mine --to 512 --methods direct,pi,yarn --steps 0,100 --seeds 0,1 train.lr=5e-4`.

    The new runs keep the source run's model, data and tokenizer; fine-tuning settings come from
    conf/train/finetune.yaml and any KEY=VALUE given. Relaunching into the same --out skips finished runs.
    """
    from ropebench.cli.hydra_app import check_output_dir, keys_of, split_flags
    from ropebench.eval.lengths import parse_lengths

    paths, overrides = _split(items)
    flags, overrides = split_flags([*overrides, *ctx.args])
    if flags:
        raise UserError(f"'{flags[0]}' does not apply to `ropebench extend`; see `ropebench train --help`")
    own = sorted({f"{key} (use {_own(key)})" for key in keys_of(overrides) if _own(key)})
    if own:
        raise UserError(f"{own[0].split(' ')[0]} is set by ropebench extend itself {own[0].split(' ', 1)[1]}")
    wanted = parse_methods(methods)
    budgets = parse_ints(steps, "--steps")
    fine_seeds = parse_ints(seeds, "--seeds") if seeds else None
    bases = bases_of(paths)
    pairs = plan(bases, to, wanted)
    evaluated = parse_lengths(lengths, 1) if lengths else default_lengths(bases, to)
    target = Path(out) if out is not None else default_out(bases, to)
    check_output_dir("--out", str(target))
    report = run_extension(Extension(pairs, to, budgets, fine_seeds, evaluated, target, overrides))
    if report is None:
        import shlex

        typer.echo("stopped; finished runs are kept. Continue with the same command "
                   f"(--out {shlex.quote(str(target))})", err=True)
        raise typer.Exit(130)
    if report.failed or report.unfinished:
        raise typer.Exit(1)
