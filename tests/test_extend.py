"""Fine-tuned context extension: init_from, RoPE scaling while training, PoSE, learned-table interpolation."""

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.core.pe.learned import interpolate_rows
from ropebench.data.pose import pose_batch, pose_positions
from tests.helpers import tiny_model

runner = CliRunner()
# Runs trained at 16 and 32 tokens scored on the same 64-token regions (by default a region is 16 x the length).
SAME_TEXT = ["eval.region_len=64"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def nll_by_length(run_dir, label=None):
    with open(run_dir / "eval_length.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok" and (label is None or r["rope_scaling"] == label)]
    return {int(r["eval_len"]): float(r["nll"]) for r in rows}


@pytest.fixture(scope="module")
def base(tiny_overrides, tmp_path_factory):
    """A finished RoPE run at 16 tokens (the source of every extension here)."""
    root = tmp_path_factory.mktemp("extend")
    run = root / "base"
    result = invoke("train", *tiny_overrides, "pe=rope", *SAME_TEXT, f"hydra.run.dir={run}")
    assert result.exit_code == 0, result.output
    return run


def extend(tiny_overrides, base, run, *extra):
    return invoke("train", *tiny_overrides, "pe=rope", f"init_from={base}", "train.seq_len=32", *SAME_TEXT, *extra,
                  f"hydra.run.dir={run}")


def test_step_zero_extension_evaluates_exactly_like_the_source_with_that_scaling(tiny_overrides, base, tmp_path):
    run = tmp_path / "yarn0"
    result = extend(tiny_overrides, base, run, "train.steps=0", "pe.scaling.type=yarn", "pe.scaling.factor=2")
    assert result.exit_code == 0, result.output
    config = (run / "config.yaml").read_text()
    assert f"init_from: {base.resolve()}" in config and "init_from_seq_len: 16" in config
    assert "original_max_position_embeddings: 16" in config  # defaulted to the source's length
    final = json.loads((run / "final.json").read_text())
    assert final["init_from"]["seq_len"] == 16 and final["init_from"]["steps"] == 6
    lengths = "16,32,64"
    # The extension evaluated as trained (its own scaling), and the source with the same scaling at eval time.
    assert invoke("eval-length", run, "--lengths", lengths, "--max-tokens", "256").exit_code == 0
    assert invoke("eval-length", base, "--lengths", lengths, "--max-tokens", "256", "--rope-scaling", "yarn",
                  "--factor", "2").exit_code == 0
    extended = nll_by_length(run, "yarn(factor=2,original_max_position_embeddings=16)")
    source = nll_by_length(base, "yarn(factor=2)")
    assert set(extended) == {16, 32, 64} and extended == source
    # `--rope-scaling none` shows the raw model: the source's unscaled numbers.
    raw = invoke("eval-length", run, "--lengths", lengths, "--max-tokens", "256", "--rope-scaling", "none")
    assert raw.exit_code == 0, raw.output
    assert invoke("eval-length", base, "--lengths", lengths, "--max-tokens", "256").exit_code == 0
    assert nll_by_length(run, "none") == nll_by_length(base, "none")


def test_a_step_at_a_negligible_learning_rate_changes_nothing_measurable(tiny_overrides, base, tmp_path):
    run = tmp_path / "tiny_lr"
    result = extend(tiny_overrides, base, run, "train.steps=1", "train.lr=1e-12", "train.min_lr=0",
                    "train.warmup_steps=0", "train.weight_decay=0", "pe.scaling.type=linear", "pe.scaling.factor=2")
    assert result.exit_code == 0, result.output
    assert invoke("eval-length", run, "--lengths", "32", "--max-tokens", "256").exit_code == 0
    assert invoke("eval-length", base, "--lengths", "32", "--max-tokens", "256", "--rope-scaling", "linear",
                  "--factor", "2").exit_code == 0
    got = nll_by_length(run, "linear(factor=2,original_max_position_embeddings=16)")[32]
    assert got == pytest.approx(nll_by_length(base, "linear(factor=2)")[32], rel=1e-6)


def test_extended_runs_train_and_resume_like_any_run(tiny_overrides, base, tmp_path):
    common = ["train.steps=6", "pe.scaling.type=ntk", "pe.scaling.factor=2", "train.ckpt_interval=3"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert extend(tiny_overrides, base, whole, *common).exit_code == 0
    assert extend(tiny_overrides, base, split, *common[1:], "train.steps=3").exit_code == 0
    result = invoke("resume", split, "train.steps=6")
    # A finished run is a record: not stretched afterwards, and refused in one line rather than silently kept.
    assert result.exit_code == 2 and "has finished its 3 steps" in result.output
    # A run stopped at its checkpoint continues from it (not from the source again) to the same weights.
    (split / "final.json").unlink()
    (split / "model.safetensors").unlink()
    result = invoke("resume", split, "train.steps=6")
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    a, b = load_file(whole / "model.safetensors"), load_file(split / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_learned_tables_grow_by_interpolation_only_when_asked(tiny_overrides, tmp_path):
    source = tmp_path / "learned"
    assert invoke("train", *tiny_overrides, "pe=learned", f"hydra.run.dir={source}").exit_code == 0
    refused = tmp_path / "refused"
    result = invoke("train", *tiny_overrides, "pe=learned", f"init_from={source}", "train.seq_len=32",
                    "train.steps=0", f"hydra.run.dir={refused}")
    assert result.exit_code == 2 and "pe.extend=interpolate" in result.output
    assert "Traceback" not in result.output and not refused.exists()
    grown = tmp_path / "grown"
    result = invoke("train", *tiny_overrides, "pe=learned", "pe.extend=interpolate", f"init_from={source}",
                    "train.seq_len=32", "train.steps=0", f"hydra.run.dir={grown}")
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    old = load_file(source / "model.safetensors")["pe.wpe.weight"]
    new = load_file(grown / "model.safetensors")["pe.wpe.weight"]
    assert new.shape == (32, old.shape[1])
    assert torch.allclose(new, interpolate_rows(old, 32))
    assert torch.equal(new[0], old[0]) and torch.equal(new[-1], old[-1])
    assert invoke("eval-length", grown, "--lengths", "32", "--max-tokens", "256").exit_code == 0
    assert 32 in nll_by_length(grown)


def test_interpolate_rows_matches_numpy_interp():
    table = torch.randn(5, 3, dtype=torch.float64)
    got = interpolate_rows(table, 13)
    x = np.linspace(0, 4, 13)
    want = np.stack([np.interp(x, np.arange(5), table[:, c].numpy()) for c in range(3)], axis=1)
    assert np.allclose(got.numpy(), want, atol=1e-12)


def test_pose_positions_are_chunks_that_skip_within_the_target():
    g = torch.Generator().manual_seed(0)
    longest = 0
    for _ in range(400):
        pos = pose_positions(16, 64, 2, g)
        steps = torch.diff(pos)
        assert pos.shape == (16,) and pos[0] >= 0 and pos[-1] <= 63 and bool((steps >= 1).all())
        assert int((steps > 1).sum()) <= 1  # two chunks: at most one jump, contiguous inside each chunk
        longest = max(longest, int(pos[-1] - pos[0]))
    assert longest == 63  # relative distances reach the whole target window
    three = pose_positions(30, 100, 3, torch.Generator().manual_seed(1))
    assert int((torch.diff(three) > 1).sum()) <= 2


def test_pose_batch_takes_each_token_and_its_true_successor_at_its_position():
    tokens = np.arange(1000, dtype=np.uint16) * 7 % 251
    x, y, pos = pose_batch(tokens, 4, 16, 64, 2, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == pos.shape == (4, 16)
    for b in range(4):
        offsets = pos[b] - pos[b, 0]
        # the inputs are one stretch of text read at the position ids; each target is the next token of that text
        first = [i for i in range(1000 - 64) if all(tokens[i + int(o)] == x[b, j] for j, o in enumerate(offsets))]
        assert first, "inputs are not text read at the position ids"
        s = first[0] - int(pos[b, 0])
        assert all(y[b, j] == tokens[s + int(pos[b, j]) + 1] for j in range(16))


def test_rope_with_position_ids_is_shift_invariant_and_default_when_contiguous():
    model = tiny_model("rope", train_seq_len=16)
    idx = torch.randint(0, 257, (2, 12))
    plain, _ = model(idx)
    same, _ = model(idx, pos=torch.arange(12).expand(2, 12))
    shifted, _ = model(idx, pos=torch.arange(12).expand(2, 12) + 500)
    assert torch.equal(plain, same)
    assert torch.allclose(plain, shifted, atol=1e-4)  # RoPE sees only relative positions



def test_rope_rotates_each_example_by_its_own_position_ids():
    from ropebench.core.rope.freqs import default_inv_freq, rope_tables
    from ropebench.core.rope.reference import apply_rope

    pe = tiny_model("rope", n_embd=32, n_head=4).pe  # head_dim 8
    q, k = torch.randn(2, 4, 12, 8), torch.randn(2, 4, 12, 8)
    pos = torch.stack([torch.cat([torch.arange(6), torch.arange(6) + 40]), torch.arange(12) * 5])
    got_q, got_k = pe.qk(q, k, pos)
    cos, sin = rope_tables(default_inv_freq(8, 10000.0), torch.arange(64))  # one table, rows picked by position
    for b in range(2):
        want_q, want_k = apply_rope(q[b:b + 1], k[b:b + 1], cos[pos[b]], sin[pos[b]])
        assert torch.allclose(got_q[b:b + 1], want_q, atol=1e-6) and torch.allclose(got_k[b:b + 1], want_k, atol=1e-6)
    assert not torch.allclose(got_q, pe.qk(q, k, torch.arange(12))[0], atol=1e-3)


def test_position_ids_are_refused_by_encodings_that_ignore_them():
    from ropebench.errors import UserError

    with pytest.raises(UserError, match="takes no position ids"):
        tiny_model("nope")(torch.zeros(1, 4, dtype=torch.long), pos=torch.arange(4)[None])


@pytest.mark.parametrize("extra, expected", [
    (["init_from=/no/such/run"], "not a run directory"),
    (["pe.scaling.type=linear", "pe.scaling.factor=0"], "pe.scaling: rope scaling factor must be"),
    (["pe.scaling.type=linear"], "needs pe.scaling.factor"),
    (["train.pose_target_len=8"], "train.pose_target_len=8 must be >= train.seq_len=16"),
    (["train.steps=0"], "0 only with init_from"),
    (["pe=alibi", "pe.scaling.type=linear", "pe.scaling.factor=2"], "scaling"),
    (["pe=nope", "train.pose_target_len=64"], "position ids"),
    (["pe=learned", "pe.max_len=32", "train.pose_target_len=64"], "stops at max_len=32"),
])
def test_bad_extension_settings_are_one_line_and_write_nothing(tiny_overrides, tmp_path, extra, expected):
    run = tmp_path / "run"
    result = invoke("train", *tiny_overrides, *extra, f"hydra.run.dir={run}")
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert not run.exists()


def test_init_from_an_unfinished_or_different_run_is_refused(tiny_overrides, base, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((base / "config.yaml").read_text())
    run = tmp_path / "run"
    result = invoke("train", *tiny_overrides, f"init_from={unfinished}", f"hydra.run.dir={run}")
    assert result.exit_code == 2 and "unfinished" in result.output and not run.exists()
    result = invoke("train", *tiny_overrides, "model.n_embd=64", f"init_from={base}", f"hydra.run.dir={run}")
    assert result.exit_code == 2 and "model.n_embd: 32 → 64" in result.output and not run.exists()
    result = invoke("train", *tiny_overrides, "pe=alibi", f"init_from={base}", f"hydra.run.dir={run}")
    assert result.exit_code == 2 and "pe.name: rope → alibi" in result.output and not run.exists()


def _fake_run(path, pe="rope", init_from="", steps=200, scaling="none", pose=0, extend=None, ppl=None, passkey=None):
    import yaml

    path.mkdir(parents=True)
    pe_node = {"name": pe, "scaling": {"type": scaling, "factor": 4.0 if scaling != "none" else None,
                                       "original_max_position_embeddings": 64 if scaling != "none" else None}}
    if extend:
        pe_node["extend"] = extend
    config = {"pe": pe_node, "init_from": init_from, "seed": 0, "data": {"source": "stdlib"},
              "train": {"seq_len": 64 if not init_from or pose else 256, "steps": steps, "pose_target_len": pose},
              "model": {}, "eval": {}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "final.json").write_text("{}")
    (path / "model.safetensors").write_text("")
    label = "none" if scaling == "none" else f"{scaling}(factor=4,original_max_position_embeddings=64)"
    def write(name, columns, rows):
        with open(path / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(rows)

    write("eval_length.csv", ("eval_len", "protocol", "rope_scaling", "ppl", "status"),
          [(n, "nonoverlapping", lab, v, "ok") for n, v in (ppl or {}).items() for lab in (label, "other")])
    if passkey:
        write("passkey.csv", ("eval_len", "depth", "rope_scaling", "accuracy", "status"),
              [(n, d, label, v, "ok") for n, v in passkey.items() for d in (0.0, 1.0)])
    return path


def test_the_extension_report_names_methods_from_configs_and_aggregates_seeds(tmp_path):
    from ropebench.report.extend import summary_rows, write_extend_report

    sweep = tmp_path / "sweep"
    _fake_run(sweep / "base" / "pe=rope,seed=0", steps=1000, ppl={64: 5.0, 256: 9.0})
    _fake_run(sweep / "a", init_from="x", scaling="yarn", ppl={64: 6.0, 256: 6.5}, passkey={256: 0.5})
    _fake_run(sweep / "b", init_from="x", scaling="yarn", ppl={64: 6.2, 256: 6.9}, passkey={256: 0.25})
    _fake_run(sweep / "c", init_from="x", scaling="yarn", pose=256, ppl={64: 7.0})
    _fake_run(sweep / "d", pe="learned", init_from="x", extend="interpolate", steps=50, ppl={64: 8.0})
    _fake_run(sweep / "e", pe="alibi", init_from="x", steps=0, ppl={64: 9.0})
    rows = {(r["method"], r["steps"], r["eval_len"]): r for r in summary_rows(
        [sweep / "base" / "pe=rope,seed=0", *(sweep / n for n in "abcde")])}
    assert set(rows) == {("rope base", "", 64), ("rope base", "", 256), ("YaRN", "200", 64), ("YaRN", "200", 256),
                         ("PoSE+YaRN", "200", 64), ("learned interpolate", "50", 64), ("alibi direct", "0", 64)}
    yarn = rows[("YaRN", "200", 256)]
    assert yarn["ppl_n"] == 2 and yarn["ppl_mean"] == pytest.approx(6.7) and yarn["ppl_min"] == 6.5
    assert yarn["ppl_std"] == pytest.approx(np.std([6.5, 6.9], ddof=1))  # only the as-trained rows, not "other"
    assert yarn["passkey_mean"] == pytest.approx(0.375) and rows[("YaRN", "200", 64)]["passkey_n"] == 0
    written = write_extend_report(sweep)
    assert [p.name for p in written] == ["extend.csv", "extend.md", "extend.png", "extend.pdf"]
    table = (sweep / "extend.md").read_text()
    assert "| YaRN | 200 | 6.10 ± 0.14 | 6.70 ± 0.28 |" in table and "| 38 ± 18 |" in table


def test_a_method_missing_at_one_budget_keeps_its_colour(tmp_path):
    """extend.png recoloured the methods per panel: with PI missing at 0 steps, every method after it took another
    colour there. Each method has one colour in every panel, and the figure one legend."""
    from ropebench.report.axes import Units
    from ropebench.report.extend import _figure, read_results, summary_rows

    runs = [_fake_run(tmp_path / "base", steps=1000, ppl={64: 5.0, 256: 9.0})]
    for steps in (0, 50):
        runs.append(_fake_run(tmp_path / f"direct{steps}", init_from="x", steps=steps, ppl={64: 6.0, 256: 7.0}))
        runs.append(_fake_run(tmp_path / f"yarn{steps}", init_from="x", steps=steps, scaling="yarn", ppl={64: 5.5}))
    runs.append(_fake_run(tmp_path / "pi50", init_from="x", steps=50, scaling="linear", ppl={64: 6.5, 256: 6.6}))
    results = read_results(runs)
    fig = _figure(summary_rows(results), "ppl", {r.method: (r.pe, r.scaling) for r in results}, Units(("bytes",)))
    panels = [{ln.get_label(): ln.get_color() for ln in ax.get_lines()} for ax in fig.axes]
    assert set(panels[0]) == {"rope base", "direct", "YaRN"} and set(panels[1]) == {"rope base", "direct", "PI", "YaRN"}
    assert all(panels[0][m] == panels[1][m] for m in panels[0])
    assert len(set(panels[1].values())) == 4
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["rope base", "direct", "PI", "YaRN"]
    assert fig.axes[0].get_ylabel() == "perplexity per byte (log scale)"


def test_the_extension_report_keeps_runs_of_one_method_that_differ_apart(tmp_path):
    """The report uses the tables' identity: two YaRN runs at one budget that differ in a setting are two rows."""
    import yaml

    from ropebench.report.extend import summary_rows

    a = _fake_run(tmp_path / "a", init_from="x", scaling="yarn", ppl={64: 6.0})
    b = _fake_run(tmp_path / "b", init_from="x", scaling="yarn", ppl={64: 8.0})
    config = yaml.safe_load((b / "config.yaml").read_text())
    config["train"]["lr"] = 0.01
    (b / "config.yaml").write_text(yaml.safe_dump(config))
    rows = summary_rows([a, b])
    # a: the schema default lr
    assert sorted((r["method"], r["ppl_n"]) for r in rows) == [("YaRN (lr=0.002)", 1), ("YaRN (lr=0.01)", 1)]


def _without_data(overrides):
    return [o for o in overrides if not o.startswith("data")]


def test_init_from_reads_the_source_run_s_data_unless_told_otherwise(tiny_overrides, base, tmp_path, session_tmp):
    """A run started from another's weights with no data settings fine-tuned on the default corpus, silently."""
    import yaml

    source = yaml.safe_load((base / "config.yaml").read_text())["data"]
    run = tmp_path / "inherits"
    result = invoke("train", *_without_data(tiny_overrides), "pe=rope", f"init_from={base}", "train.seq_len=32",
                    "train.steps=0", *SAME_TEXT, f"hydra.run.dir={run}")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert data["source"] == "text_files" and data["paths"] == source["paths"]
    assert "on its data (data=text_files)" in result.output
    # Other data named on the command line: read, the source's tokenizer kept, the difference on the start line.
    other = tmp_path / "other_corpus"
    other.mkdir()
    for i, f in enumerate(sorted((session_tmp / "corpus").glob("*.py"))[:20]):
        (other / f"doc{i}.txt").write_text(f.read_text())
    run = tmp_path / "other"
    result = invoke("train", *_without_data(tiny_overrides), "pe=rope", f"init_from={base}", "train.seq_len=32",
                    "train.steps=0", "data=text_files", f"data.paths=[{other}]", *SAME_TEXT, f"hydra.run.dir={run}")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert data["paths"] == [str(other.resolve())] and data["tokenizer"] == source["tokenizer"]
    assert "on other data than it was trained on (data.paths:" in " ".join(result.output.split())


def test_evaluation_time_scaling_of_an_init_from_run_stretches_from_the_source_length(tiny_overrides, base, tmp_path):
    """A 0-step extension to 32 tokens holds the 16-token model's weights: scaling it at evaluation must stretch from
    16 (its init_from_seq_len), not from its own 32 -- it then scores exactly like its source scaled the same way."""
    run = tmp_path / "direct0"
    assert extend(tiny_overrides, base, run, "train.steps=0").exit_code == 0
    common = ["--lengths", "32,64", "--max-tokens", "256", "--rope-scaling", "yarn"]
    assert invoke("eval-length", run, *common).exit_code == 0
    assert invoke("eval-length", base, *common).exit_code == 0
    assert nll_by_length(run, "yarn") == nll_by_length(base, "yarn")  # factor 64/16 = 4 at 64, from 16
    with open(run / "eval_length.csv") as f:
        factors = {int(r["eval_len"]): r["rope_factor"] for r in csv.DictReader(f) if r["rope_scaling"] == "yarn"}
    assert factors == {32: "2", 64: "4"}
    # --original-len overrides it (and names itself in the rows' label).
    result = invoke("eval-length", run, *common, "--original-len", "32")
    assert result.exit_code == 0, result.output
    stretched = nll_by_length(run, "yarn(original_max_position_embeddings=32)")
    assert set(stretched) == {32, 64} and stretched[64] != nll_by_length(run, "yarn")[64]


def test_region_len_and_original_len_options(base, tmp_path):
    import shutil

    from tests.helpers import refused

    base = shutil.copytree(base, tmp_path / "copy")  # the other tests' source stays as it is
    result = runner.invoke(app, ["eval-length", str(base), "--lengths", "16", "--region-len", "32",
                                 "--max-tokens", "64"])
    assert result.exit_code == 0, result.output
    with open(base / "eval_length.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["eval_len"] == "16" and r["rope_scaling"] == "none")
    assert int(row["n_tokens"]) == 64 and int(row["n_documents"]) == 2  # two whole 32-token regions
    before = (base / "eval_length.csv").read_text()
    refused(runner.invoke(app, ["eval-length", str(base), "--region-len", "0"]), "--region-len must be a positive")
    refused(runner.invoke(app, ["eval-length", str(base), "--original-len", "16"]), "--original-len needs --rope")
    assert (base / "eval_length.csv").read_text() == before
