"""Paths taken as typed, and diagnoses that name the real cause (issue 22, items 10 and 11): directories whose
names Hydra's grammar refuses ('=', ',', '[', non-ASCII -- ropebench's own sweep jobs are named `pe=rope,seed=0`)
work in `init_from=`, `resume=` and `hydra.run.dir=`; a corpus of one file, a model of other shapes, data-report's
options, a finished run asked for more steps and a refused sweep job are each told as what they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import invoke, ok, refused


@pytest.fixture(scope="module")
def finished(tiny_overrides, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("paths") / "pe=rope,seed=0"  # a sweep job's name, as ropebench makes them
    ok(invoke("train", *tiny_overrides, "train.steps=4", f"hydra.run.dir={run}"))
    return run


@pytest.mark.parametrize("name", ["pe=rope,seed=0", "runs[1]", "naïve run", "a'b"])
def test_init_from_takes_a_path_as_typed(name, finished, tiny_overrides, tmp_path):
    source = tmp_path / name
    shutil.copytree(finished, source)
    new = tmp_path / f"{name}-more"
    ok(invoke("train", *tiny_overrides, f"init_from={source}", "train.steps=2", f"hydra.run.dir={new}"))
    final = json.loads((new / "final.json").read_text())
    assert final["init_from"]["run"] == str(source.resolve()) and final["steps"] == 2


@pytest.mark.parametrize("name", ["pe=rope,seed=0", "x[0]=y", "日本"])
def test_resume_takes_a_path_as_typed(name, finished, tmp_path):
    run = tmp_path / name
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("final.json", "model.safetensors", "*.csv"))
    ok(invoke("train", f"resume={run}", "train.steps=6"))
    assert json.loads((run / "final.json").read_text())["steps"] == 6


def test_an_interpolation_in_a_run_directory_stays_one(tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok(invoke("train", *tiny_overrides, "train.steps=2", "hydra.run.dir=runs/${pe.name}-s${seed}"))
    assert (tmp_path / "runs" / "rope-s0" / "final.json").is_file()


def test_a_corpus_of_one_file_is_told_apart_from_an_empty_one(tiny_overrides, tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("def f(x):\n    return x\n" * 200)
    overrides = [f"data.paths=[{one}]" if o.startswith("data.paths=") else o for o in tiny_overrides]
    line = refused(invoke("train", *overrides, f"hydra.run.dir={tmp_path / 'run'}"), logs=True)
    assert "holds no text" not in line
    assert ("no validation documents" in line and "its 1 went to training" in line) or (
        "no training documents" in line and "its 1 were all drawn for validation" in line), line
    (tmp_path / "empty.txt").write_text("")
    overrides = [f"data.paths=[{tmp_path / 'empty.txt'}]" if o.startswith("data.paths=") else o
                 for o in tiny_overrides]
    refused(invoke("train", *overrides, f"hydra.run.dir={tmp_path / 'run2'}"), "holds no text", logs=True)


def test_weights_of_another_model_are_not_called_corrupt(finished, tmp_path):
    import yaml

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["n_embd"] = 64
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    line = refused(invoke("eval-length", run, "--lengths", "16"), "do not match the run's config")
    assert "corrupt" not in line and "damaged" not in line


@pytest.mark.parametrize("args,expected", [
    (["--data", "text_files"], "--data text_files needs --paths FILE_OR_DIR"),
    (["--data", "text_files", "--paths", "{one}"], "raise --val-fraction"),
    (["--data", "stdlib", "--val-fraction", "1.5"], "--val-fraction must be in (0, 1)"),
])
def test_data_report_names_its_own_options(args, expected, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.txt").write_text("hello world " * 50)
    line = refused(invoke("data-report", *[a.format(one=tmp_path / "one") for a in args]), expected, logs=True)
    assert "data.paths" not in line and "data.val_fraction" not in line


def test_more_steps_for_a_finished_run_are_refused_naming_the_way(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = (run / "model.safetensors").read_bytes()
    for command in (["resume", run, "train.steps=8"], ["train", f"resume={run}", "train.steps=8"]):
        refused(invoke(*command), "has finished its 4 steps", f"ropebench train init_from={run}")
    assert (run / "model.safetensors").read_bytes() == before
    assert "already finished" in ok(invoke("resume", run, "train.steps=4")).stderr


def test_a_refused_sweep_job_is_counted_once(tiny_overrides, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["sweep", "compare", *tiny_overrides, "train.steps=2", "pe=choice(rope)", "seed=choice(0)",
            f"hydra.sweep.dir={sweep}", "launcher=sequential"]
    ok(invoke(*args))
    result = invoke(*[a for a in args if a != "train.steps=2"], "train.steps=2", "model.n_embd=64")
    assert result.exit_code == 1, result.output
    assert "0 finished, 1 failed" in result.output, result.output  # not also counted as the run that refused it
    assert sum("failed pe=rope,seed=0" in line for line in result.output.splitlines()) == 1
