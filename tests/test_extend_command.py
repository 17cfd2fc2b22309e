"""`ropebench extend RUN --to L`: the extension sweep from any finished run -- its data, tokenizer and model --
every run evaluated on the same tokens, the report written; `sweep extend` is the same command on base runs."""

import csv

import pytest
import yaml
from typer.testing import CliRunner

from ropebench.cli.app import app
from tests.helpers import refused

runner = CliRunner()
# Fine-tuning kept tiny: the command's own settings (conf/train/finetune.yaml) with smaller batches.
FINE = ["train.batch_size=4", "train.warmup_steps=0", "train.eval_batches=2", "train.log_interval=1",
        "eval.max_tokens=256"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def base(tiny_overrides, tmp_path_factory):
    """A finished RoPE run at 16 tokens on the test corpus: text_files, not the default data."""
    run = tmp_path_factory.mktemp("extend_cmd") / "pe=rope,seed=0"  # a sweep job's name: '=' and ','
    result = invoke("train", *tiny_overrides, "pe=rope", f"hydra.run.dir='{run}'")
    assert result.exit_code == 0, result.output
    return run


def rows(run):
    with open(run / "eval_length.csv") as f:
        return [r for r in csv.DictReader(f) if r["status"] == "ok"]


def test_extend_a_run_with_two_methods_and_two_budgets(base, tmp_path):
    out = tmp_path / "ext"
    result = invoke("extend", base, "--to", "32", "--methods", "direct,yarn", "--steps", "0,2", "--lengths",
                    "16,32,64", "--out", out, *FINE)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == [f"extend={m},seed=0,train.steps={s}" for m in ("direct", "yarn") for s in (0, 2)]
    source = yaml.safe_load((base / "config.yaml").read_text())
    tokens = set()
    for name in names:
        cfg = yaml.safe_load((out / name / "config.yaml").read_text())
        assert cfg["data"]["paths"] == source["data"]["paths"] and cfg["model"] == source["model"]
        assert cfg["train"]["seq_len"] == 32 and cfg["init_from_seq_len"] == 16
        assert cfg["eval"]["lengths"] == [16, 32, 64] and cfg["eval"]["region_len"] == 64
        tokens |= {(r["eval_len"], r["n_tokens"]) for r in rows(out / name)}
    assert len(tokens) == 3  # every run scored the same number of tokens at each length: the same text
    yarn = yaml.safe_load((out / "extend=yarn,seed=0,train.steps=2" / "config.yaml").read_text())
    assert yarn["pe"]["scaling"]["type"] == "yarn" and yarn["pe"]["scaling"]["factor"] == 2.0
    table = (out / "extend.md").read_text()
    assert "| direct | 2 |" in table and "| YaRN | 0 |" in table and (out / "extend.png").is_file()


@pytest.mark.parametrize("args, expected", [
    (["--to", "16"], "--to 16 is not longer than"),
    (["--to", "32", "--methods", "yarn,bogus"], "unknown extension method 'bogus'; choose one of"),
    (["--to", "32", "--methods", "interpolate"], "method 'interpolate' does not extend"),
    (["--to", "32", "--steps", "0,-5"], "--steps '-5' is not an integer >= 0"),
    (["--to", "32", "train.steps=5"], "train.steps is set by ropebench extend itself (use --steps)"),
    (["--to", "32", "train.stepz=5"], "unknown config key 'train.stepz'"),
    (["--to", "32", "--lengths", "16,x"], "evaluation length 'x'"),
])
def test_bad_extension_requests_are_one_line_and_write_nothing(base, tmp_path, args, expected):
    out = tmp_path / "ext"
    refused(invoke("extend", base, *args, "--out", out), expected)
    assert not out.exists()


def test_a_run_that_does_not_exist_is_named(tmp_path):
    refused(invoke("extend", tmp_path / "nothing", "--to", "32"), "nothing")


def test_sweep_extend_is_the_command_on_base_runs(base, tmp_path):
    """Given its own init_from, `sweep extend` builds no base runs and extends that one with its recipe."""
    sweep = tmp_path / "sweep"
    result = invoke("sweep", "extend", f"init_from='{base}'", "train.seq_len=32", "extend=direct,linear",
                    "train.steps=0", "eval.lengths=[16,32]", *FINE, f"hydra.sweep.dir={sweep}")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [
        "extend=direct,seed=0,train.steps=0", "extend=linear,seed=0,train.steps=0"]
    assert "| PI | 0 |" in (sweep / "extend.md").read_text()
