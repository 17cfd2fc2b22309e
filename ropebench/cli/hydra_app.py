"""Full Hydra behind Typer sub-commands.

``@hydra.main`` owns ``sys.argv`` and cannot be nested in a click command (hydra #409, #1964), while the
Compose API has no run directory, no multirun and no launchers. So the Typer command hands its remaining
arguments to a real ``@hydra.main`` task function (public API, run directories, ``.hydra/``, multirun,
launcher plugins all intact). Before that, every override is checked with the Compose API -- one value of
each sweep at a time -- so a misspelled key or unknown choice fails in one line before any work starts.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from ropebench.errors import UserError, choose
from ropebench.run.config import conf_dir, flatten_config, register_schemas

GROUPS = ("model", "pe", "data", "train", "sweep", "launcher")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def _one_line(exc: Exception, overrides: list[str]) -> str:
    """Turn Hydra's multi-line composition errors into one line naming the bad value and the choices."""
    text = str(exc)
    missing = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if missing:
        group, name = missing.groups()
        choices = _options(group)
        return f"unknown {group} '{name}'; choose one of: {', '.join(choices)}"
    bad_key = re.search(r"Could not override '([^']+)'", text)
    if bad_key:
        key = bad_key.group(1)
        parent, _, leaf = key.rpartition(".")
        try:
            from omegaconf import OmegaConf

            section = OmegaConf.select(_compose([o for o in overrides if not o.lstrip("+~").startswith(key)]), parent)
            keys = sorted(section.keys()) if parent and OmegaConf.is_dict(section) else []
        except Exception:
            keys = []
        where = f"; keys in '{parent}': {', '.join(map(str, keys))}" if keys else ""
        return f"unknown config key '{key}'{where}"
    merging = re.search(r"Error merging override (.+)", text)
    if merging:
        cause = exc.__cause__ or exc
        detail = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        return f"bad override '{merging.group(1).strip()}': {detail}"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def expand_for_check(overrides: list[str]) -> list[list[str]]:
    """Override lists to compose: each sweep value once (a sum, not a product), others at their first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise UserError(_one_line(exc, overrides)) from None

    def plain(o, value=None) -> str:
        prefix = {"ADD": "+", "DEL": "~", "FORCE_ADD": "++"}.get(o.type.name, "")
        value = o.get_value_element_as_str() if value is None else value
        return f"{prefix}{o.get_key_element().lstrip('+~')}={value}"

    sweeps = {i: list(o.sweep_string_iterator()) for i, o in enumerate(parsed) if o.is_sweep_override()}
    base = [plain(o, sweeps[i][0]) if i in sweeps else plain(o) for i, o in enumerate(parsed)
            if not o.get_key_element().lstrip("+~").startswith("hydra")]
    combos = [base]
    for i, values in sweeps.items():
        position = [j for j, o in enumerate(parsed) if not o.get_key_element().lstrip("+~").startswith("hydra")]
        if i not in position:
            continue
        for value in values[1:]:
            combo = list(base)
            combo[position.index(i)] = plain(parsed[i], value)
            combos.append(combo)
    return combos


def parse(overrides: list[str]):
    """Hydra's own parser -- never a split on '=' by hand (values may hold '=', paths may hold ',')."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise UserError(_one_line(exc, overrides)) from None


def key_of(override) -> str:
    return override.get_key_element().lstrip("+~")


def keys_of(overrides: list[str]) -> set[str]:
    """The config keys a list of overrides sets. An override Hydra's grammar does not take (a path holding '=' or
    ',' given as typed, which ropebench accepts for a few keys) is named by the text before its first '=': a key
    never holds one."""
    keys = set()
    for text in overrides:
        try:
            keys.add(key_of(parse([text])[0]))
        except UserError:
            keys.add(text.split("=", 1)[0].lstrip("+~"))
    return keys


def value_of(override) -> str:
    """The value as the program sees it: a quoted path without its quotes."""
    value = override.value()
    return value if isinstance(value, str) else override.get_value_element_as_str()


# Keys whose values are paths: a path is taken as typed, even where Hydra's grammar would read it otherwise.
PATH_KEYS = ("init_from", "resume", "hydra.run.dir", "hydra.sweep.dir", "data.path", "data.tokenizer",
             "data.cache_dir")


def _hydra_quoted(value: str) -> str:
    """``value`` as one Hydra quoted string: quotes and the backslashes before them escaped, ``${`` kept literal."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return "'" + escaped.replace("${", "\\${") + "'"


def quote_paths(overrides: list[str]) -> list[str]:
    """The overrides with each path (``PATH_KEYS``) that Hydra's grammar would refuse or split -- '=', '[', ',', a
    space or a non-ASCII letter, as in the `pe=rope,seed=0` directories of ropebench's own sweeps -- quoted for
    Hydra, so it is taken as typed. Left alone: a value already quoted, one that Hydra reads as one value
    (``runs/${pe.name}`` stays an interpolation), and a sweep of paths that are not one existing path."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, out = OverridesParser.create(), []
    for text in overrides:
        key, sep, value = text.partition("=")
        if sep and value and key.lstrip("+~") in PATH_KEYS and value[0] not in "'\"":
            try:
                quote = parser.parse_override(text).is_sweep_override() and \
                    Path(os.path.expanduser(value)).exists()
            except Exception:  # no other reading of it
                quote = True
            if quote:
                text = f"{key}={_hydra_quoted(value)}"
        out.append(text)
    return out


def check_overrides(overrides: list[str], allow_sweeps: bool = True) -> list:
    """Compose every value once and validate it, so a bad key, value or range fails before anything is created;
    returns the composed configs."""
    from ropebench.run.validate import validate_config

    register_schemas()
    if not allow_sweeps:
        # A sweep's value has no single-string form (get_value_element_as_str raises): quote what was typed.
        swept = [o.input_line or key_of(o) for o in parse(overrides) if o.is_sweep_override()]
        if swept:
            raise UserError(f"'{swept[0]}' sweeps several values; `ropebench train` runs one model -- use "
                            f"`ropebench sweep NAME {swept[0]}` (e.g. NAME=compare)")
    _check_groups_and_keys(parse(overrides))
    composed = []
    for combo in expand_for_check(overrides):
        try:
            cfg = _compose(combo)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(_one_line(exc, combo)) from None
        _check_interpolations(cfg)
        validate_config(cfg)
        composed.append(cfg)
    for o in parse(overrides):
        if key_of(o) in ("hydra.run.dir", "hydra.sweep.dir"):
            check_output_dir(key_of(o), value_of(o))
    return composed


def _check_groups_and_keys(parsed) -> None:
    """Every value of a config group names one of its files -- Hydra silently ignores an unknown value of an optional
    group (``extend=yarm``, ``sweep=...``), which would train something else under the name asked for -- and no
    override adds a key ropebench's config does not have (``+foo=bar`` would land in config.yaml unread)."""
    for o in parsed:
        key = key_of(o)
        if (conf_dir() / key).is_dir():
            if o.type.name != "DEL":
                values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [value_of(o)]
                for value in values:
                    if value != "null":
                        choose(key, value, _options(key))
        elif o.type.name in ("ADD", "FORCE_ADD") and not key.startswith("hydra"):
            raise UserError(f"'{o.input_line}': ropebench's config has a fixed set of keys, which '+' would add to; "
                            "set an existing key with KEY=VALUE (`ropebench train --cfg job` prints them all)")


def _check_interpolations(cfg) -> None:
    """Every ``${...}`` resolves (``${oc.env:UNSET}``, ``${bogus:1}`` fail here, naming the key, before anything is
    created) -- except Hydra's own, which only a running job can resolve."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=False)
    for key, value in flatten_config(plain).items():
        if isinstance(value, str) and "${" in value and "${hydra:" not in value:
            try:
                OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
            except Exception as exc:
                detail = str(getattr(exc, "msg", None) or exc).strip().splitlines() or [type(exc).__name__]
                raise UserError(f"{key}={value} does not resolve: {detail[0]}") from None


def warm_corpora(configs: list, given: set[str] | None = None) -> None:
    """Tokenize every data set a sweep's configs read once, here, before its jobs start: jobs running side by side
    would otherwise each build the same cache at the same time. A job starting from another run's weights reads
    that run's data unless ``given`` (the keys the command line set) names data settings."""
    from omegaconf import OmegaConf

    from ropebench.data import load_corpus

    seen = set()
    for cfg in configs:
        data = _data_read(cfg, given)
        if data is None:
            continue
        key = OmegaConf.to_yaml(data)
        if key not in seen and data.source != "passkey":
            seen.add(key)
            load_corpus(data)


def _data_read(cfg, given: set[str] | None):
    """The data node a job of this config reads, or None when it cannot be known before the job starts (its
    init_from names the sweep's own directory)."""
    try:
        source = str(cfg.get("init_from") or "")
    except Exception:  # ${hydra:sweep.dir} resolves only inside a job
        return None
    if not source:
        return cfg.data
    from ropebench.run.init_from import inherited_data
    from ropebench.run.rundir import RunDir

    run = RunDir(Path(source).expanduser())
    return inherited_data(cfg, run.read_config(), given) if run.has_config() else None


def check_output_dir(key: str, value: str) -> None:
    """A run or sweep directory must be a writable directory path (an empty value would write into '.')."""
    if not value.strip():
        raise UserError(f"{key} is empty; give a directory, e.g. {key}=runs/mine")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{key}={value} is a file, not a directory; choose a directory path")
    parent = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise UserError(f"{key}={value}: '{parent}' is a file, not a directory; choose a directory path")
    if not os.access(parent, os.W_OK | os.X_OK) or (parent != path and not _can_create_in(parent)):
        raise UserError(f"{key}={value}: '{parent}' is not writable; choose a directory you can write to")


def _can_create_in(directory: Path) -> bool:
    """Whether a directory can really be created there (Hydra creates the run directory and fails with a
    traceback if it cannot): os.access says yes to root everywhere, /proc included. Only asked when the run
    directory does not exist yet, so an existing run directory is never touched."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ropebench-probe-", dir=directory))
    except OSError:
        return False
    return True


# Hydra's own command-line flags, as `@hydra.main` reads them (flag -> takes a value).
HYDRA_FLAGS = {"--cfg": True, "-c": True, "--package": True, "-p": True, "--resolve": False, "--info": False,
               "-i": False}


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra flags, overrides). `-m/--multirun` belongs to `ropebench sweep`; everything else is refused by
    Typer before it gets here."""
    flags, overrides, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg in ("-m", "--multirun"):
            raise UserError(f"'{arg}': `ropebench train` runs one model; sweeps are `ropebench sweep NAME ...`")
        if arg in HYDRA_FLAGS:
            takes_value = HYDRA_FLAGS[arg] and i + 1 < len(args)
            flags += args[i : i + 1 + takes_value]
            i += 1 + takes_value
            continue
        if arg.startswith("-"):
            raise UserError(f"unknown option '{arg}'; Hydra flags allowed here: {', '.join(sorted(HYDRA_FLAGS))}")
        overrides.append(arg)
        i += 1
    return flags, quote_paths(overrides)


def show_config(flags: list[str], overrides: list[str]) -> None:
    """`--cfg job|hydra|all` (and --resolve, --package): print the composed config without running anything."""
    import hydra

    saved = sys.argv
    sys.argv = ["ropebench", *flags, *overrides]
    try:
        hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(lambda cfg: None)()
    finally:
        sys.argv = saved


def run_hydra(task, overrides: list[str], multirun: bool = False, prog: str = "ropebench") -> list:
    """Run ``task(cfg)`` under a real ``@hydra.main`` with these command-line overrides; returns the configs composed
    to check them (each swept value once)."""
    import hydra

    composed = check_overrides(overrides, allow_sweeps=multirun)
    if multirun:
        warm_corpora(composed, keys_of(overrides))
    argv = [prog, *(["--multirun"] if multirun else []), *overrides]
    saved = sys.argv
    sys.argv = argv
    try:
        hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(task)()
    finally:
        sys.argv = saved
    return composed


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)
