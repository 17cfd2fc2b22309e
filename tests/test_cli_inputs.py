"""What `eval-length` and `passkey` accept as paths, and click's own refusals through `main()`:

* a sweep directory (and several paths): every finished run inside, one after another; one that fails neither
  stops the others nor loses their rows, and the last line names it;
* a path that does not exist: one line naming it;
* one local Hugging Face model named by a relative and an absolute path: one OUT, one model (its absolute path);
* usage errors (unknown command or option, missing argument): one line, exit code 2.
"""

import csv
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import refused
from typer.testing import CliRunner

from ropebench.cli.app import app, main

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tiny_overrides, tmp_path_factory):
    """A sweep directory as `ropebench sweep` leaves it: one finished run directory per job, named by the job."""
    root = tmp_path_factory.mktemp("sweeps") / "compare"
    for pe in ("alibi", "rope"):
        ok(invoke("train", *tiny_overrides, f"pe={pe}", "train.steps=2", f'hydra.run.dir="{root}/pe={pe}"'))
    return root


def copy_of(sweep, tmp_path):
    target = tmp_path / "sweep"
    shutil.copytree(sweep, target, ignore=shutil.ignore_patterns("*.csv"))
    return target


def test_eval_length_and_passkey_evaluate_every_run_of_a_sweep(sweep, tmp_path):
    swept = copy_of(sweep, tmp_path)
    result = ok(invoke("eval-length", swept, "--lengths", "16,32"))
    runs = [swept / "pe=alibi", swept / "pe=rope"]
    assert result.stdout.split() == [str(run / "eval_length.csv") for run in runs]
    for run in runs:
        assert [(r["eval_len"], r["status"]) for r in rows(run / "eval_length.csv")] == [("16", "ok"), ("32", "ok")]
    ok(invoke("passkey", swept, "--lengths", "64", "--depths", "0.5", "--trials", "2"))
    assert all(len(rows(run / "passkey.csv")) == 1 for run in runs)
    # Several paths, a run named twice (directly and through its sweep): evaluated once.
    result = ok(invoke("eval-length", runs[1], swept, "--lengths", "24"))
    assert result.stdout.split() == [str(run / "eval_length.csv") for run in (runs[1], runs[0])]


def test_one_failed_run_does_not_stop_the_others(sweep, tmp_path):
    swept = copy_of(sweep, tmp_path)
    (swept / "pe=alibi" / "model.safetensors").write_bytes(b"not weights")  # evaluated first, and fails
    unfinished = swept / "pe=nope"
    unfinished.mkdir()
    shutil.copy(swept / "pe=rope" / "config.yaml", unfinished)
    line = refused(invoke("eval-length", swept, "--lengths", "16"), "1 of 2 runs failed", "pe=alibi", logs=True)
    assert "pe=rope" not in line
    assert [r["status"] for r in rows(swept / "pe=rope" / "eval_length.csv")] == ["ok"]
    assert not (swept / "pe=alibi" / "eval_length.csv").exists() and not (unfinished / "eval_length.csv").exists()


@pytest.mark.parametrize("args, expected", [
    (["--protocol", "slidng"], "unknown protocol 'slidng'"),  # checked once, not once per run
    (["--out", "results"], "--out applies to a Hugging Face model; '{sweep}' is not one"),
])
def test_a_bad_option_on_a_sweep_is_one_line(sweep, tmp_path, args, expected):
    swept = copy_of(sweep, tmp_path)
    refused(invoke("eval-length", swept, *args), expected.format(sweep=swept))
    assert not list(swept.rglob("*.csv"))


@pytest.mark.parametrize("command", ["eval-length", "passkey"])
@pytest.mark.parametrize("path", ["runs/nonexistent", "./owner/name", "{tmp}/missing", "nowhere"])
def test_a_local_path_that_does_not_exist_is_named(tmp_path, monkeypatch, command, path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # so runs/nonexistent can only be a mistyped local path
    path = path.format(tmp=tmp_path)
    line = refused(invoke(command, path), f"'{path}' does not exist", "run directory", "sweep directory")
    assert "--out" not in line


@pytest.mark.parametrize("command", ["eval-length", "passkey"])
def test_a_hub_id_without_out_is_named(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)  # no runs/ here: runs/nonexistent may be a Hub id
    refused(invoke(command, "runs/nonexistent"), "'runs/nonexistent' is not a run directory, a sweep directory or "
            "a local model here", "Hub id needs --out DIR")


def test_one_local_model_by_relative_and_absolute_path_is_one_model(sweep, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    ok(invoke("export-hf", sweep / "pe=rope", "hf/rope"))
    ok(invoke("eval-length", "hf/rope", "--out", "results-hf", "--lengths", "16"))
    model, out = str((tmp_path / "hf" / "rope").resolve()), tmp_path / "results-hf"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["hf"]["model"] == config["data"]["tokenizer"] == model  # stored absolute
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    ok(invoke("eval-length", model, "--out", out, "--lengths", "32"))
    assert [(r["eval_len"], r["model"], r["tokenizer"]) for r in rows(out / "eval_length.csv")] == [
        ("16", model, model), ("32", model, model)]
    assert config["pe"]["name"] == "rope"  # the label: the directory's name, however the path was written


def test_an_out_written_with_a_relative_model_path_accepts_the_same_model(sweep, tmp_path, monkeypatch):
    """An OUT from before models were stored by absolute path holds the path as typed, relative to OUT's parent."""
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    ok(invoke("export-hf", sweep / "pe=rope", "hf/rope"))
    out = tmp_path / "results-hf"
    ok(invoke("eval-length", "hf/rope", "--out", out, "--lengths", "16"))
    text = (out / "config.yaml").read_text().replace(str((tmp_path / "hf" / "rope").resolve()), "hf/rope")
    assert "model: hf/rope" in text
    (out / "config.yaml").write_text(text)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    ok(invoke("eval-length", tmp_path / "hf" / "rope", "--out", out, "--lengths", "32"))
    shutil.copytree(tmp_path / "hf" / "rope", tmp_path / "hf" / "copy")  # the same weights, another model path
    refused(invoke("eval-length", tmp_path / "hf" / "copy", "--out", out, "--lengths", "32"), "hf.model")


@pytest.mark.parametrize("args, expected", [
    (["trian", "pe=rope"], "error: No such command 'trian'"),
    (["eval-length", "runs/x", "--lenghts", "64"], "error: No such option: --lenghts"),
    (["eval-length"], "error: Missing argument"),
    (["passkey", "runs/x", "--trials", "many"], "--trials"),
])
def test_a_usage_error_is_one_line(capsys, args, expected):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert "--help" in err  # where the usage is described


def test_help_and_version_are_unchanged(capsys):
    for args in (["--help"], ["eval-length", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 0
    out, err = capsys.readouterr()
    words = " ".join(out.replace("│", " ").split())  # the help's box wraps where its columns fall
    assert "Usage" in out and "0 scores every" in words and "ropebench " in out and err == ""


def test_the_installed_program_prints_one_line():
    out = subprocess.run([sys.executable, "-m", "ropebench", "trian"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: No such command 'trian'.")
    assert out.stderr.endswith("(ropebench --help lists the commands)\n")


def test_an_error_raised_inside_the_progress_bar_is_the_only_line(sweep, tmp_path):
    """The scaling is refused while the evaluation's bar is up; off a terminal rich would end that (empty) bar
    with a blank line, so the error would be the second of two lines."""
    run = copy_of(sweep, tmp_path) / "pe=rope"
    result = invoke("eval-length", run, "--lengths", "32", "--rope-scaling", "longrope", "--short-factor", "1,2",
                    "--long-factor", "1")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: rope_scaling.short_factor needs") and result.stderr.count("\n") == 1
