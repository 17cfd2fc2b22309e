"""Which runs are one experiment, and how a series is named.

A run's *identity* is its whole resolved config minus the seed and the keys that cannot change what was
measured (``IGNORED``: bookkeeping, hardware, logging, evaluation settings the rows carry themselves). Runs with
the same identity are seeds of one experiment and only they are averaged; runs that differ in anything else --
one key among fifty -- are never averaged, whatever their labels say.

A series' *label* is the encoding (and the RoPE scaling it was evaluated with) and, abbreviated, every key that
tells it apart: the keys that differ between all the runs shown (a sweep's training length), the encoding's own
keys that differ between runs of that encoding (RoPE's base), and any key that is the only difference between
two series that would otherwise share a name. Nothing is dropped for brevity: ``plot``/``table --label`` rename
a series instead. Stdlib and OmegaConf only.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping

from ropebench.errors import UserError

# Config keys that never change what a model learned or how it was scored (bookkeeping, hardware, logging,
# evaluation settings the CSV rows already carry), so two runs differing only in them are the same experiment.
IGNORED = (
    "seed",
    "resume",
    "init_from",  # where the weights came from: a path per seed; what was done to them is in the other keys
    "sweep_name",
    "label",  # the run's name (conf/method/): it replaces the encoding's in the label, and tells runs apart there
    "lr_by_encoding",  # a sweep's table of rates: what a run trained with is train.lr
    "logger",
    "eval",
    "data.cache_dir",
    "data.trust_remote_code",  # a permission, not a setting
    "train.device",
    "train.threads",
    "train.compile",
    "train.peak_tflops",  # only the MFU column
    "train.log_interval",
    "train.eval_interval",
    "train.ckpt_interval",
    "train.eval_batches",
)
# Short names for keys a reader knows by another name; every other key is named by its shortest unambiguous tail.
SHORT = {
    "train.seq_len": "L",
    "train.batch_size": "B",
    "train.warmup_steps": "warmup",
    "train.pose_target_len": "PoSE L",
    "init_from_seq_len": "from L",
    "pe.scaling.original_max_position_embeddings": "orig L",
}
# Keys a label names first, in this order (what a reader looks for); the others follow alphabetically.
FIRST = ("train.seq_len", "train.steps", "init_from_seq_len")
# Shown only where they are what tells two series apart: the RoPE scaling a run was evaluated with is in its base
# label already (rope+yarn(factor=4)), and as trained that is the scaling it was trained with.
CONTEXT_FREE = ("pe.scaling.",)
# Keys whose 0 means a feature is off (the ordinary encoding): a label names them only when on, so a task sweep's
# "rope" stands beside "rope (random_positions=256)".
SHOWN_WHEN_ON = ("train.random_positions",)
UNSET = "unset"  # a key one run's config does not have (written by another ropebench, or another encoding)


def ignored(key: str) -> bool:
    return any(key == i or key.startswith(i + ".") for i in IGNORED)


def normal(value):
    """A config value as identities compare it: numbers by value (1 and 1.0 are one learning rate), lists as
    tuples, an empty section as None -- hashable, so values can be compared and used as keys."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(normal(v) for v in value)
    return None if value == {} else value


@functools.lru_cache(maxsize=1)
def _schema_defaults() -> tuple[tuple[str, object], ...]:
    """Every non-encoding key of the current config schema with its default: a run written before a key existed
    ran with that key's default, so it is not another experiment for lacking it."""
    from omegaconf import OmegaConf

    from ropebench.run.config import Config, flatten_config

    plain = OmegaConf.to_container(OmegaConf.structured(Config), resolve=False, enum_to_str=True)
    plain.pop("pe", None)  # each encoding has its own keys
    return tuple((k, normal(v)) for k, v in flatten_config(plain).items() if not ignored(k) and "${" not in str(v))


def experiment(config: Mapping[str, object]) -> dict[str, object]:
    """The flattened config's keys that define the experiment, normalised, schema defaults filled in."""
    given = {k: normal(v) for k, v in config.items() if not ignored(k)}
    return {**dict(_schema_defaults()), **given} if config else given


def identity(config: Mapping[str, object]) -> tuple:
    """What two runs must share to be seeds of one experiment (a hashable, comparable key)."""
    return tuple(sorted((k, repr(v)) for k, v in experiment(config).items()))


def _differing(configs: list[dict], keys, every_run_has: bool) -> list[str]:
    if len(configs) < 2:
        return []
    if every_run_has:  # older configs without a key do not sprout a label for it
        keys = [k for k in keys if all(k in c for c in configs)]
    return sorted(k for k in keys if len({repr(c.get(k, UNSET)) for c in configs}) > 1)


def short_names(keys: list[str]) -> dict[str, str]:
    """key -> its name in a label: ``SHORT``'s, else the shortest tail that no other key here ends with
    (``lr``, ``scaling.factor``); a key ending in ``.name`` is named by its section (``model=small``)."""
    def tail(key: str, n: int) -> str:
        parts = key.split(".")
        if parts[-1] == "name" and len(parts) > 1:
            parts = parts[:-1]
        return ".".join(parts[-n:])

    out = {}
    for key in keys:
        n = 1
        while any(other != key and tail(other, n) == tail(key, n) for other in keys) and n < key.count(".") + 1:
            n += 1
        out[key] = SHORT.get(key, tail(key, n))
    return out


def show(value) -> str:
    """A value as a label shows it: numbers in %g, a path by its last part, lists in brackets."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    text = str(value)
    return text.rstrip("/").rsplit("/", 1)[-1] if "/" in text else text


def _shown(key: str, value) -> str:
    if key == "init_from_seq_len" and not value:
        return "none"  # trained from scratch
    return show(value)


def base_label(pe: str, rope_scaling: str = "none", logit_scale: str = "none") -> str:
    """``rope``, ``rope+yarn(factor=4)``, ``rope+yarn(factor=4)+logn``: the encoding (or the run's ``label``) and
    the RoPE scaling and logit scale it was evaluated with."""
    scaling = rope_scaling.replace("original_max_position_embeddings", "orig_len")
    label = pe if rope_scaling in ("", "none") else f"{pe}+{scaling}"
    return label if logit_scale in ("", "none") else f"{label}+{logit_scale}"


def labels(series: Mapping[Hashable, tuple[str, str, dict]], context: bool = True) -> dict[Hashable, str]:
    """Series key -> label, for series given as key -> (encoding, base label, flattened config of one of its runs).

    Every series' label holds the keys that tell apart series sharing its base label and, with ``context``, the
    non-encoding keys that differ between all the series (when every one has them) and its encoding's keys that
    differ between the series of that encoding. Two different series never get one label."""
    configs = {key: experiment(cfg) for key, (_, _, cfg) in series.items()}
    everything = set().union(*configs.values()) if configs else set()
    encoding_keys = {k for k in everything if k.startswith("pe.")}

    def among(field: int | None, value, keys, every_run_has: bool) -> set[str]:
        """The keys that differ between the series whose (encoding, base label)[field] is value (all: None)."""
        group = [configs[k] for k, s in series.items() if field is None or s[field] == value]
        return set(_differing(group, keys, every_run_has))

    shared = among(None, None, everything - encoding_keys, True) if context else set()
    telling = {k for k in encoding_keys if not k.startswith(CONTEXT_FREE)} if context else set()
    by_pe = {pe: among(0, pe, telling, True) for pe, _, _ in series.values()}
    by_base = {b: among(1, b, everything - {"pe.name"}, False) for _, b, _ in series.values()}
    # A series named by its run's `label` (conf/method/: what sets the method apart is in its name) is told apart
    # by the keys that differ among its namesakes only, not by the setup keys that differ between the methods.
    context_keys = {key: (among(0, pe, everything - {"pe.name"} - (encoding_keys - telling), True)
                          if cfg.get("label") else shared | by_pe[pe]) if context else set()
                    for key, (pe, _, cfg) in series.items()}

    def ordered(keys: set[str]) -> list[str]:  # FIRST, the setup's other keys, then the encoding's
        return sorted(keys, key=lambda k: (k not in FIRST, FIRST.index(k) if k in FIRST else 0, k.startswith("pe."), k))

    return _unique({key: _label(base, ordered(context_keys[key] | by_base[base]), configs[key])
                    for key, (pe, base, _) in series.items()})


def _label(base: str, keys: list[str], config: dict) -> str:
    keys = [k for k in keys if k not in SHOWN_WHEN_ON or config.get(k, UNSET) not in (0, None, UNSET)]
    names = short_names(keys)
    parts = [f"{names[k]}={_shown(k, config.get(k, UNSET))}" for k in keys]
    return f"{base} ({', '.join(parts)})" if parts else base


def _unique(out: dict) -> dict:
    """Labels that still collide (two values that print alike, such as two paths ending in one name) numbered."""
    seen: dict[str, int] = {}
    for key, label in out.items():
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            out[key] = f"{label} #{seen[label]}"
    return out


class Renames:
    """The user's names for series (`plot`/`table --label KEY=NAME`, `--labels FILE`): KEY is a series' label as
    ropebench would print it, or a run directory of the series. Checked before any figure or table is made."""

    def __init__(self, names: Mapping[str, str]):
        self.names = dict(names)

    @classmethod
    def parse(cls, pairs: list[str] | None = None, file=None) -> Renames | None:
        """From ``KEY=NAME`` options (split at the last '=': labels hold '=', a name may not) and a YAML or JSON
        file mapping KEY to NAME; None when neither is given."""
        names: dict[str, str] = {}
        if file is not None:
            names.update(_read_names(file))
        for pair in pairs or []:
            key, sep, name = str(pair).rpartition("=")
            if not sep or not key.strip() or not name.strip():
                raise UserError(f"--label '{pair}' is not KEY=NAME (KEY: a series' label or a run directory; "
                                "NAME: what to call it), e.g. --label 'rope (L=64)=RoPE'")
            names[key.strip()] = name.strip()
        return cls(names) if names else None

    def apply(self, label_of: dict[Hashable, str], members: Mapping[Hashable, list]) -> dict[Hashable, str]:
        """label_of with the renamed series' new names; a KEY that names no series, or two series given one
        name, is refused in one line."""
        from pathlib import Path

        out = dict(label_of)
        for key, name in self.names.items():
            path = Path(key).expanduser()
            run = path.resolve() if path.is_dir() else None
            hits = [s for s, label in label_of.items()
                    if label == key or (run is not None and run in {Path(m).resolve() for m in members.get(s, [])})]
            if not hits:
                have = "; ".join(sorted(set(label_of.values())))
                raise UserError(f"--label '{key}' names no series here; give a label as printed ({have}) or a run "
                                "directory")
            out.update({s: name for s in hits})
        taken: dict[str, Hashable] = {}
        for series, label in out.items():
            if label in taken:
                raise UserError(f"--label gives two series the name '{label}' ({label_of[taken[label]]}; "
                                f"{label_of[series]}); each series needs its own name")
            taken.setdefault(label, series)
        return out


def _read_names(file) -> dict[str, str]:
    """A labels file: a YAML (or JSON) mapping of KEY to NAME."""
    from pathlib import Path

    import yaml

    path = Path(file).expanduser()
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"--labels '{file}': cannot read it ({exc.strerror or type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"--labels '{file}' is not YAML ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(loaded, dict) or not all(isinstance(v, (str, int, float)) for v in loaded.values()):
        raise UserError(f"--labels '{file}' must map each KEY (a label or a run directory) to a NAME, one "
                        "'KEY: NAME' per line")
    return {str(k): str(v) for k, v in loaded.items()}
