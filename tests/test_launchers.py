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
    assert "unknown launcher 'dask'; choose one of: joblib, sequential, slurm, submitit_local" in result.stderr
