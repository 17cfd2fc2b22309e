"""Only seeds of one experiment are averaged: series are the whole config minus the seed, and labels name every
key that tells series apart (never cut short); the user may rename them."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.errors import UserError
from ropebench.report.identity import Renames, identity
from ropebench.report.results import aggregate, load_results, select
from ropebench.report.table import perplexity_table
from tests.helpers import refused

LENGTHS = (64, 128)


def make_run(path: Path, ppl: float, *, seed: int = 0, **keys) -> Path:
    """A finished-looking run: its config (dotted ``keys`` override a small default one) and eval_length.csv."""
    cfg = OmegaConf.create({"model": {"name": "tiny", "n_layer": 2}, "pe": {"name": "rope", "base": 10000.0},
                            "train": {"seq_len": 64, "steps": 100, "lr": 0.001, "device": "cpu"}, "seed": seed,
                            "logger": {"wandb": {"mode": "disabled"}}, "eval": {"max_tokens": 512}})
    for key, value in keys.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    path.mkdir(parents=True)
    OmegaConf.save(cfg, path / "config.yaml")
    with open(path / "eval_length.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["pe", "train_seq_len", "eval_len", "protocol", "stride", "rope_scaling",
                                               "ppl", "nll", "n_tokens", "status"])
        writer.writeheader()
        writer.writerows({"pe": cfg.pe.name, "train_seq_len": cfg.train.seq_len, "eval_len": n,
                          "protocol": "nonoverlapping", "stride": n, "rope_scaling": "none", "ppl": ppl * (1 + i),
                          "nll": math.log(ppl * (1 + i)), "n_tokens": 1024, "status": "ok"}
                         for i, n in enumerate(LENGTHS))
    return path


def series_of(paths, renames=None) -> dict:
    return {s.label: s for s in aggregate(select(load_results(paths, renames=renames), "nonoverlapping"))}


def test_runs_differing_only_in_the_fourth_distinguishing_key_are_not_averaged(tmp_path: Path):
    """The bug: a 0-step and a 100-step fine-tune of one seed got one label (three keys shown, then "…") and were
    averaged as two seeds. Here train.steps is the fourth of four keys that differ between the runs."""
    make_run(tmp_path / "zero", 10.0, train__steps=0)
    make_run(tmp_path / "hundred", 20.0, train__steps=100)
    make_run(tmp_path / "other", 30.0, model__n_layer=4, train__lr=0.002, train__seq_len=128)
    series = series_of([tmp_path])
    assert len(series) == 3 and all(s.points[64].n == 1 for s in series.values())
    assert sorted(s.points[64].mean for s in series.values()) == [10.0, 20.0, 30.0]
    zero = next(label for label, s in series.items() if s.points[64].mean == 10.0)
    assert "steps=0" in zero and "…" not in zero
    for key in ("L=64", "n_layer=2", "lr=0.001"):
        assert key in zero
    table = perplexity_table([tmp_path])
    assert "±" not in table and table.count("\n| rope") == 3


def test_seeds_of_one_experiment_are_averaged_whatever_the_bookkeeping(tmp_path: Path):
    make_run(tmp_path / "s0", 10.0, seed=0)
    make_run(tmp_path / "s1", 12.0, seed=1, train__device="cuda", logger__wandb__mode="offline",
             eval__max_tokens=0, sweep_name="mine", train__lr=1e-3)  # lr 0.001 written another way
    make_run(tmp_path / "s2", 14.0, seed=2, train__lr=1)  # another experiment: must not join
    series = series_of([tmp_path])
    assert len(series) == 2
    pair = next(s for s in series.values() if s.points[64].n == 2)
    assert pair.points[64].mean == 11.0 and pair.seeds == [0, 1]


def test_a_key_only_one_run_has_still_tells_them_apart(tmp_path: Path):
    """A key missing from one config (another encoding version, a hand-written config) is a difference too."""
    make_run(tmp_path / "old", 10.0)
    make_run(tmp_path / "new", 20.0, pe__rotate_values=True)
    series = series_of([tmp_path])
    assert sorted(series) == ["rope (rotate_values=True)", "rope (rotate_values=unset)"]
    # A key of the schema that an older config lacks reads as its default: not a difference.
    assert identity({"train.pose_target_len": 0, "seed": 1}) == identity({"seed": 2})
    assert identity({"train.pose_target_len": 256}) != identity({})


def test_rename_series_by_label_or_run_directory(tmp_path: Path):
    make_run(tmp_path / "zero", 10.0, train__steps=0)
    make_run(tmp_path / "hundred", 20.0, train__steps=100)
    renames = Renames.parse(["rope (steps=0)=before", f"{tmp_path / 'hundred'}=after"])
    assert sorted(series_of([tmp_path], renames)) == ["after", "before"]
    file = tmp_path / "labels.yaml"
    file.write_text("'rope (steps=100)': fine-tuned 100 steps\n")
    assert "fine-tuned 100 steps" in series_of([tmp_path], Renames.parse(None, file))
    with pytest.raises(UserError, match=r"names no series here; give a label as printed \(rope \(steps=0\); rope"):
        series_of([tmp_path], Renames.parse(["rope (steps=5)=x"]))
    with pytest.raises(UserError, match="two series the name 'x'"):
        series_of([tmp_path], Renames.parse(["rope (steps=0)=x", "rope (steps=100)=x"]))
    for bad in ("nothing", "=x", "rope="):
        with pytest.raises(UserError, match="is not KEY=NAME"):
            Renames.parse([bad])


def test_label_options_on_the_command_line(tmp_path: Path):
    runs = tmp_path / "runs"
    make_run(runs / "zero", 10.0, train__steps=0)
    make_run(runs / "hundred", 20.0, train__steps=100)
    cli = CliRunner()
    table = cli.invoke(app, ["table", str(runs), "--label", "rope (steps=0)=step 0"])
    assert table.exit_code == 0, table.output
    assert "| step 0 |" in table.stdout and "| rope (steps=100) |" in table.stdout
    out = tmp_path / "figs" / "f.png"
    bad = cli.invoke(app, ["plot", str(runs), "--out", str(out), "--label", "rope (steps=7)=x"])
    refused(bad, "--label 'rope (steps=7)' names no series")
    assert not out.parent.exists()  # nothing written, not even the directory
    bad = cli.invoke(app, ["table", str(runs), "--labels", str(tmp_path / "none.yaml")])
    refused(bad, "none.yaml': cannot read it")


def test_a_copied_run_is_refused_not_counted_as_a_second_seed(tmp_path: Path):
    """The bug: `cp -r run copy` (or one model evaluated into two places) made `table` report n=2 with a spread
    of zero. Same experiment, same seed, two directories: refused, naming both."""
    make_run(tmp_path / "run", 10.0, seed=0)
    make_run(tmp_path / "copy", 10.0, seed=0)
    make_run(tmp_path / "s1", 12.0, seed=1)
    with pytest.raises(UserError, match=r"'.*(run|copy)' and '.*(run|copy)' are the same experiment with seed 0"):
        series_of([tmp_path])
    refused(CliRunner().invoke(app, ["table", str(tmp_path)]), "pass only one of them")
    (pair,) = series_of([tmp_path / "run", tmp_path / "s1"]).values()
    assert pair.points[64].n == 2 and pair.seeds == [0, 1]  # distinct seeds: averaged


def test_runs_named_by_a_label_are_told_apart_only_among_their_namesakes(tmp_path: Path):
    """conf/method/ runs: a method's label says what sets it apart (model.layers here), so its label holds only the
    keys that differ between runs of that label (the training length), not the setup keys that differ between
    the methods."""
    for L in (64, 128):
        make_run(tmp_path / f"irope{L}", 10.0 + L, label="irope", model__layers=["rope", "nope"], train__seq_len=L)
        make_run(tmp_path / f"rope{L}", 20.0 + L, train__seq_len=L)
    make_run(tmp_path / "ssmax", 30.0, label="ssmax", model__logit_scale="ssmax")
    labels = set(series_of([tmp_path]))
    assert {"irope (L=64)", "irope (L=128)", "ssmax"} <= labels
    # An unlabelled run is named by every setup key that differs between the series shown, as always.
    assert {label for label in labels if label.startswith("rope")} == {"rope (L=64, layers=[], logit_scale=none)",
                                                                     "rope (L=128, layers=[], logit_scale=none)"}
