"""Every bad input gets one clear line on stderr, a non-zero exit and no traceback; nothing written is lost."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ropebench.cli.app import app

runner = CliRunner()


def fails_cleanly(args, *expected):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and result.stderr.strip().endswith(lines[0]), result.stderr
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tiny_overrides, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bad") / "run"
    result = runner.invoke(app, ["train", *tiny_overrides, "train.steps=2", f"hydra.run.dir={run_dir}"])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.parametrize("override,expected", [
    ("pe=foo", ("unknown pe 'foo'", "alibi", "rope")),
    ("model=huge", ("unknown model 'huge'", "tiny")),
    ("data=imagenet", ("unknown data 'imagenet'", "stdlib")),
    ("model.n_layr=3", ("unknown config key 'model.n_layr'", "n_layer")),
    ("train.steps=many", ("train.steps=many",)),
    ("train.seq_len=0", ("train.seq_len must be a positive integer, got 0",)),
    ("model.n_head=3", ("n_head=3 must divide model.n_embd=32",)),
    ("data.paths=[/no/such/dir]", ("data path '/no/such/dir' does not exist",)),
    ("pe.rotary_dim=5", ("pe.rotary_dim must be even",)),
])
def test_train_bad_input(tiny_overrides, tmp_path, override, expected):
    fails_cleanly(["train", *tiny_overrides, override, f"hydra.run.dir={tmp_path / 'r'}"], *expected)


def test_data_dir_without_text(tiny_overrides, tmp_path):
    (tmp_path / "empty").mkdir()
    fails_cleanly(["train", *tiny_overrides, f"data.paths=[{tmp_path / 'empty'}]", f"hydra.run.dir={tmp_path / 'r'}"],
                  "holds no text files")
    assert not (tmp_path / "r").exists()


def test_unknown_sweep():
    fails_cleanly(["sweep", "everything"], "unknown sweep 'everything'", "compare")


def test_eval_missing_run(tmp_path):
    fails_cleanly(["eval-length", tmp_path / "nope"], "does not exist")


def test_eval_unfinished_run(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "unfinished"
    shutil.copytree(finished_run, copy)
    (copy / "final.json").unlink()
    fails_cleanly(["eval-length", copy], "unfinished")


def test_eval_corrupt_weights_keeps_earlier_results(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "corrupt"
    shutil.copytree(finished_run, copy)
    (copy / "eval_length.csv").write_text("pe,eval_len\nrope,16\n")
    (copy / "model.safetensors").write_bytes(b"not a safetensors file")
    fails_cleanly(["eval-length", copy], "corrupt")
    assert (copy / "eval_length.csv").read_text() == "pe,eval_len\nrope,16\n"


@pytest.mark.parametrize("args,expected", [
    (["--lengths", "0"], ("'0' is not a positive integer",)),
    (["--lengths", "64,abc"], ("'abc' is not a positive integer",)),
    (["--protocol", "diagonal"], ("unknown protocol 'diagonal'", "nonoverlapping, sliding")),
    (["--protocol", "sliding", "--stride", "64", "--lengths", "32"],
     ("stride 64 is larger than evaluation length 32",)),
    (["--rope-scaling", "magic"], ("unknown rope scaling 'magic'",)),
    (["--rope-scaling", "yarn", "--factor", "0.5"], ("factor must be",)),
    (["--rope-scaling", "yarn", "--beta-fast", "1", "--beta-slow", "2"], ("beta_fast > beta_slow",)),
])
def test_eval_bad_options(finished_run, args, expected):
    fails_cleanly(["eval-length", finished_run, *args], *expected)


def test_rope_scaling_on_a_run_without_rope(tiny_overrides, tmp_path):
    run_dir = tmp_path / "alibi"
    assert runner.invoke(app, ["train", *tiny_overrides, "pe=alibi", "train.steps=2",
                               f"hydra.run.dir={run_dir}"]).exit_code == 0
    fails_cleanly(["eval-length", run_dir, "--rope-scaling", "yarn"], "needs a RoPE-family run", "pe=alibi")


def test_length_with_no_long_enough_document_is_recorded(finished_run):
    result = runner.invoke(app, ["eval-length", str(finished_run), "--lengths", "16,100000000"])
    assert result.exit_code == 0, result.output
    text = (finished_run / "eval_length.csv").read_text()
    assert "no_document: no test document has 100000001 tokens" in text
    assert ",16,test,nonoverlapping," in text  # the length that could be evaluated is kept


def test_plot_bad_path(tmp_path):
    fails_cleanly(["plot", tmp_path / "missing"], "does not exist")


def test_bad_input_in_a_real_process_has_no_traceback():
    out = subprocess.run([sys.executable, "-m", "ropebench", "train", "pe=foo"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: unknown pe 'foo'") and "Traceback" not in out.stderr
