"""Metrics logging: ``metrics.jsonl`` in the run directory is the source of truth; Weights & Biases mirrors it.

wandb runs offline-first (``logger.wandb.mode``: disabled | offline | online) and keeps its files inside the
run directory. Online mode without credentials falls back to offline with one warning instead of hanging.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import OmegaConf

from ropebench.errors import choose
from ropebench.run.rundir import RunDir

WANDB_MODES = ("disabled", "offline", "online")


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.path.expanduser("~/.netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class RunLogger:
    def __init__(self, run_dir: Path, cfg, resume_step: int = 0, warn=print):
        run = RunDir(run_dir)
        run.keep_metrics_through(resume_step)  # lines logged after the checkpoint will be logged again
        self._file = run.open_metrics()
        self.wandb_run = None
        wcfg = cfg.logger.wandb
        mode = choose("logger.wandb.mode", str(wcfg.mode), WANDB_MODES)
        if mode == "online" and not _has_wandb_credentials():
            warn("warning: logger.wandb.mode=online but no wandb credentials found (WANDB_API_KEY or "
                 "`wandb login`); logging offline instead -- upload later with `wandb sync`")
            mode = "offline"
        if mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(
                mode=mode, dir=str(run_dir), project=wcfg.project, entity=wcfg.entity or None,
                group=wcfg.group or cfg.sweep_name or None, tags=list(wcfg.tags) or None,
                name=Path(run_dir).name, config=OmegaConf.to_container(cfg, resolve=True),
                reinit="finish_previous", settings=wandb.Settings(silent=True),
            )

    def log(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def log_eval_curve(self, rows: list[dict]) -> None:
        """The eval-length results as a wandb table and line plot (metrics files stay the source of truth)."""
        if self.wandb_run is None or not rows:
            return
        import wandb

        columns = ["eval_len", "ppl", "protocol", "rope_scaling"]
        table = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows if r["status"] == "ok"])
        self.wandb_run.log({"eval_length": table,
                            "eval_length_plot": wandb.plot.line(table, "eval_len", "ppl", title="ppl vs length")})

    def close(self) -> None:
        self._file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
