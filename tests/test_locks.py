"""One command at a time in a run directory or an --out (issue 22, item 5): the command writing it holds a lock
(``ropebench.run.locks``), and a second writer is refused in one line instead of interleaving its writes with the
first's -- two `train`s into one new directory, two `resume`s, an evaluation under a `resume`, two Hugging Face
evaluations into one --out, two exports into one OUT. The lock holder here is another process (spawned), as a
second command is. Figures and tables are written through unique temporary names: a link planted where a fixed
name used to be redirects nothing."""

from __future__ import annotations

import csv
import multiprocessing
import shutil
from pathlib import Path

import pytest

from tests.helpers import invoke, ok, refused, snapshot

BUSY = "is in use by another ropebench command"


def _hold(path: str, beside: bool, shared: bool, held, release) -> None:
    """In another process: hold the lock of ``path`` as a command would, until told to let go."""
    from ropebench.run.locks import lock_beside
    from ropebench.run.rundir import RunDir

    with lock_beside(Path(path), shared) if beside else RunDir(path).claim(shared):
        held.set()
        release.wait(120)


class Holder:
    """Another process holding a directory's lock for the duration of a ``with`` block."""

    def __init__(self, path: Path, beside: bool = False, shared: bool = False):
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no fork of a process holding torch
        self.held, self.release = ctx.Event(), ctx.Event()
        self.process = ctx.Process(target=_hold, args=(str(path), beside, shared, self.held, self.release))

    def __enter__(self):
        self.process.start()
        assert self.held.wait(120), "the other process never took the lock"
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.process.join(60)
        assert self.process.exitcode == 0


@pytest.fixture(scope="module")
def finished(tiny_overrides, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("locks") / "run"
    ok(invoke("train", *tiny_overrides, "train.steps=4", f"hydra.run.dir={run}"))
    return run


def test_a_second_train_into_a_directory_being_trained_is_refused(tiny_overrides, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with Holder(run):  # a `train` of another seed in progress there
        refused(invoke("train", *tiny_overrides, "seed=1", f"hydra.run.dir={run}"), BUSY, str(run))
    assert not (run / "config.yaml").exists() and not (run / "checkpoint.pt").exists()


@pytest.mark.parametrize("command", ["resume", "eval-length", "passkey", "export-hf"])
def test_a_run_being_continued_is_refused_to_every_other_writer(command, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = snapshot(run)
    args = {"resume": ["resume", run, "train.steps=6"], "eval-length": ["eval-length", run, "--lengths", "16"],
            "passkey": ["passkey", run, "--lengths", "64", "--depths", "0", "--trials", "1"],
            "export-hf": ["export-hf", run, tmp_path / "hf"]}[command]
    if command == "export-hf":
        pytest.importorskip("transformers")
    with Holder(run):  # a `resume` in progress
        refused(invoke(*args), BUSY, logs=True)
    assert snapshot(run) == before and not (tmp_path / "hf").exists()


def test_evaluations_share_a_run(finished, tmp_path):
    """Evaluations only add rows (merged under a lock of their own): one does not wait for another."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    with Holder(run, shared=True):  # another eval-length in progress
        ok(invoke("eval-length", run, "--lengths", "16"))
        refused(invoke("resume", run, "train.steps=6"), BUSY)  # but nothing trains it meanwhile


def test_an_export_into_an_out_being_written_is_refused(finished, tmp_path):
    pytest.importorskip("transformers")
    with Holder(tmp_path / "hf", beside=True):  # another export-hf (or Hugging Face evaluation) writing there
        refused(invoke("export-hf", finished, tmp_path / "hf"), BUSY)
    assert not (tmp_path / "hf").exists()
    ok(invoke("export-hf", finished, tmp_path / "hf"))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock file left beside it


def test_two_hugging_face_evaluations_into_one_new_out(finished, tmp_path):
    """The second is refused while the first writes; and one that checked OUT before the first wrote its config
    there is refused when it comes to write (the check is repeated under the lock), not merged under the other
    model's config."""
    pytest.importorskip("transformers")
    from ropebench.errors import UserError
    from ropebench.eval.hf_session import HFRequest, hf_eval_length, open_session
    from ropebench.eval.perplexity import checked_probe
    from ropebench.eval.runner import run_probe

    for name in ("a", "b"):
        ok(invoke("export-hf", finished, tmp_path / name))
    out = tmp_path / "out"
    with Holder(out, beside=True):
        refused(invoke("eval-length", tmp_path / "a", "--out", out, "--lengths", "16"), BUSY)
    assert not out.exists()
    late = open_session(HFRequest(str(tmp_path / "b"), out), log=lambda *a: None)  # OUT is empty: accepted
    hf_eval_length(HFRequest(str(tmp_path / "a"), out), [16], log=lambda *a: None)
    probe = checked_probe(late.cfg, [16], "nonoverlapping", None, None, 16, 4)
    with pytest.raises(UserError, match="holds another evaluation"):
        run_probe(probe, late, [16])
    with open(out / "eval_length.csv", newline="") as f:
        assert {r["model"] for r in csv.DictReader(f)} == {str(tmp_path / "a")}


def test_a_planted_link_at_a_temporary_name_redirects_nothing(tmp_path):
    """`plot` and `table` used to write through `.NAME.tmp`: a link planted there made them overwrite its target."""
    from ropebench.report.table import write_table

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {name: tiny}\npe: {name: rope}\ndata: {name: stdlib}\n"
                                     "train: {seq_len: 16}\neval: {max_tokens: 0}\nseed: 0\n")
    (run / "eval_length.csv").write_text("pe,train_seq_len,eval_len,protocol,stride,rope_scaling,ppl,nll,status\n"
                                         "rope,16,16,nonoverlapping,16,none,3.0,1.1,ok\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    for name in ("fig.png", "fig.pdf", "table.md"):
        (tmp_path / f".{name}.tmp").symlink_to(victim)
    ok(invoke("plot", run, "--out", tmp_path / "fig.png"))
    write_table([run], tmp_path / "table.md")
    assert victim.read_text() == "mine"
    assert (tmp_path / "fig.png").stat().st_size > 0 and "| rope" in (tmp_path / "table.md").read_text()
    assert not (tmp_path / "fig.png").is_symlink()
