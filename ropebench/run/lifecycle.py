"""Starting and continuing runs: the rules that keep a run directory a record.

* A run's config is written once, when the run starts; no later command changes it.
* A directory that already holds a run is only ever continued with the same experiment: a new command whose
  config differs in anything but the resumable keys is refused, naming each difference, and changes nothing.
* Continuing takes the run's own saved config; only resumable keys may be overridden, and what was changed is
  recorded in ``final.json`` (``continued``), never by rewriting the config.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ropebench.errors import UserError
from ropebench.progress import console
from ropebench.run import checkpoint
from ropebench.run.rundir import CHECKPOINT, RunDir
from ropebench.run.validate import validate_config


def resolved(cfg: DictConfig) -> DictConfig:
    """The config as the record keeps it: interpolations resolved, relative data paths made absolute, so the run
    evaluates the same from any working directory."""
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    data = plain.get("data", {})
    if data.get("paths"):
        data["paths"] = [str(Path(p).expanduser().resolve()) for p in data["paths"]]
    from ropebench.data.hf_env import is_local

    for key in ("path", "tokenizer"):  # a local data set or tokenizer directory; a Hub name stays a name
        if data.get(key) and data[key] != "bytes" and is_local(str(data[key])):
            data[key] = str(Path(data[key]).expanduser().resolve())
    return OmegaConf.create(plain)


class OtherExperiment(UserError):
    """The directory holds a run of another experiment: refused, and nothing is written there."""


def check_same_experiment(run: RunDir, cfg: DictConfig) -> None:
    """Refuse to put a different experiment into a directory that already holds a run."""
    if not run.has_config():
        return
    changes = checkpoint.config_changes(run.read_config(), cfg)
    if changes:
        raise OtherExperiment(f"'{run}' already holds a run with other settings ({'; '.join(changes)}); choose another "
                        "directory (hydra.run.dir / hydra.sweep.dir) or continue it with `ropebench resume`")


def start(cfg: DictConfig, run_dir: Path, log=None, before_training=lambda: None, after_training=None,
          given: Collection[str] | None = None) -> dict:
    """Train a new run in ``run_dir`` (or continue the same experiment found there); ``before_training`` runs
    once the directory is known to be this experiment's (a sweep job clears its last error there); ``given``:
    the config keys the command line set (what an ``init_from`` run does not take from its source)."""
    from ropebench.run.init_from import prepare
    from ropebench.run.trainer import train

    run = RunDir(run_dir)
    with claimed(run):  # from the first look at the directory to the last write: no other command between
        new = not run.has_config()
        try:
            cfg = prepare(resolved(cfg), given)  # checks init_from: a refused source leaves no directory behind either
        except UserError:
            if new:
                run.discard_unstarted()
            raise
        validate_config(cfg)
        check_same_experiment(run, cfg)
        before_training()
        if run.is_finished():
            return finished(run, cfg, log or console.print, after_training)
        run.write_config_once(OmegaConf.to_container(cfg))
        try:
            return train(cfg, run.path, after_training=after_training, **({"log": log} if log else {}))
        except UserError:
            # A setting only the model, the device or the data can check (pe.base=-1, device=tpu, a validation
            # split shorter than seq_len) is a config that fails validation: it leaves no run directory behind.
            if new:
                run.discard_unstarted()
            raise


def claimed(run: RunDir):
    """The run held exclusively for training (``RunDir.claim``), by the one process that writes it: under torchrun,
    rank 0 (every rank trains the same run directory)."""
    from contextlib import nullcontext

    from ropebench.run import distributed

    return run.claim() if distributed.from_env().is_rank0 else nullcontext()


def resume(run_dir: Path, overrides: list[tuple[str, object]], log=None, after_training=None) -> dict:
    """Continue the run in ``run_dir`` with its own config; ``overrides`` may change only resumable keys."""
    from ropebench.run.trainer import train

    run = RunDir(run_dir)
    saved = run.read_config()  # a missing or damaged run is said before anything is created in it
    with claimed(run):
        if not run.is_finished() and not (run / CHECKPOINT).is_file():  # the trainer loads it; only its presence
            raise UserError(f"'{run}' has no checkpoint to continue from; start it again with `ropebench train`")
        cfg = checkpoint.continued_config(saved, overrides)
        validate_config(cfg)
        if run.is_finished():
            return finished(run, cfg, log or console.print, after_training)
        changes = checkpoint.config_changes(saved, cfg, ignore_resumable=False)
        return train(cfg, run.path, continued=changes, after_training=after_training,
                     **({"log": log} if log else {}))


def finished(run: RunDir, cfg, log, after_training) -> dict:
    """A finished run: its record as it is -- with its after-training evaluation completed if that was cut short.
    Asking it for other steps is refused: a finished run is not trained further (its weights and results would
    stop matching its record), nor shortened."""
    final = run.read_final()  # a damaged final.json is one error line, not "finished" and then an error
    steps = final.get("steps")
    if isinstance(steps, int) and steps != int(cfg.train.steps):
        raise UserError(f"'{run}' has finished its {steps} steps, and a finished run is not trained further or "
                        f"shortened (train.steps={cfg.train.steps} asked); to train on from its weights, start a new "
                        f"run: ropebench train init_from={run} train.steps=N hydra.run.dir=NEW_DIR, with the run's "
                        "own model, pe and data settings")
    log(f"[green]already finished[/]: {run}")
    if cfg.eval.after_train and after_training is not None:
        from ropebench.run.trainer import evaluate_after

        final = evaluate_after(final, lambda: after_training(run.path, None, None, log), log)
    return {**final, "status": "interrupted" if final.get("status") == "interrupted" else "already_finished"}
