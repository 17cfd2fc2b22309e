"""`ropebench eval-task` and the task runs end to end: greedy exact match against a hand-decoded model, statuses,
resume, randomized positions in training, table/plot, the sweep's windows, and bad input (one line, exit 2,
nothing written)."""

import csv
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import refused
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.data import load_corpus, tasks
from ropebench.eval.task import _bucket_rng, task_accuracy
from ropebench.report.results import Point
from ropebench.report.tasks import LEARNED, TaskSeries, learned_by_all, mean_ranks
from ropebench.run.artifacts import load_model
from ropebench.run.rundir import RunDir

runner = CliRunner()
# copy with L = 2: a 6-token window, and a 1-layer model that learns part of it in a few seconds.
TINY = ["data=task", "data.task=copy", "data.task_len=2", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
        "train.seq_len=6", "train.steps=150", "train.batch_size=32", "train.lr=1e-2", "train.warmup_steps=10",
        "train.log_interval=50", "train.eval_interval=150", "train.eval_batches=1", "train.ckpt_interval=150",
        "train.threads=1"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("task_runs")
    out = {}
    # Only the RoPE run must learn something (the hand-decoding test); the others show statuses and shapes.
    for name, extra in (("rope", ["pe=rope"]), ("learned", ["pe=learned", "train.steps=4"]),
                        ("random_learned", ["pe=learned", "train.random_positions=16", "train.steps=4"])):
        result = invoke("train", *TINY, *extra, f"hydra.run.dir={root / name}")
        assert result.exit_code == 0, result.output
        out[name] = root / name
    return out


@pytest.fixture
def run(runs, tmp_path):
    def copy(name):
        target = tmp_path / name
        shutil.copytree(runs[name], target, ignore=shutil.ignore_patterns("*.csv"))
        return target
    return copy


def hand_decoded(model, instance) -> tuple[bool, int, int]:
    """(all answer tokens right, answer tokens right, answer tokens): one instance, one token at a time."""
    ids = list(instance.tokens)
    for p, is_answer in enumerate(instance.answer):
        if is_answer:
            with torch.no_grad():
                logits, _ = model(torch.tensor([ids[:p]]))
            ids[p] = int(logits[0, -1].argmax())
    right = [ids[p] == instance.tokens[p] for p, a in enumerate(instance.answer) if a]
    return all(right), sum(right), len(right)


def test_exact_match_is_the_hand_decoded_models(run):
    path = run("rope")
    result = invoke("eval-task", path, "--lengths", "1-3,2,4", "--trials", "30")
    assert result.exit_code == 0, result.output
    rows = {(int(r["len_min"]), int(r["eval_len"])): r for r in read(path / "eval_task.csv")}
    assert set(rows) == {(1, 3), (2, 2), (4, 4)}
    model = load_model(RunDir(path), RunDir(path).read_config())
    partial = False
    for (lo, hi), row in rows.items():
        lengths = tasks.lengths_on_side("copy", range(lo, hi + 1), test=True)
        instances = tasks.sample("copy", lengths, 30, _bucket_rng("copy", lo, hi), test=True)
        decoded = [hand_decoded(model, i) for i in instances]
        assert int(row["exact"]) == sum(d[0] for d in decoded)
        assert float(row["exact_match"]) == pytest.approx(sum(d[0] for d in decoded) / 30)
        assert float(row["token_accuracy"]) == pytest.approx(sum(d[1] for d in decoded) / sum(d[2] for d in decoded))
        assert row["status"] == "ok" and row["task"] == "copy" and int(row["task_len"]) == 2
        partial |= 0 < float(row["token_accuracy"]) < 1
    assert partial  # the comparison could have failed: some tokens right, some wrong


def test_learned_positions_past_their_table_are_not_applicable_and_a_relaunch_does_only_whats_missing(run):
    path = run("learned")
    first = task_accuracy(path, log=lambda *a: None)
    by_length = {int(r["eval_len"]): r for r in first}
    assert sorted(by_length) == list(range(1, 9))  # every length 1 .. 4 L
    assert all(by_length[n]["status"] == "ok" for n in (1, 2))  # the table's 6 rows hold lengths 1 and 2
    assert all(by_length[n]["status"].startswith("not_applicable: learned positions stop at max_len=6")
               for n in range(3, 9))
    written = (path / "eval_task.csv").read_text()
    assert task_accuracy(path, log=lambda *a: None, only_missing=True) == []
    assert (path / "eval_task.csv").read_text() == written


def test_randomized_learned_positions_train_a_table_of_n_rows_and_evaluate_in_order(runs, run):
    path = run("random_learned")
    assert RunDir(path).read_config().train.random_positions == 16
    model = load_model(RunDir(path), RunDir(path).read_config())
    assert model.pe.max_len() == 16  # the positions drawn reach 15
    rows = task_accuracy(path, log=lambda *a: None)
    # Length n reads 2 n + 2 tokens: up to 7 fit the 16 positions, 8 does not.
    assert [r["status"] == "ok" for r in sorted(rows, key=lambda r: r["eval_len"])] == [True] * 7 + [False]


def test_training_with_randomized_positions_passes_sorted_ids_below_n(runs, monkeypatch):
    from ropebench.run import trainer as trainer_module

    seen = []
    original = trainer_module.random_position_ids

    def spy(*args):
        ids = original(*args)
        seen.append((args, ids))
        return ids

    monkeypatch.setattr(trainer_module, "random_position_ids", spy)
    cfg = RunDir(runs["random_learned"]).read_config()
    trainer = trainer_module.Trainer(cfg, runs["random_learned"] / "never_written")
    trainer.corpus, trainer.generator = load_corpus(cfg.data), torch.Generator().manual_seed(0)
    x, y, pos = trainer._batch()
    (batch, width, n, _), ids = seen[0]
    assert (batch, width, n) == (*x.shape, 16) and ids is pos
    assert (pos.diff(dim=1) > 0).all() and pos.min() >= 0 and pos.max() < 16


def test_task_table_and_figure(runs, run, tmp_path):
    rope, learned = run("rope"), run("learned")
    for path in (rope, learned):
        task_accuracy(path, log=lambda *a: None, trials=20)
    result = invoke("table", "--task", rope, learned)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "### copy: exact match by instance length (trained on 1-2)"
    header = next(line for line in lines if line.startswith("| encoding"))
    assert header == "| encoding | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | <= 2 | > 2 |"  # columns of L/2 = 1 length
    # Runs that differ in more than the encoding are told apart by it (here their steps).
    assert any(line.startswith("| learned (steps=4) |") and line.count("n/a") == 6 for line in lines)
    assert "mean rank across tasks" in result.stdout
    out = tmp_path / "fig" / "tasks.png"
    result = invoke("plot", "--task", rope, learned, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".pdf").is_file()


def test_the_task_sweep_gives_each_task_its_own_window():
    from test_launchers import _compose_with_hydra

    for name in tasks.TASKS:
        cfg = _compose_with_hydra(["sweep=tasks", f"data.task={name}", "positions=random_learned"])
        assert cfg.train.seq_len == tasks.window(name, tasks.TASKS[name].default_len)
        assert cfg.pe.name == "learned" and cfg.train.random_positions >= cfg.train.seq_len
    swept = _compose_with_hydra(["sweep=tasks"]).hydra.sweeper.params
    assert set(swept["data.task"].split(",")) == set(tasks.TASKS)
    assert swept["positions"].split(",") == ["rope", "sinusoidal", "learned", "t5", "alibi", "nope", "random_rope",
                                             "random_learned"]


def test_a_task_sweep_trains_evaluates_and_reports(tmp_path):
    sweep = tmp_path / "sweep"
    result = invoke("sweep", "tasks", "data.task=reverse", "data.task_len=2", "positions=rope,random_rope",
                    "train.steps=3", "train.log_interval=3", "train.eval_interval=3", "train.ckpt_interval=3",
                    "train.eval_batches=1", "train.warmup_steps=1", "launcher=sequential", f"hydra.sweep.dir={sweep}")
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert runs == ["positions=random_rope", "positions=rope"]
    for name in runs:
        rows = read(sweep / name / "eval_task.csv")
        assert [int(r["eval_len"]) for r in rows] == list(range(1, 9)) and {r["status"] for r in rows} == {"ok"}
    table = (sweep / "tasks.md").read_text()
    assert "| rope |" in table and "| rope (random_positions=256) |" in table  # 0 (off) is no label
    assert (sweep / "tasks.png").is_file()


# ---- bad input: one line, exit code 2, nothing written ----

@pytest.mark.parametrize("extra, expected", [
    (["data.task=copi"], "unknown data.task 'copi'; choose one of: addition, copy, mqar, parity, reverse, sort"),
    (["data.task_len=-1"], "data.task_len must be >= 1"),
    (["train.seq_len=5"], "train.seq_len=5 cannot hold the longest training instance of task copy"),
    (["data.tokenizer=gpt2"], "data=task has its own vocabulary"),
    (["train.random_positions=4"], "train.random_positions=4 must be >= train.seq_len=6"),
    (["pe=nope", "train.random_positions=64"], "train.random_positions needs an encoding that takes position ids"),
    (["pe=learned", "pe.max_len=32", "train.random_positions=64"], "pe=learned stops at max_len=32"),
    (["train.random_positions=64", "train.pose_target_len=64"], "set one of them"),
])
def test_bad_task_and_position_settings_are_refused(tmp_path, extra, expected):
    path = tmp_path / "run"
    refused(invoke("train", *TINY, *extra, f"hydra.run.dir={path}"), expected)
    assert not path.exists()


@pytest.mark.parametrize("args, expected", [
    (["--lengths", "0"], "length bucket '0'"),
    (["--lengths", "1-3,-2"], "length bucket '-2'"),
    (["--lengths", "4-2"], "length bucket '4-2'"),
    (["--trials", "0"], "--trials must be a positive integer"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_eval_task_options_write_nothing(run, args, expected):
    path = run("rope")
    refused(invoke("eval-task", path, *args), expected)
    assert not (path / "eval_task.csv").exists()


def test_eval_task_refuses_runs_not_trained_on_a_task_and_missing_paths(run, tmp_path):
    text_run = run("rope")
    config = yaml.safe_load((text_run / "config.yaml").read_text())
    config["data"].update(name="stdlib", source="stdlib")
    (text_run / "config.yaml").write_text(yaml.safe_dump(config))
    refused(invoke("eval-task", text_run), "eval-task measures runs trained on a task", "data=stdlib")
    assert not (text_run / "eval_task.csv").exists()
    refused(invoke("eval-task", tmp_path / "nowhere"), "does not exist")


def test_a_task_run_is_not_a_passkey_perplexity_or_export_run(run, tmp_path):
    path = run("rope")
    refused(invoke("passkey", path), "this run was trained on a task", logs=True)
    refused(invoke("eval-length", path), "data=task has no text documents", logs=True)
    refused(invoke("export-hf", path, tmp_path / "hf"), "a data=task run has the task's own vocabulary")
    assert not (tmp_path / "hf").exists()


def test_test_instances_never_depend_on_the_run():
    a = tasks.sample("sort", [5, 6], 20, _bucket_rng("sort", 5, 6), test=True)
    b = tasks.sample("sort", [5, 6], 20, random.Random(0), test=True)
    assert a == tasks.sample("sort", [5, 6], 20, _bucket_rng("sort", 5, 6), test=True) and a != b


def _series(task: str, label: str, inside: float, beyond: float, train_len: int = 2):
    points = {(1, train_len): Point(train_len, 1, inside, 0.0, inside, inside, "ok"),
              (train_len + 1, 2 * train_len): Point(2 * train_len, 1, beyond, 0.0, beyond, beyond, "ok")}
    return TaskSeries(task, label, label, "none", train_len, points)


def test_the_mean_rank_leaves_out_a_task_some_label_did_not_learn_inside_its_range():
    learned = [_series("copy", "rope", 1.0, 0.2), _series("copy", "nope", LEARNED, 0.6)]
    # On the unlearned task RoPE is ahead beyond the range; counted, it would tie the two labels' mean ranks.
    unlearned = [_series("mqar", "rope", 1.0, 0.9), _series("mqar", "nope", 0.5, 0.1)]
    assert learned_by_all(learned) and not learned_by_all(unlearned)
    assert mean_ranks({"copy": learned, "mqar": unlearned}) == [("nope", 1.0, 1), ("rope", 2.0, 1)]
    assert mean_ranks({"mqar": unlearned}) == []
