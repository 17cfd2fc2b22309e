"""`ropebench data-report`: how much of each validation document is already in a training document."""

from __future__ import annotations

from ropebench.errors import UserError, choose


def data_config(data: str = "stdlib", paths: list[str] | None = None):
    """The ``data`` config node that ``ropebench train data=DATA data.paths=[...]`` would use."""
    from omegaconf import OmegaConf

    from ropebench.run.config import DataConfig, conf_dir

    choose("data", data, [p.stem for p in (conf_dir() / "data").glob("*.yaml")])
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(conf_dir() / "data" / f"{data}.yaml"))
    if paths:
        cfg.paths = [str(p) for p in paths]
    return cfg


def data_report(data: str = "stdlib", paths: list[str] | None = None, top: int = 5):
    """Print, for a data config, the largest share of a validation document's 32-byte n-grams found in one
    training document (naming both) and how many validation documents exceed 50%."""
    from ropebench.data import load_corpus
    from ropebench.data.report import corpus_overlap

    cfg = data_config(data, paths)
    if cfg.source == "passkey":
        raise UserError("data=passkey is generated on the fly: it has no documents to compare")
    if paths and cfg.source != "text_files":
        raise UserError(f"--paths {' '.join(map(str, paths))} is read only with data=text_files, not data={data}")
    report = corpus_overlap(load_corpus(cfg), top)
    print(f"data={data}: " + "\n".join(report.lines()))
    return report
