"""Fair baselines: the encoding's own parameters train in their own group (pe.lr_mult, pe.weight_decay), a
multiplier of 1 is today's training bit for bit, evaluation reports the test split, and bad values are one line."""

from pathlib import Path

import pytest
import torch
from helpers import refused, tiny_model
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.core.pe import registry
from ropebench.run.config import TrainConfig
from ropebench.run.trainer import make_optimizer

runner = CliRunner()
PARAMETRIC = sorted(n for n in registry() if list(tiny_model(n).pe.parameters()))


def test_the_parametric_encodings_are_the_ones_with_tables():
    assert {"t5", "kerple", "fire", "learned"} <= set(PARAMETRIC) and "rope" not in PARAMETRIC


@pytest.mark.parametrize("name", PARAMETRIC)
def test_lr_mult_puts_exactly_the_encodings_parameters_in_their_own_group(name):
    model = tiny_model(name, lr_mult=7.0, weight_decay=0.3)
    opt = make_optimizer(model, TrainConfig(), torch.device("cpu"))
    own = [g for g in opt.param_groups if g["lr_mult"] == 7.0]
    assert {id(p) for g in own for p in g["params"]} == {id(p) for p in model.pe.parameters()}
    assert all(g["weight_decay"] == 0.3 for g in own)
    rest = [p for g in opt.param_groups if g["lr_mult"] == 1.0 for p in g["params"]]
    assert len(rest) + sum(len(g["params"]) for g in own) == len(list(model.parameters()))


@pytest.mark.parametrize("name", PARAMETRIC)
def test_null_weight_decay_follows_the_models_rule(name):
    model = tiny_model(name, lr_mult=2.0)
    opt = make_optimizer(model, TrainConfig(weight_decay=0.25), torch.device("cpu"))
    for group in (g for g in opt.param_groups if g["lr_mult"] == 2.0):
        assert group["weight_decay"] == (0.25 if group["params"][0].dim() >= 2 else 0.0)
        assert len({p.dim() >= 2 for p in group["params"]}) == 1


@pytest.mark.parametrize("name", ["t5", "fire", "learned"])
def test_lr_mult_one_is_the_old_two_group_training_bit_for_bit(name):
    """The optimizer before encodings had a group of their own: matrices decayed, vectors not."""
    t = TrainConfig()
    new, old = tiny_model(name), tiny_model(name)
    groups = [{"params": [p for p in old.parameters() if p.dim() >= 2], "weight_decay": t.weight_decay},
              {"params": [p for p in old.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    opt_old = torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=True)
    opt_new = make_optimizer(new, t, torch.device("cpu"))
    assert len(opt_new.param_groups) > 2  # the encoding's group does exist
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        for a, b in zip(old.parameters(), new.parameters()):
            a.grad = torch.randn(a.shape, generator=gen)
            b.grad = a.grad.clone()
        for opt in (opt_old, opt_new):
            for g in opt.param_groups:
                g["lr"] = t.lr * (step + 1) / 4 * g.get("lr_mult", 1.0)
            opt.step()
    for a, b in zip(old.parameters(), new.parameters()):
        assert torch.equal(a, b)


def _train(tiny_overrides, tmp_path: Path, *extra: str):
    result = runner.invoke(app, ["train", *tiny_overrides, "pe=t5", "train.steps=1", "train.log_interval=1",
                                 "train.eval_interval=1", "train.ckpt_interval=1", f"hydra.run.dir={tmp_path}",
                                 *extra])
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    return load_file(str(tmp_path / "model.safetensors"))["pe.relative_bias.weight"]


def test_training_applies_the_multiplier_to_the_encodings_learning_rate(tiny_overrides, tmp_path):
    """Adam's first step moves every parameter with a gradient by about its learning rate: the T5 table (from
    zero, no decay to speak of) by lr_at(0) = 2e-3 / 2 warmup steps, times the multiplier."""
    plain = _train(tiny_overrides, tmp_path / "a", "pe.lr_mult=1")  # conf/pe/t5.yaml's own multiple is 300
    fast = _train(tiny_overrides, tmp_path / "b", "pe.lr_mult=10")
    moved = plain != 0
    assert moved.any() and torch.equal(moved, fast != 0)
    # Adam's step is lr * g / (|g| + eps): lr itself unless the gradient is as small as eps.
    assert plain.abs().max() == pytest.approx(1e-3, rel=1e-4) and fast.abs().max() == pytest.approx(1e-2, rel=1e-4)
    full = plain.abs() > 0.99e-3
    assert full.sum() > moved.sum() / 2 and torch.allclose(fast[full], 10 * plain[full], rtol=1e-3)


@pytest.mark.parametrize("override,expected", [
    ("pe.lr_mult=0", "pe.lr_mult must be a positive number"),
    ("pe.lr_mult=-2", "pe.lr_mult must be a positive number"),
    ("pe.lr_mult=nan", "pe.lr_mult must be a positive number"),
    ("pe.weight_decay=-0.1", "pe.weight_decay must be >= 0"),
    ("data.test_fraction=0", "data.test_fraction must be in (0, 1), got 0"),
    ("data.test_fraction=1.5", "data.test_fraction must be in (0, 1), got 1.5"),
    ("data.test_fraction=0.95", "data.val_fraction + data.test_fraction must be below 1"),
    ("eval.split=train", "eval.split"),
    ("eval.crop_stride=-1", "eval.crop_stride must be >= 0"),
    ("eval.crop_sample=0", "eval.crop_sample must be >= 1"),
])
def test_bad_fairness_settings_are_one_line(tiny_overrides, tmp_path, override, expected):
    result = runner.invoke(app, ["train", *tiny_overrides, "pe=t5", override, f"hydra.run.dir={tmp_path / 'r'}"])
    refused(result, expected)
    assert not (tmp_path / "r").exists()


def test_a_split_left_empty_is_one_line(tmp_path):
    for k in range(3):
        (tmp_path / f"f{k}.txt").write_text("some text " * 200)
    result = runner.invoke(app, ["train", "data=text_files", f"data.paths=[{tmp_path}]", "data.val_fraction=0.5",
                                 "data.test_fraction=0.01", f"hydra.run.dir={tmp_path / 'r'}", "train.steps=1"])
    refused(result, "has no", "documents", logs=True)
    assert not (tmp_path / "r").exists()


def test_evaluation_reports_test_and_validation_apart(tiny_overrides, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", *tiny_overrides, "pe=rope", f"hydra.run.dir={run}"])
    assert result.exit_code == 0, result.output
    for split in ("test", "val"):
        result = runner.invoke(app, ["eval-length", str(run), "--lengths", "16,32", "--split", split])
        assert result.exit_code == 0, result.output
    import csv

    rows = list(csv.DictReader(open(run / "eval_length.csv")))
    assert sorted((r["split"], r["eval_len"]) for r in rows) == [("test", "16"), ("test", "32"), ("val", "16"),
                                                                 ("val", "32")]
    by = {(r["split"], r["eval_len"]): r for r in rows}
    assert by[("test", "16")]["ppl"] != by[("val", "16")]["ppl"]  # other documents, another number
    assert by[("test", "32")]["nll_gain"] != "" and by[("test", "16")]["nll_gain"] == "0.0"
    table = runner.invoke(app, ["table", str(run)])
    assert table.exit_code == 0 and by[("test", "16")]["ppl"][:4] in table.stdout
    refused(runner.invoke(app, ["eval-length", str(run), "--split", "train"]), "train", "test, val")
    refused(runner.invoke(app, ["eval-length", str(run), "--crop-sample", "0"]), "crop sample", "got 0")
