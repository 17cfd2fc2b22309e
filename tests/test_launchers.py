"""Launchers (conf/launcher/): the 2022 PyPI plugins hydra-joblib-launcher and hydra-submitit-launcher (1.2.0)
really run sweeps with the pinned hydra-core 1.3, each job in its own process, with the same results as the
sequential in-process launcher (no state leaks between jobs); the SLURM keys reach sbatch."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from typer.testing import CliRunner

from ropebench.cli import jobs as job_runner
from ropebench.cli.app import app
from ropebench.run.config import conf_dir

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install hydra-joblib-launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")

runner = CliRunner()
pytestmark = pytest.mark.slow


def launcher(name: str) -> str:
    return f"launcher={name}"


@pytest.fixture(scope="module")
def warm_corpus(tiny_overrides):
    """Tokenize once up front: parallel jobs that all find an empty cache would each build it at once."""
    from ropebench.cli.hydra_app import _compose
    from ropebench.data import load_corpus
    from ropebench.run.config import register_schemas

    register_schemas()
    load_corpus(_compose(tiny_overrides).data, log=lambda *a: None)
    return tiny_overrides


def final_losses(sweep_dir: Path) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["train_loss"] for p in sweep_dir.glob("*/final.json")}


def sweep(overrides: list[str], sweep_dir: Path, *extra: str):
    job_runner.outcomes.clear()
    result = runner.invoke(app, ["sweep", "compare", *overrides, "pe=rope,alibi", *extra,
                                 f"hydra.sweep.dir={sweep_dir}"])
    assert result.exit_code == 0, result.output
    assert "2 finished, 0 failed" in " ".join(result.output.split())  # rich wraps long lines
    return result


def test_joblib_runs_jobs_in_parallel_processes_with_sequential_results(warm_corpus, tmp_path):
    sweep(warm_corpus, tmp_path / "joblib", launcher("joblib"), "hydra.launcher.n_jobs=2")
    # The jobs ran in joblib's worker processes: this process recorded no outcome of its own.
    assert job_runner.outcomes == []
    multirun = OmegaConf.load(tmp_path / "joblib" / "multirun.yaml")
    assert multirun.hydra.launcher._target_.endswith("JoblibLauncher") and multirun.hydra.launcher.n_jobs == 2
    parallel = final_losses(tmp_path / "joblib")
    assert sorted(parallel) == ["pe=alibi", "pe=rope"]

    # The same sweep, both jobs in this one process: identical numbers, so nothing leaked from job to job.
    sweep(warm_corpus, tmp_path / "sequential", launcher("sequential"))
    assert len(job_runner.outcomes) == 2
    assert final_losses(tmp_path / "sequential") == pytest.approx(parallel, abs=1e-6)


def test_submitit_local_executor_runs_a_sweep(warm_corpus, tmp_path):
    sweep(warm_corpus, tmp_path / "sub", launcher("submitit_local"), "hydra.launcher.timeout_min=5")
    assert job_runner.outcomes == []  # each job was a submitit subprocess
    assert (tmp_path / "sub" / ".submitit").is_dir()  # submitit's own logs and pickles
    assert sorted(final_losses(tmp_path / "sub")) == ["pe=alibi", "pe=rope"]


def test_slurm_keys_reach_sbatch(tmp_path, monkeypatch):
    """Compose launcher=slurm with the documented keys and render the sbatch script submitit would submit."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from ropebench.run.config import register_schemas

    register_schemas()
    keys = ["hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2", "hydra.launcher.timeout_min=90",
            "hydra.launcher.cpus_per_task=6", "hydra.launcher.mem_gb=32", "hydra.launcher.nodes=1",
            "hydra.launcher.tasks_per_node=1", f"hydra.sweep.dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[launcher("slurm"), *keys], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params["_target_"].endswith("SlurmLauncher")
    plugin = instantiate(cfg.hydra.launcher)
    # What the plugin's launch() does before submitting: base keys as they are, the rest prefixed slurm_.
    base = set(OmegaConf.structured(__import__("hydra_plugins.hydra_submitit_launcher.config",
                                               fromlist=["BaseQueueConf"]).BaseQueueConf).keys())
    # No SLURM here: skip submitit's "is srun installed" probe; the script is rendered, never submitted.
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    executor = submitit.AutoExecutor(folder=tmp_path / "sub", cluster="slurm")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in plugin.params.items()
                                  if k not in ("submitit_folder", "max_num_timeout", "name")})
    script = executor._executor._make_submission_file_text("python -c pass", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--time=90", "--cpus-per-task=6", "--mem=32GB",
                 "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}" in script, script


def test_unknown_launcher_is_one_line(tiny_overrides, tmp_path):
    result = runner.invoke(app, ["sweep", "compare", *tiny_overrides, "pe=rope", launcher("dask"),
                                 f"hydra.sweep.dir={tmp_path / 's'}"])
    assert result.exit_code == 2
    assert "unknown launcher 'dask'; choose one of: auto, joblib, sequential, slurm, submitit_local" in result.stderr


def _compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from ropebench.run.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_the_main_job_runs_one_job_per_core_on_a_cpu_machine(monkeypatch):
    """`compare` chooses launcher=auto: joblib with one single-threaded job per core (one job when a GPU is
    there); the other sweeps and an explicit launcher keep their own."""
    import os

    import torch

    monkeypatch.delenv("ROPEBENCH_LOCAL_JOBS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = _compose_with_hydra(["sweep=compare"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    cores = len(os.sched_getaffinity(0))
    assert cfg.hydra.launcher.n_jobs == cores and cfg.train.threads == (1 if cores > 1 else 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = _compose_with_hydra(["sweep=compare"])
    assert gpu.hydra.launcher.n_jobs == 1 and gpu.train.threads == 0
    assert _compose_with_hydra(["sweep=compare", "launcher=sequential"]).hydra.launcher._target_.endswith(
        "BasicLauncher")
    assert _compose_with_hydra(["sweep=compare", "train.threads=3"]).train.threads == 3
    monkeypatch.setenv("ROPEBENCH_LOCAL_JOBS", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _compose_with_hydra(["sweep=compare"]).hydra.launcher.n_jobs == 3


def test_one_ctrl_c_stops_a_parallel_sweep_and_the_printed_command_finishes_it(warm_corpus, tmp_path):
    """Two jobs side by side in joblib workers: one SIGINT to the process group (what a terminal sends) stops both
    at a step boundary with a checkpoint, the command exits 130 printing how to continue, and that command
    completes the sweep."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sweep_dir = tmp_path / "parallel"
    # 4,000 steps of the tiny test model take several seconds: longer than one worker's start can lag the other's,
    # so neither job finishes before both have logged (at 400, one sometimes did, on a loaded machine).
    args = [*warm_corpus, "pe=rope,alibi", "train.steps=4000", "train.ckpt_interval=10000", "train.threads=1",
            f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "ROPEBENCH_LOCAL_JOBS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ropebench", "sweep", "compare", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 180
    while len(list(sweep_dir.glob("*/metrics.jsonl"))) < 2 or not all(
            p.read_text() for p in sweep_dir.glob("*/metrics.jsonl")):
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "Continue with: ropebench sweep compare" in out
    assert sorted(p.parent.name for p in sweep_dir.glob("*/checkpoint.pt")) == ["pe=alibi", "pe=rope"]
    assert not list(sweep_dir.glob("*/final.json"))
    again = out.rsplit("Continue with: ", 1)[1].split("\n", 1)[0]  # the sweep's line comes after each job's
    assert again.startswith("ropebench sweep compare ")
    again = again.replace("ropebench", f"{sys.executable} -m ropebench", 1)
    result = subprocess.run(again, shell=True, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.parent.name for p in sweep_dir.glob("*/final.json")) == ["pe=alibi", "pe=rope"]
