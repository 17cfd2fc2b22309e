"""Metrics logging: ``metrics.jsonl`` in the run directory is the source of truth; Weights & Biases mirrors it.

wandb runs offline-first (``logger.wandb.mode``: disabled | offline | online) and keeps its files inside the
run directory. Online mode without credentials falls back to offline with one warning instead of hanging. The
wandb run's id is recorded in the run directory (``wandb_run.json``): a resumed training continues that wandb
run, and every later evaluation of the run (``log_results``: eval-length, passkey, probes) logs into it. An
offline run ends with the command that uploads it. In a sweep, the wandb group is the sweep directory and a
run's name is its directory's, unique within it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import OmegaConf

from ropebench.errors import choose
from ropebench.run.rundir import RunDir

WANDB_MODES = ("disabled", "offline", "online")
# Columns of result rows that a wandb table shows, when every row has them.
_TABLE_COLUMNS = ("eval_len", "depth", "protocol", "stride", "rope_scaling", "ppl", "nll", "accuracy", "n_tokens")


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.path.expanduser("~/.netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_mode(cfg, warn=print) -> str:
    """The run's wandb mode; online without credentials becomes offline, with one warning."""
    mode = choose("logger.wandb.mode", str(OmegaConf.select(cfg, "logger.wandb.mode", default="disabled")),
                  WANDB_MODES)
    if mode == "online" and not _has_wandb_credentials():
        warn("warning: logger.wandb.mode=online but no wandb credentials found (WANDB_API_KEY or "
             "`wandb login`); logging offline instead -- upload later with `wandb sync`")
        return "offline"
    return mode


def _group(cfg, run_dir: Path) -> str | None:
    """The configured group; in a sweep, the sweep directory (its last two path parts, e.g.
    compare/20261123-130000), so that each sweep is one group and its runs' names are unique within it."""
    wcfg = cfg.logger.wandb
    if wcfg.get("group"):
        return str(wcfg.group)
    if not cfg.get("sweep_name"):
        return None
    return "/".join(Path(run_dir).resolve().parent.parts[-2:])


def open_wandb(run_dir: Path, cfg, mode: str, config: dict | None = None):
    """The run's wandb run: the one recorded in the run directory, resumed by its id, else a new one (recorded)."""
    import wandb

    run = RunDir(run_dir)
    recorded = run.read_wandb() or {}
    wcfg = cfg.logger.wandb
    handle = wandb.init(
        mode=mode, dir=str(run_dir), project=recorded.get("project", wcfg.project),
        entity=recorded.get("entity", wcfg.entity or None), group=_group(cfg, run_dir),
        tags=list(wcfg.tags) or None, name=Path(run_dir).name, config=config,
        id=recorded.get("id"), resume="allow" if recorded.get("id") else None,
        reinit="finish_previous", settings=wandb.Settings(silent=True),
    )
    if not recorded:
        run.write_wandb({"id": handle.id, "project": handle.project, "entity": wcfg.entity or None, "mode": mode})
    return handle


def sync_hint(handle) -> str | None:
    """The command that uploads an offline wandb run, or None for an online one."""
    if handle.settings.mode != "offline":
        return None
    return f"wandb: logged offline; upload with: wandb sync {handle.settings.sync_dir}"


def results_table(rows: list[dict]):
    """The rows that succeeded as a wandb Table, with the columns every one of them has."""
    import wandb

    ok = [r for r in rows if str(r.get("status", "ok")) == "ok"]
    columns = [c for c in _TABLE_COLUMNS if ok and all(c in r for r in ok)]
    return wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in ok])


def log_results(run_dir: Path, rows: list[dict], name: str, warn=print) -> None:
    """An evaluation's rows (``name``: eval_length, passkey, a probe's) into the run's own wandb run, resumed by
    the id the run recorded, when the run used wandb; offline, the line that uploads it follows."""
    cfg = RunDir(run_dir).read_config()
    if not rows or str(OmegaConf.select(cfg, "logger.wandb.mode", default="disabled")) == "disabled":
        return
    handle = open_wandb(run_dir, cfg, wandb_mode(cfg, warn))
    try:
        _log_table(handle, rows, name)
    finally:
        hint = sync_hint(handle)
        handle.finish()
    if hint:
        warn(hint)


def _log_table(handle, rows: list[dict], name: str) -> None:
    import wandb

    table = results_table(rows)
    logged = {name: table}
    if "ppl" in table.columns:
        logged[f"{name}_plot"] = wandb.plot.line(table, "eval_len", "ppl", title=f"{name}: ppl vs length")
    handle.log(logged)


class RunLogger:
    def __init__(self, run_dir: Path, cfg, resume_step: int = 0, warn=print):
        run = RunDir(run_dir)
        run.keep_metrics_through(resume_step)  # lines logged after the checkpoint will be logged again
        self._file = run.open_metrics()
        self.wandb_run = None
        self.warn = warn
        mode = wandb_mode(cfg, warn)
        if mode != "disabled":
            self.wandb_run = open_wandb(run_dir, cfg, mode, OmegaConf.to_container(cfg, resolve=True))

    def log(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def log_eval_curve(self, rows: list[dict], name: str = "eval_length") -> None:
        """Results measured right after training (perplexity by length, passkey accuracy) as a wandb table (and
        a line plot of perplexity); metrics files stay the source of truth."""
        if self.wandb_run is not None and rows:
            _log_table(self.wandb_run, rows, name)

    def close(self) -> None:
        self._file.close()
        if self.wandb_run is not None:
            hint = sync_hint(self.wandb_run)
            self.wandb_run.finish()
            self.wandb_run = None
            if hint:
                self.warn(hint)
