"""Passkey retrieval: the sequence generator, bad input, the CLI end to end on a tiny model, effective context."""

import csv
import math

import pytest
import torch
import typer
from typer.testing import CliRunner

from ropebench.cli.app import app, user_errors
from ropebench.cli.passkey import passkey
from ropebench.data.passkey import (
    IGNORE,
    KEY_PREFIX,
    KEY_SUFFIX,
    MIN_LEN,
    N_DIGITS,
    QUESTION,
    PasskeySplit,
    key_position,
    make_sequence,
)
from ropebench.errors import UserError
from ropebench.eval.passkey import effective_context, parse_depths, passkey_accuracy

runner = CliRunner()
# The passkey command on its own app, so these tests do not depend on how cli.py registers it.
pk_app = typer.Typer()
pk_app.callback()(lambda: None)
pk_app.command("passkey")(user_errors(passkey))
TINY = ["data=passkey", "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "train.seq_len=48",
        "train.steps=4", "train.batch_size=4", "train.log_interval=2", "train.eval_interval=4",
        "train.eval_batches=1", "train.warmup_steps=1", "train.ckpt_interval=4"]


def test_key_sits_at_the_requested_depth():
    digits = [3, 1, 4, 1, 5]
    for length in (MIN_LEN, 64, 300):
        for depth in (0.0, 0.25, 0.5, 1.0):
            seq = bytes(make_sequence(length, depth, digits, phase=7))
            assert len(seq) == length + 1
            at = key_position(length, depth)
            assert at == round(depth * (length - MIN_LEN))
            key_sentence = KEY_PREFIX + b"31415" + KEY_SUFFIX
            assert seq[at : at + len(key_sentence)] == key_sentence
            assert seq.count(b"31415") == 2  # the key and the answer, nowhere else
            assert seq.endswith(QUESTION + b"31415")
    assert key_position(64, 0.0) == 0
    assert bytes(make_sequence(64, 1.0, digits))[: -len(QUESTION) - N_DIGITS].endswith(KEY_SUFFIX)


def test_batches_have_exact_lengths_and_end_with_the_answer():
    x, y = PasskeySplit("train").batch(6, 64, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 64) and x.dtype == y.dtype == torch.int64
    assert (y[:, :-N_DIGITS] == IGNORE).all()  # loss on the answer only
    assert torch.equal(x[:, -N_DIGITS + 1 :], y[:, -N_DIGITS:-1])  # the answer's targets are the next tokens
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        text = bytes(row_x) + bytes(row_y[-1:])
        assert len(text) == 65 and text.endswith(QUESTION + bytes(row_y[-N_DIGITS:]))
        start = text.index(KEY_PREFIX) + len(KEY_PREFIX)
        assert bytes(row_y[-N_DIGITS:]) == text[start : start + N_DIGITS]  # the last 5 targets are the key
        assert all(48 <= t <= 57 for t in row_y[-N_DIGITS:])
    again, _ = PasskeySplit("train").batch(6, 64, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)  # deterministic given the generator


@pytest.mark.parametrize("text", ["1.5", "-0.1", "nan", "half"])
def test_bad_depths_are_user_errors(text):
    with pytest.raises(UserError, match="passkey depth"):
        parse_depths(f"0,{text}")


def test_too_short_lengths_are_user_errors():
    make_sequence(MIN_LEN, 0.5, [1, 2, 3, 4, 5])
    with pytest.raises(UserError, match=f"at least {MIN_LEN}"):
        make_sequence(MIN_LEN - 1, 0.5, [1, 2, 3, 4, 5])
    with pytest.raises(UserError, match="train.seq_len"):
        PasskeySplit("train").batch(2, 16, torch.Generator())


def test_effective_context_follows_pi_and_yarn():
    def rows(table):
        return [{"eval_len": L, "depth": d, "accuracy": a, "status": "ok"} for L, accs in table.items()
                for d, a in zip((0.0, 1.0), accs)]

    table = {64: (1.0, 1.0), 128: (0.9, 0.8), 256: (0.5, 0.1), 512: (0.1, 0.0), 1024: (0.5, 0.5)}
    assert effective_context(rows(table), 0.8) == 128
    assert effective_context(rows(table), 0.2) == 256  # 1024 passes again, but 512 failed before it
    assert effective_context(rows({64: (0.1, 0.1)}), 0.2) is None
    na = rows({64: (1.0, 1.0)}) + [{"eval_len": 128, "depth": 0.0, "accuracy": "", "status": "not_applicable: x"}]
    assert effective_context(na, 0.2) == 64
    with pytest.raises(UserError):
        effective_context(na, 1.5)


@pytest.fixture(scope="module")
def passkey_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "rope"
    result = runner.invoke(app, ["train", *TINY, "pe=rope", f"hydra.run.dir={run_dir}"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run_dir


def test_cli_measures_accuracy_by_length_and_depth(passkey_run, tmp_path):
    args = ["passkey", str(passkey_run), "--lengths", "48,96", "--depths", "0,1", "--trials", "3"]
    result = runner.invoke(pk_app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open(passkey_run / "passkey.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["eval_len"]), float(r["depth"])) for r in rows] == [(48, 0), (48, 1), (96, 0), (96, 1)]
    for r in rows:
        assert r["status"] == "ok" and r["trials"] == "3" and 0 <= float(r["accuracy"]) <= 1
        assert float(r["accuracy"]) == pytest.approx(int(r["correct"]) / 3)
    # With scaling: rows land under their own label, the unscaled ones stay.
    result = runner.invoke(pk_app, [*args[:3], "96", "--depths", "0.5", "--trials", "2", "--rope-scaling", "yarn"])
    assert result.exit_code == 0, result.output
    with open(passkey_run / "passkey.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and [r["rope_scaling"] for r in rows].count("yarn") == 1
    yarn = next(r for r in rows if r["rope_scaling"] == "yarn")
    assert (yarn["rope_factor"], yarn["rope_scale"]) == ("2", "2")  # automatic: 96 / 48
    assert all(r["rope_factor"] == r["rope_scale"] == "" for r in rows if r["rope_scaling"] == "none")
    from ropebench.report.plot_passkey import plot_passkey

    written = plot_passkey([passkey_run], tmp_path / "pk.png")
    assert [p.suffix for p in written] == [".png", ".pdf"] and written[0].stat().st_size > 5_000


@pytest.mark.parametrize("bad, message", [
    (["--depths", "0,1.5"], "passkey depth 1.5 is outside [0, 1]"),
    (["--lengths", "20"], "passkey length 20 is too short"),
    (["--trials", "0"], "--trials must be a positive integer"),
    (["--factor", "2"], "--factor needs --rope-scaling (one of: linear, ntk, dynamic, yarn, llama3, longrope)"),
    (["--rope-scaling", "yarn", "--mscale", "1"], "give both or neither"),
    (["--rope-scaling", "linear", "--low-freq-factor", "2"], "'linear' does not use low_freq_factor"),
    (["--rope-scaling", "longrope"], "longrope needs rope_scaling.short_factor"),
])
def test_cli_bad_input_is_one_line_and_loses_nothing(passkey_run, bad, message):
    before = (passkey_run / "passkey.csv").read_text() if (passkey_run / "passkey.csv").is_file() else None
    result = runner.invoke(pk_app, ["passkey", str(passkey_run), *bad])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)  # typer.Exit, not a crash
    assert message in result.output and "Traceback" not in result.output
    after = (passkey_run / "passkey.csv").read_text() if (passkey_run / "passkey.csv").is_file() else None
    assert before == after


def test_passkey_shares_the_per_length_scaling_of_eval_length(passkey_run):
    # dynamic takes no automatic factor (it grows with the length itself); its options reach the model.
    args = ["passkey", str(passkey_run), "--lengths", "48,192", "--depths", "0.5", "--trials", "2"]
    result = runner.invoke(pk_app, [*args, "--rope-scaling", "dynamic", "--factor", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(pk_app, [*args, "--rope-scaling", "yarn", "--mscale", "1", "--mscale-all-dim", "0.5"])
    assert result.exit_code == 0, result.output
    with open(passkey_run / "passkey.csv") as f:
        rows = {(r["rope_scaling"], int(r["eval_len"])): r for r in csv.DictReader(f)}
    dynamic = rows[("dynamic(factor=2)", 192)]
    assert (dynamic["rope_factor"], dynamic["rope_scale"]) == ("2", "7")  # 2 * 192/48 - 1
    assert rows[("dynamic(factor=2)", 48)]["rope_scale"] == "1"
    yarn = rows[("yarn(mscale=1,mscale_all_dim=0.5)", 192)]
    assert (yarn["rope_factor"], yarn["rope_scale"], yarn["status"]) == ("4", "4", "ok")


def test_learned_positions_past_max_len_are_not_applicable(passkey_run, tmp_path):
    run_dir = tmp_path / "learned"
    result = runner.invoke(app, ["train", *TINY, "pe=learned", "train.steps=2", f"hydra.run.dir={run_dir}"])
    assert result.exit_code == 0, result.output
    rows = passkey_accuracy(run_dir, [48, 96], [0.5], trials=2)
    assert rows[0]["status"] == "ok" and rows[1]["status"].startswith("not_applicable")
    assert not math.isnan(rows[0]["accuracy"])
