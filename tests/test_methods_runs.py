"""The methods through the command line: DroPE trains as RoPE until its drop step, then fits and records its
logit scale, which evaluation applies by default; `--logit-scale` writes its own rows; bad input is one line,
exit 2, nothing written; `bench train` times methods against RoPE."""

import json
import math

import pytest
import torch
from helpers import refused
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.run.artifacts import load_model
from ropebench.run.drope import C_GRID, fit_logit_scale
from ropebench.run.rundir import RunDir

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def train(overrides, run_dir, *extra):
    result = invoke("train", *overrides, *extra, f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    return run_dir


def losses(run_dir):
    return {r["step"]: r["train_loss"] for r in RunDir(run_dir).read_metrics()}


@pytest.fixture(scope="module")
def runs(tiny_overrides, tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    return {"rope": train(tiny_overrides, root / "rope", "pe=rope"),
            "drope": train(tiny_overrides, root / "drope", "pe=rope", "train.drop_rope_at=0.5"),
            "ssmax": train(tiny_overrides, root / "ssmax", "model.logit_scale=ssmax", "train.steps=2")}


def test_drope_is_rope_until_its_drop_step_then_not(runs):
    rope, drope = losses(runs["rope"]), losses(runs["drope"])
    assert drope[2] == rope[2]  # 6 steps, dropped at step 3: bitwise the same run before it
    assert drope[4] != rope[4] and drope[6] != rope[6]


def test_a_resumed_drope_run_drops_rope_again(runs, tiny_overrides, tmp_path):
    """Interrupted after its drop step (a real SIGINT after step 4 of 6), a DroPE run resumes without RoPE: its
    losses and fitted scale are the uninterrupted run's (resuming is bitwise on the CPU)."""
    import os
    import signal

    from ropebench.run.trainer import Trainer

    run, original = tmp_path / "drope", Trainer.train_step

    def train_step(self, step_fn):
        loss = original(self, step_fn)
        if self.step == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "train_step", train_step)
        result = invoke("train", *tiny_overrides, "pe=rope", "train.drop_rope_at=0.5", f"hydra.run.dir={run}")
    assert result.exit_code == 130, result.output
    assert invoke("resume", run).exit_code == 0
    assert losses(run) == losses(runs["drope"])
    assert RunDir(run).read_final()["logit_scale"] == RunDir(runs["drope"]).read_final()["logit_scale"]


def test_drope_fits_c_on_validation_text_and_records_it(runs):
    run = RunDir(runs["drope"])
    fitted = run.read_final()["logit_scale"]
    assert fitted["type"] == "beta" and fitted["c"] in C_GRID and fitted["fit_len"] == 4 * 16
    model = load_model(run, run.read_config())
    assert model.rope_dropped
    from ropebench.data import load_corpus

    corpus = load_corpus(run.read_config().data, log=lambda *a: None)
    # The recorded c is the grid's best: refitting the saved model finds it again, and no grid value does better.
    again = fit_logit_scale(model, corpus.val, 16, torch.device("cpu"), torch.autocast("cpu", enabled=False),
                            log=lambda *a: None)
    assert again == fitted and math.isfinite(fitted["fit_nll"])


def test_evaluation_applies_the_runs_logit_scale_and_records_it(runs):
    drope = runs["drope"]
    assert invoke("eval-length", drope, "--lengths", "16,32").exit_code == 0
    result = invoke("eval-length", drope, "--lengths", "16,32", "--logit-scale", "none")
    assert result.exit_code == 0, result.output
    rows = RunDir(drope).read_rows("eval_length.csv")
    c = RunDir(drope).read_final()["logit_scale"]["c"]
    assert sorted((r["logit_scale"], r["eval_len"]) for r in rows) == sorted(
        [(f"beta(c={c:g})", "16"), (f"beta(c={c:g})", "32"), ("none", "16"), ("none", "32")])
    # Scale 1 at the training length, whatever c: the two rows at 16 agree.
    at16 = [r["ppl"] for r in rows if r["eval_len"] == "16"]
    assert at16[0] == at16[1]


def test_logn_rows_sit_beside_the_plain_ones(runs):
    rope = runs["rope"]
    for scale in ("logn", "none"):
        assert invoke("eval-length", rope, "--lengths", "16,48", "--logit-scale", scale).exit_code == 0
    rows = {(r["logit_scale"], r["eval_len"]): float(r["ppl"]) for r in RunDir(rope).read_rows("eval_length.csv")}
    assert rows[("logn", "16")] == rows[("none", "16")] and rows[("logn", "48")] != rows[("none", "48")]
    positions = RunDir(rope).read_rows("eval_positions.csv")
    assert {r["logit_scale"] for r in positions} == {"logn", "none"}


def test_a_results_file_from_before_the_column_keeps_its_rows(runs, tmp_path):
    import shutil

    run = tmp_path / "old"
    shutil.copytree(runs["rope"], run)
    path = run / "eval_length.csv"
    header = ("pe,train_seq_len,eval_len,protocol,stride,rope_scaling,rope_factor,rope_scale,ppl,nll,n_tokens,"
              "n_windows,n_documents,status,tokenizer,model\n")
    path.write_text(header + "rope,16,16,nonoverlapping,16,none,,,9.5,2.25,512,32,2,ok,bytes,\n")
    assert invoke("eval-length", run, "--lengths", "32").exit_code == 0
    rows = RunDir(run).read_rows("eval_length.csv")
    # The old row is rewritten with what it meant: no logit scale, and validation documents (from before the
    # test split too).
    assert [(r["eval_len"], r["split"], r["logit_scale"], r["ppl"]) for r in rows if r["eval_len"] == "16"] == [
        ("16", "val", "none", "9.5")]
    assert len(rows) == 2
    # The same cell evaluated again replaces the old row, no duplicate.
    assert invoke("eval-length", run, "--lengths", "16", "--split", "val").exit_code == 0
    rows = RunDir(run).read_rows("eval_length.csv")
    assert sorted(r["eval_len"] for r in rows) == ["16", "32"]
    assert [r["ppl"] for r in rows if r["eval_len"] == "16"] != ["9.5"]


@pytest.mark.parametrize("override,expected", [
    ("pe=p_rope pe.p=1.5", "pe.p must be in [0, 1]"),
    ("model.layers=[rope,foo]", "unknown encoding 'foo' in model.layers"),
    ("model.layers=[rope,nope,nope]", "does not divide model.n_layer=1"),
    ("model.windows=[0]", "model.windows entries must be positive integers"),
    ("train.drop_rope_at=1.0", "train.drop_rope_at must be in (0, 1)"),
    ("train.drop_rope_at=0", "train.drop_rope_at must be in (0, 1)"),
    ("pe=alibi train.drop_rope_at=0.5", "pe=alibi with model.layers=[alibi] has none"),
    ("model.logit_scale=llama4", "model.logit_scale=llama4 scales the queries of NoPE layers"),
    ("model.logit_scale=hot", "model.logit_scale"),
    # NoPE layers pass position ids to the layers that take them, but a pattern with none that does is refused
    ("pe=fox model.n_layer=2 model.layers=[nope,fox] train.random_positions=64",
     "model.layers=[nope,fox] does not"),
    ("pe=learned model.n_layer=2 model.layers=[learned,nope] pe.max_len=32 train.random_positions=64",
     "model.layers=[learned,nope] stops at max_len=32"),
])
def test_bad_method_settings_are_one_line_and_write_nothing(tiny_overrides, tmp_path, override, expected):
    refused(invoke("train", *tiny_overrides, *override.split(), f"hydra.run.dir={tmp_path / 'r'}"), expected)
    assert not (tmp_path / "r").exists()


def test_a_logit_scale_the_model_cannot_take_is_refused(runs):
    before = (runs["ssmax"] / "eval_length.csv").exists()
    refused(invoke("eval-length", runs["ssmax"], "--lengths", "32", "--logit-scale", "logn"),
            "trained with model.logit_scale=ssmax", "no --logit-scale logn")
    assert (runs["ssmax"] / "eval_length.csv").exists() == before
    refused(invoke("eval-length", runs["drope"], "--lengths", "32", "--rope-scaling", "yarn"), "RoPE dropped")
    refused(invoke("passkey", runs["rope"], "--lengths", "32", "--logit-scale", "hot"), "unknown --logit-scale 'hot'")


def test_bench_train_times_methods_against_rope():
    from ropebench.bench.train_bench import bench_train

    result = bench_train(encodings=["rope", "irope"], model="tiny", batch_size=1, seq_len=4, steps=1,
                         warmup=0, device="cpu", echo=lambda *a: None, rounds=2, cpu_time=True)
    rows = {r["encoding"]: r for r in result["rows"]}
    assert rows["rope"]["ratio_to_rope"] == 1.0 and rows["irope"]["ratio_to_rope"] > 0
    assert rows["irope"]["ratio_to_nope"] is None and result["rounds"] == 2 and result["cpu_time"]
    refused(invoke("bench", "train", "--device", "cpu", "--encodings", "rope,irope2"), "irope2", "rnope_swa")


def test_the_methods_sweep_trains_and_evaluates_by_name(tiny_overrides, tmp_path):
    """conf/sweep/methods.yaml, cut to two methods and two steps: every run finishes and is evaluated."""
    sweep_dir = tmp_path / "sweep"
    result = invoke("sweep", "methods", *tiny_overrides, "model.n_layer=4", "train.steps=2", "method=irope,drope",
                    f"hydra.sweep.dir={sweep_dir}")
    assert result.exit_code == 0, result.output
    finals = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/final.json")}
    assert sorted(finals) == ["method=drope", "method=irope"]
    assert "logit_scale" in finals["method=drope"]
    assert all((sweep_dir / name / "eval_length.csv").is_file() for name in finals)
    # every method at the rate the committed runs trained at (conf/sweep/methods.yaml), whatever the encoding
    assert {RunDir(sweep_dir / name).read_config().train.lr for name in finals} == {0.004}
    rows = [line.split("|")[1].strip() for line in (sweep_dir / "table.md").read_text().splitlines()[2:]]
    c = finals["method=drope"]["logit_scale"]["c"]
    assert sorted(rows) == sorted(["irope", f"drope+beta(c={c:g})"])  # named by their labels, nothing more


def test_logit_scale_is_an_option_of_the_evaluations_that_apply_it():
    """eval-length and passkey record it in a column; the retrieval probes' table has none, so `probe` does not
    take it (it evaluates a run as trained: a DroPE run with its fitted scale)."""
    for command, takes_it in (("eval-length", True), ("passkey", True), ("probe", False)):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and ("--logit-scale" in result.output) == takes_it, command


def test_drope_trains_on_random_positions_past_its_drop_step(tiny_overrides, tmp_path):
    """After the drop no layer reads the ids the batches still carry: training goes on to its last step."""
    run = train(tiny_overrides, tmp_path / "r", "pe=rope", "train.random_positions=64", "train.drop_rope_at=0.5")
    final = json.loads((run / "final.json").read_text())
    assert final["steps"] == 6 and final["status"] == "finished" and max(losses(run)) == 6


def test_a_hybrid_pattern_with_nope_layers_trains_on_random_positions(tiny_overrides, tmp_path):
    """iRoPE-style [rope, nope] takes randomized positions: the RoPE layers read them, the NoPE layers read none."""
    from ropebench.core.model import GPT
    from ropebench.core.pe import default_config
    from ropebench.run.config import ModelConfig

    run = train(tiny_overrides, tmp_path / "r", "model.n_layer=2", "model.layers=[rope,nope]",
                "train.random_positions=64")
    assert RunDir(run).read_metrics()
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(ModelConfig(n_layer=2, n_head=2, n_embd=16, layers=["rope", "nope"]))
    model = GPT(cfg, OmegaConf.structured(default_config("rope")), vocab_size=32, train_seq_len=8).eval()
    idx = torch.randint(0, 32, (2, 8))
    spread = torch.tensor([[0, 3, 4, 9, 20, 21, 30, 40], [1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        plain, shifted, spread_out = (model(idx, pos=p)[0] for p in (None, torch.arange(8)[None].expand(2, 8) + 5,
                                                                     spread))
    torch.testing.assert_close(shifted, plain, rtol=1e-5, atol=1e-5)  # RoPE reads distances only
    assert not torch.allclose(spread_out[0], plain[0], atol=1e-4)  # other distances: the RoPE layer sees them
