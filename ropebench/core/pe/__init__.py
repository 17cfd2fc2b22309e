"""Position encodings, registered by name.

Every module in this package registers itself with :func:`register`; adding an encoding is one new file here
plus one YAML in ``conf/pe/`` -- nothing else changes.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass

from omegaconf import OmegaConf

from ropebench.core.pe.base import PEConfig, PositionEncoding
from ropebench.errors import UserError, choose


@dataclass(frozen=True)
class Entry:
    cls: type[PositionEncoding]
    config_cls: type[PEConfig]


# The encodings the main job compares: the core four (RoPE, sinusoidal, learned, T5 bias) and the two baselines
# every paper adds (ALiBi, NoPE). Sweeps (`${ropebench_core_encodings:}`) and benchmarks read this list.
CORE_ENCODINGS = ("rope", "sinusoidal", "learned", "t5", "alibi", "nope")

_REGISTRY: dict[str, Entry] = {}
_DISCOVERED = False


def register(name: str, config_cls: type[PEConfig]):
    """Class decorator: make an encoding available as ``pe=<name>``. A name already taken is refused: a silent
    overwrite would make ``pe=<name>`` run whichever module happened to be imported last."""

    def wrap(cls: type[PositionEncoding]) -> type[PositionEncoding]:
        taken = _REGISTRY.get(name)
        if taken is not None and taken != Entry(cls, config_cls):
            raise UserError(f"encoding name '{name}' is already registered by {_qualified(taken.cls)}; "
                            f"{_qualified(cls)} must use another name")
        _REGISTRY[name] = Entry(cls, config_cls)
        return cls

    return wrap


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def default_config(name: str):
    """The config node of encoding ``name`` with every setting at its default."""
    return OmegaConf.structured(registry()[choose("encoding", name, registry())].config_cls())


def registry() -> dict[str, Entry]:
    global _DISCOVERED
    if not _DISCOVERED:
        for module in pkgutil.iter_modules(__path__):
            if module.name != "base":
                importlib.import_module(f"{__name__}.{module.name}")
        _DISCOVERED = True
    return dict(_REGISTRY)


def build(cfg, *, n_embd: int, n_head: int, train_seq_len: int, n_layer: int = 1) -> PositionEncoding:
    """Instantiate the encoding named by ``cfg.name`` from its config node, for ``n_layer`` layers."""
    entry = registry()[choose("encoding (pe)", cfg.name, registry())]
    if any(f.name not in cfg for f in dataclasses.fields(entry.config_cls)):
        # A run recorded before a setting existed (e.g. kerple's `init`): that setting takes its default.
        cfg = OmegaConf.merge(OmegaConf.structured(entry.config_cls), cfg)
    return entry.cls(cfg, n_embd=n_embd, n_head=n_head, train_seq_len=train_seq_len, n_layer=n_layer)


__all__ = ["PEConfig", "PositionEncoding", "register", "registry", "build"]
