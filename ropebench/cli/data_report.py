"""`ropebench data-report`: how much of the held-out text -- each document, and the regions evaluation scores --
is already in training, for any data source and tokenizer (a run's own, or composed from overrides)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ropebench.errors import UserError, choose

if TYPE_CHECKING:
    from ropebench.data.report import OverlapReport

# The data layer names config keys in its refusals (it serves `train`); data-report's options mode takes them as
# options, so its refusals name the options.
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


def _config(data: str, paths: list[str] | None, target: list[str], val_fraction: float | None = None):
    """The full config the report reads: a run directory's own, overrides composed like `ropebench train`'s, or
    the data preset (--data/--paths) with the default training and evaluation settings."""
    from omegaconf import OmegaConf

    from ropebench.run.rundir import RunDir

    if target and Path(target[0]).is_dir():
        if len(target) > 1 or data != "stdlib" or paths or val_fraction is not None:
            raise UserError(f"'{target[0]}' is a run directory: its data is the report's; give nothing else")
        return RunDir(target[0]).read_config()
    if paths and data != "text_files":
        raise UserError(f"--paths {' '.join(map(str, paths))} is read only with data=text_files, not data={data}")
    overrides = list(target or [])
    data_config(data, paths, val_fraction)  # the preset exists, --val-fraction is a share (checked as before)
    if data != "stdlib" or paths or val_fraction is not None:
        overrides = [f"data={data}", *([f"data.paths=[{','.join(map(str, paths))}]"] if paths else []),
                     *([f"data.val_fraction={val_fraction}"] if val_fraction is not None else []), *overrides]
    from ropebench.cli.hydra_app import check_overrides

    cfg = check_overrides(overrides, allow_sweeps=False)[0]
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def data_report(data: str = "stdlib", paths: list[str] | None = None, top: int = 5, split: str = "test",
                target: list[str] | None = None, val_fraction: float | None = None) -> OverlapReport:
    """Print, for a held-out split (test by default): the largest share of a document's 32-byte n-grams found in
    one training document (naming both), how many documents exceed 50%, and for the regions eval-length scores
    (at the training length, with the config's eval settings) the share of their n-grams that occur anywhere in
    training. TARGET: a run directory, or config overrides (data=hf data.path=P data.tokenizer=T ...)."""
    try:
        return _report(data, paths, top, split, target or [], val_fraction)
    except UserError as exc:
        if target:  # the user's own overrides: their keys are the words to use
            raise
        message = str(exc)
        for pattern, option in _AS_OPTIONS:
            message = pattern.sub(option, message)
        raise UserError(message) from None


def _report(data: str, paths: list[str] | None, top: int, split: str, target: list[str],
            val_fraction: float | None) -> OverlapReport:
    from ropebench.data import load_corpus
    from ropebench.data.regions import region_spans
    from ropebench.data.report import corpus_overlap
    from ropebench.data.tokenizer import load_tokenizer

    choose("split", split, ("test", "val"))
    if data in ("passkey", "task"):
        raise UserError(f"data={data} is generated on the fly: it has no documents to compare")
    cfg = _config(data, paths, target, val_fraction)
    if str(cfg.data.source) in ("passkey", "task"):
        raise UserError(f"data={cfg.data.source} is generated on the fly: it has no documents to compare")
    corpus = load_corpus(cfg.data)
    tokenizer = load_tokenizer(str(cfg.data.get("tokenizer", "bytes") or "bytes"),
                               bool(cfg.data.get("trust_remote_code", False)))
    train_len = int(cfg.train.seq_len)
    region = int(cfg.eval.get("region_len", 0)) or int(float(cfg.eval.get("region_multiple", 16)) * train_len)
    spans = region_spans(corpus.held_out(split), (corpus.names or {}).get(split), train_len, region,
                         int(cfg.eval.get("max_tokens", 0)))
    report, regions = corpus_overlap(corpus, tokenizer, split, top, spans, max(region, train_len))
    print(f"data={cfg.data.name}: " + "\n".join(report.lines() + (regions.lines() if regions else [])))
    return report


def data_report_command(
    target: list[str] = typer.Argument(None, metavar="[RUN_DIR | OVERRIDES...]", help="A run directory (its data, "
                                       "tokenizer and evaluation settings), or config overrides as for `train` "
                                       "(data=hf data.path=P data.tokenizer=T train.seq_len=128)."),
    data: str = typer.Option("stdlib", help="A data preset (conf/data/)."),
    paths: list[str] = typer.Option(None, help="Files or directories, with --data text_files."),
    split: str = typer.Option("test", help="The held-out split to compare with training: test or val."),
    val_fraction: float = typer.Option(None, help="The share of documents drawn for validation (default: the "
                                       "preset's, 0.1)."),
    top: int = typer.Option(5, help="How many of the largest overlaps to list."),
):
    """How much of the held-out documents, and of the regions eval-length scores, is already in training."""
    data_report(data, paths, top, split, target, val_fraction)
