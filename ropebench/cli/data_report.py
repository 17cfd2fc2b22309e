"""`ropebench data-report`: how much of each validation document is already in a training document."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from ropebench.data import load_corpus
from ropebench.data.report import OverlapReport, corpus_overlap
from ropebench.errors import UserError, choose

# The data layer names config keys in its refusals (it serves `train`); data-report takes them as options.
_AS_OPTIONS = ((re.compile(r"\bdata\.paths=\[([^\]]*)\]"), r"--paths \1"),
               (re.compile(r"\bdata\.val_fraction\b"), "--val-fraction"),
               (re.compile(r"\bdata=(\w+)"), r"--data \1"))


def data_config(data: str = "stdlib", paths: list[str] | None = None, val_fraction: float | None = None):
    """The ``data`` config node that ``ropebench train data=DATA data.paths=[...]`` would use."""
    from omegaconf import OmegaConf

    from ropebench.run.config import DataConfig, conf_dir

    choose("data", data, [p.stem for p in (conf_dir() / "data").glob("*.yaml")])
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(conf_dir() / "data" / f"{data}.yaml"))
    if paths:
        cfg.paths = [str(p) for p in paths]
    if val_fraction is not None:
        if not 0 < val_fraction < 1:
            raise UserError(f"--val-fraction must be in (0, 1), got {val_fraction}")
        cfg.val_fraction = val_fraction
    return cfg


def data_report(
    data: Annotated[str, typer.Option(help="A data preset (conf/data), as `ropebench train data=...`.")] = "stdlib",
    paths: Annotated[list[str] | None, typer.Option(help="data=text_files: a file or directory (repeat for "
                                                         "more).")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="The share of documents drawn for validation "
                                                            "(default: the preset's, 0.1).")] = None,
    top: Annotated[int, typer.Option(help="How many of the most contained validation documents to name.")] = 5,
) -> OverlapReport:
    """Print, for a data config, the largest share of a validation document's 32-byte n-grams found in one
    training document (naming both) and how many validation documents exceed 50%."""
    try:
        return _report(data, paths, val_fraction, top)
    except UserError as exc:
        message = str(exc)
        for pattern, option in _AS_OPTIONS:
            message = pattern.sub(option, message)
        raise UserError(message) from None


def _report(data: str, paths: list[str] | None, val_fraction: float | None, top: int) -> OverlapReport:
    cfg = data_config(data, paths, val_fraction)
    if cfg.source == "passkey":
        raise UserError("data=passkey is generated on the fly: it has no documents to compare")
    if paths and cfg.source != "text_files":
        raise UserError(f"--paths {' '.join(map(str, paths))} is read only with data=text_files, not data={data}")
    report = corpus_overlap(load_corpus(cfg), top)
    print(f"data={data}: " + "\n".join(report.lines()))
    return report
