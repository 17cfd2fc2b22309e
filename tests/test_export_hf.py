"""`ropebench export-hf RUN OUT`: the export loads in transformers alone and computes ropebench's logits.

One real tiny run is trained through the CLI; the variants (pairings, partial rotary, biases, NoPE, learned
positions, training-time RoPE scaling) are run directories written from that run's config with random weights
-- every LayerNorm and bias randomised too, so that a zero bias or a unit scale cannot hide a mapping bug.
"""

import json
import subprocess
import sys

import pytest
import torch
from helpers import pe_config
from omegaconf import OmegaConf
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.core.model import GPT
from ropebench.run.artifacts import load_model
from ropebench.run.rundir import RunDir
from tests.helpers import refused

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.utils.logging.disable_progress_bar()
pytestmark = pytest.mark.hf  # also run with the oldest transformers the [hf] extra accepts (.ci/run)

runner = CliRunner()
TOL = 1e-4  # fp32
TRAIN_LEN = 16  # tiny_overrides' train.seq_len


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def fails_cleanly(args, *expected):
    return refused(invoke(*args), *expected)


@pytest.fixture(scope="module")
def trained_run(tiny_overrides, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / "rope"
    result = invoke("train", *tiny_overrides, "pe=rope", "train.steps=2", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    return run_dir


def make_run(source: RunDir, path, pe: str, bias: bool = False, weights: bool = True, **pe_overrides):
    """A finished run directory with the trained run's config, another encoding and random weights."""
    cfg = source.read_config()
    scaling = pe_overrides.pop("scaling", {})
    cfg.pe = pe_config(pe, **pe_overrides)
    for key, value in scaling.items():  # pe.scaling: RoPE scaling applied while training
        cfg.pe.scaling[key] = value
    cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.bias = 2, 4, 32, bias  # head_dim 8
    path.mkdir(parents=True)
    OmegaConf.save(cfg, path / "config.yaml")
    if weights:
        torch.manual_seed(0)
        model = GPT(cfg.model, cfg.pe, vocab_size=257, train_seq_len=int(cfg.train.seq_len))
        with torch.no_grad():  # weights far from init, logits O(1): a mapping bug cannot hide under 1e-4
            for name, p in model.named_parameters():
                if p.dim() == 1:  # LayerNorm scales (around 1) and shifts, linear biases
                    p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.5 * torch.randn_like(p))
                else:
                    p.copy_(0.3 * torch.randn_like(p))
        from safetensors.torch import save_model

        save_model(model, str(path / "model.safetensors"))
        (path / "final.json").write_text(json.dumps({"status": "finished"}))
    return path


def export(run, out):
    result = invoke("export-hf", run, out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    return out


def max_logit_diff(run, out, lengths, attn="sdpa"):
    """max |ropebench logits - exported model's logits| over random tokens at each length."""
    run = RunDir(run)
    ours = load_model(run, run.read_config())
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation=attn).eval()
    assert theirs.dtype == torch.float32
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for T in lengths:
        ids = torch.randint(0, 257, (2, T), generator=gen)
        with torch.no_grad():
            worst = max(worst, (ours(ids)[0] - theirs(ids).logits).abs().max().item())
    return worst


def _has_proportional() -> bool:
    from ropebench.run import hf_compat

    return hf_compat.stores_rope_parameters()


# p-RoPE exports as rope type 'proportional', which transformers 4 lacks: there the export is refused (tested below).
NEEDS_PROPORTIONAL = pytest.mark.skipif(not _has_proportional(), reason="this transformers has no 'proportional' "
                                        "rope type; the refusal is tested by test_p_rope_is_refused_...")

CASES = {  # name: (pe, overrides, lengths): RoPE and NoPE also at 2x the training length (past it)
    "rope-half": ("rope", {}, (TRAIN_LEN, 2 * TRAIN_LEN)),
    "rope-interleaved": ("rope", {"pairing": "interleaved"}, (TRAIN_LEN, 2 * TRAIN_LEN)),
    "rope-half-partial": ("rope", {"rotary_dim": 4}, (TRAIN_LEN, 2 * TRAIN_LEN)),
    "rope-interleaved-partial": ("rope", {"pairing": "interleaved", "rotary_dim": 4}, (TRAIN_LEN, 2 * TRAIN_LEN)),
    "rope-base500": ("rope", {"base": 500.0, "rotary_dim": 6}, (TRAIN_LEN, 2 * TRAIN_LEN)),
    "p_rope-half": ("p_rope", {"p": 0.5}, (TRAIN_LEN, 2 * TRAIN_LEN)),
    "p_rope-interleaved": ("p_rope", {"p": 0.75, "pairing": "interleaved", "base": 500.0}, (TRAIN_LEN, 2 * TRAIN_LEN)),
    "p_rope-zero": ("p_rope", {"p": 0.0}, (TRAIN_LEN,)),
    "nope": ("nope", {}, (TRAIN_LEN, 2 * TRAIN_LEN)),
    "learned": ("learned", {}, (TRAIN_LEN,)),
}


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("case", [pytest.param(c, marks=NEEDS_PROPORTIONAL) if c.startswith("p_rope") else c
                                  for c in CASES])
def test_exported_logits_equal_ropebench(trained_run, tmp_path, case, bias):
    pe, overrides, lengths = CASES[case]
    run = make_run(RunDir(trained_run), tmp_path / "run", pe, bias=bias, **overrides)
    out = export(run, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == (["GPT2LMHeadModel"] if pe == "learned" else ["GPTNeoXForCausalLM"])
    assert config.get("max_position_embeddings", config.get("n_positions")) == TRAIN_LEN
    # transformers 4 leaves out what equals the architecture's default (GPT-2 ties its embeddings by default)
    assert config["vocab_size"] == 257 and config["eos_token_id"] == 256
    assert config.get("tie_word_embeddings", pe == "learned")
    for attn in ("sdpa", "eager"):
        diff = max_logit_diff(run, out, lengths, attn)
        print(f"{case} bias={bias} {attn}: max |dlogit| = {diff:.3g}")
        assert diff < TOL, (case, attn, diff)


def test_interleaved_pairing_matters_so_the_test_above_can_fail(trained_run, tmp_path):
    """Reading an interleaved run as half-split changes the logits: the permutation is not a no-op here."""
    run = RunDir(make_run(RunDir(trained_run), tmp_path / "run", "rope", pairing="interleaved"))
    cfg = run.read_config()
    ours = load_model(run, cfg)
    cfg.pe.pairing = "half"
    wrong = load_model(run, cfg)
    ids = torch.randint(0, 257, (1, TRAIN_LEN))
    with torch.no_grad():
        assert (ours(ids)[0] - wrong(ids)[0]).abs().max() > 1e-2


@pytest.mark.parametrize("scaling", [
    {"type": "linear", "factor": 2.0},
    {"type": "dynamic", "factor": 2.0, "original_max_position_embeddings": TRAIN_LEN},
    {"type": "yarn", "factor": 2.0, "original_max_position_embeddings": TRAIN_LEN // 2},
    {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": TRAIN_LEN // 2, "beta_fast": 16.0,
     "attention_factor": 1.2},
], ids=lambda s: s["type"])
def test_training_time_rope_scaling_is_exported(trained_run, tmp_path, scaling):
    run = make_run(RunDir(trained_run), tmp_path / "run", "rope", pairing="interleaved", rotary_dim=6,
                   scaling=scaling)
    out = export(run, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    for params in (config["rope_parameters"], config["rope_scaling"]):  # transformers 5's schema, and 4's
        assert params["rope_type"] == scaling["type"] and params["factor"] == scaling["factor"]
    # increasing lengths: transformers' dynamic NTK keeps the frequencies of the longest length seen so far
    diff = max_logit_diff(run, out, (TRAIN_LEN // 2, TRAIN_LEN, 2 * TRAIN_LEN, 4 * TRAIN_LEN))
    print(f"rope+{scaling['type']}: max |dlogit| = {diff:.3g}")
    assert diff < TOL


def test_the_trained_run_exports_and_generates(trained_run, tmp_path):
    out = export(trained_run, tmp_path / "hf")
    assert max_logit_diff(trained_run, out, (TRAIN_LEN, 2 * TRAIN_LEN)) < TOL
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    prompt = tok("def f(x):", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=2 * TRAIN_LEN, do_sample=False, pad_token_id=256)
    assert generated.shape == (1, 9 + 2 * TRAIN_LEN)  # past the training length: RoPE has no table to run out of
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tok)
    assert pipe("import ", max_new_tokens=4, do_sample=False)[0]["generated_text"].startswith("import ")
    manifest = json.loads((out / "ropebench_export.json").read_text())
    assert (out / manifest["source_run"]).resolve() == trained_run.resolve() and manifest["train_seq_len"] == TRAIN_LEN
    assert manifest["pe"]["name"] == "rope" and manifest["ropebench_version"]
    assert str(tmp_path) not in (out / "ropebench_export.json").read_text()  # no absolute path of this machine
    assert "cache_dir" not in manifest["data"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_learned_export_generates_within_its_table(trained_run, tmp_path):
    out = export(make_run(RunDir(trained_run), tmp_path / "run", "learned"), tmp_path / "hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    prompt = torch.tensor([list(b"x = ")])
    assert model.generate(prompt, max_new_tokens=TRAIN_LEN - 4, do_sample=False).shape[1] == TRAIN_LEN
    # Without a length, generate stops at the end of the position table instead of failing past it.
    assert model.generate(**tok("x = ", return_tensors="pt"), do_sample=False).shape[1] == TRAIN_LEN
    card = (out / "README.md").read_text()
    assert f"at most {TRAIN_LEN} tokens" in card and "IndexError" in card


@pytest.mark.parametrize("pe", ["rope", "learned"])
def test_plain_transformers_scores_an_export_as_ropebench_does(trained_run, tmp_path, pe):
    """`tok(text)` gives exactly input_ids and attention_mask (GPT-2 would add a token-type embedding for
    token_type_ids), and the loss transformers computes from it is ropebench's loss on the same bytes; batches pad."""
    run = trained_run if pe == "rope" else make_run(RunDir(trained_run), tmp_path / "run", pe)
    out = export(run, tmp_path / "hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "def f(x): é"  # within the learned table's 16 positions
    inputs = tok(text, return_tensors="pt")
    assert sorted(inputs) == ["attention_mask", "input_ids"]
    assert inputs["input_ids"][0].tolist() == list(text.encode())
    ours_model = load_model(RunDir(run), RunDir(run).read_config())
    with torch.no_grad():
        theirs = model(**inputs, labels=inputs["input_ids"]).loss.item()
        ids = inputs["input_ids"]
        ours = ours_model(ids[:, :-1], ids[:, 1:])[1].item()
    print(f"{pe}: transformers loss {theirs:.6f}, ropebench {ours:.6f}")
    assert theirs == pytest.approx(ours, abs=1e-5)
    assert tok.pad_token == "<|endoftext|>" and tok.padding_side == "left"
    batch = tok(["x", "def g():"], return_tensors="pt", padding=True)
    out_ids = model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert out_ids.shape == (2, len("def g():") + 2)
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: transformers\n")


def test_eval_length_of_the_export_equals_the_runs(trained_run, corpus_dir, tmp_path):
    """`eval-length OUT` (transformers' model, the export's tokenizer) gives the rows `eval-length RUN` gives:
    at the training length and past it, plain and with --rope-scaling yarn (factor = eval_len / train_len)."""
    assert corpus_dir.is_dir()  # the run's text, recorded in the export's manifest
    run = make_run(RunDir(trained_run), tmp_path / "run", "rope", pairing="interleaved", rotary_dim=6)
    out = export(run, tmp_path / "hf")
    lengths = ("--lengths", f"{TRAIN_LEN},{TRAIN_LEN * 3 // 2},{4 * TRAIN_LEN}", "--max-tokens", 512)
    for scaling in ((), ("--rope-scaling", "yarn")):
        native = invoke("eval-length", run, *lengths, *scaling)
        assert native.exit_code == 0, native.output
        # No --data, no --max-tokens: an export is evaluated on its run's text with its run's settings by default.
        hf = invoke("eval-length", out, "--out", tmp_path / "results", *lengths[:2], *scaling)
        assert hf.exit_code == 0, hf.output
    key = ("eval_len", "rope_scaling")
    ours = {tuple(r[k] for k in key): r for r in RunDir(run).read_rows("eval_length.csv")}
    theirs = {tuple(r[k] for k in key): r for r in RunDir(tmp_path / "results").read_rows("eval_length.csv")}
    assert sorted(ours) == sorted(theirs) and len(ours) == 6
    for cell, row in ours.items():
        other = theirs[cell]
        assert row["status"] == other["status"] == "ok", (row, other)
        for column in ("n_tokens", "n_windows", "n_documents", "rope_factor", "rope_scale"):
            assert row[column] == other[column], (cell, column)
        print(f"eval {cell}: nll {float(row['nll']):.6f}, |dnll| = {abs(float(row['nll']) - float(other['nll'])):.2g}")
        assert float(row["nll"]) == pytest.approx(float(other["nll"]), abs=1e-5)
    assert ours[(str(4 * TRAIN_LEN), "yarn")]["nll"] != ours[(str(4 * TRAIN_LEN), "none")]["nll"]


def test_a_yarn_run_and_its_export_are_evaluated_and_labelled_alike(trained_run, corpus_dir, tmp_path):
    """A run fine-tuned with YaRN and its export carry the same scaling: evaluated as they are, their rows name it
    the same way and score the same."""
    assert corpus_dir.is_dir()
    scaling = {"type": "yarn", "factor": 2.0, "original_max_position_embeddings": TRAIN_LEN}
    run = make_run(RunDir(trained_run), tmp_path / "run", "rope", scaling=scaling)
    out = export(run, tmp_path / "hf")
    lengths = ("--lengths", f"{TRAIN_LEN},{2 * TRAIN_LEN}")
    assert invoke("eval-length", run, *lengths).exit_code == 0
    assert invoke("eval-length", out, "--out", tmp_path / "results", *lengths).exit_code == 0
    ours = {r["eval_len"]: r for r in RunDir(run).read_rows("eval_length.csv")}
    theirs = {r["eval_len"]: r for r in RunDir(tmp_path / "results").read_rows("eval_length.csv")}
    assert sorted(ours) == sorted(theirs) == [str(TRAIN_LEN), str(2 * TRAIN_LEN)]
    label = f"yarn(factor=2,original_max_position_embeddings={TRAIN_LEN})"
    for length, row in ours.items():
        assert row["rope_scaling"] == theirs[length]["rope_scaling"] == label
        assert float(row["nll"]) == pytest.approx(float(theirs[length]["nll"]), abs=1e-5)


def test_export_loads_without_ropebench(trained_run, tmp_path):
    """A fresh interpreter, outside the repository: transformers alone loads model and tokenizer, same logits."""
    out = export(trained_run, tmp_path / "hf")
    ids = torch.randint(0, 257, (1, 2 * TRAIN_LEN))
    run = RunDir(trained_run)
    with torch.no_grad():
        expected = load_model(run, run.read_config())(ids)[0]
    torch.save({"ids": ids, "logits": expected}, tmp_path / "expected.pt")
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"out = {str(out)!r}\n"
        "model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)\n"
        f"ref = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "with torch.no_grad():\n"
        "    diff = (model(ref['ids']).logits - ref['logits']).abs().max().item()\n"
        "assert diff < 1e-4, diff\n"
        "assert tok('héllo', add_special_tokens=False).input_ids == list('héllo'.encode())\n"
        "assert not [m for m in sys.modules if m.startswith('ropebench')], 'ropebench was imported'\n"
        "print('ok', type(model).__name__, type(tok).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok GPTNeoXForCausalLM")


@pytest.mark.parametrize("text", ["hello world", "héllo ✓ 日本", "\tindented\n  two spaces\r\nend\n", " leading",
                                  "a <|endoftext|> b", "", "\x00\x7f"])
def test_tokenizer_ids_are_the_utf8_bytes(trained_run, tmp_path_factory, text):
    out = tmp_path_factory.getbasetemp() / "tokenizer-export"
    if not out.exists():
        export(trained_run, out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok(text).input_ids == ids  # no BOS or EOS added: ropebench scores raw documents
    assert tok.eos_token_id == 256 and tok.decode([256]) == "<|endoftext|>" and len(tok) == 257


def test_a_subword_tokenizer_is_copied(tmp_path):
    """A run trained with data.tokenizer=DIR exports that tokenizer (ids and eos unchanged)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from ropebench.run.hf_tokenizer import load_run_tokenizer, save_tokenizer

    vocab = {"<unk>": 0, "</s>": 1, "hello": 2, "world": 3, "!": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    source = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>")
    source.save_pretrained(tmp_path / "tok")
    tok = load_run_tokenizer(OmegaConf.create({"tokenizer": str(tmp_path / "tok")}), None)
    assert tok.eos_token_id == 1
    save_tokenizer(tok, tmp_path / "out")
    copied = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert copied("hello world !", add_special_tokens=False).input_ids == [2, 3, 4] and copied.eos_token_id == 1


# ---- bad input: one line, exit 2, nothing written ----

@pytest.mark.parametrize("pe,overrides", [("alibi", {}), ("sinusoidal", {}), ("t5", {}), ("xpos", {}),
                                          ("kerple", {}), ("fire", {}), ("rope", {"rotate_values": True})])
def test_other_encodings_are_refused(trained_run, tmp_path, pe, overrides):
    run = make_run(RunDir(trained_run), tmp_path / "run", pe, weights=False, **overrides)
    line = fails_cleanly(["export-hf", run, tmp_path / "hf"], "export-hf supports pe=rope", "nope", "learned")
    assert f"pe={pe}" in line
    assert not (tmp_path / "hf").exists()


@NEEDS_PROPORTIONAL
def test_p_rope_exports_as_the_proportional_layout_not_a_partial_block(trained_run, tmp_path):
    """The export names transformers' proportional type; read as GPT-NeoX partial rotary (the same fraction as
    a contiguous block, what a legacy rotary_pct would give) it computes other logits."""
    run = make_run(RunDir(trained_run), tmp_path / "run", "p_rope", p=0.5)
    out = export(run, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "proportional" and "rotary_pct" not in config
    assert max_logit_diff(run, out, (2 * TRAIN_LEN,)) < TOL
    config["rope_parameters"]["rope_type"] = "default"
    (out / "config.json").write_text(json.dumps(config))
    assert max_logit_diff(run, out, (2 * TRAIN_LEN,)) > 1e-2


def test_p_rope_is_refused_by_a_transformers_without_the_proportional_type(trained_run, tmp_path, monkeypatch):
    """transformers 4 has no 'proportional' rope type, and its rotary_pct is the contiguous block: refused."""
    from ropebench.run import hf_compat

    monkeypatch.setattr(hf_compat, "stores_rope_parameters", lambda: False)  # as transformers 4 answers
    run = make_run(RunDir(trained_run), tmp_path / "run", "p_rope", weights=False, p=0.5)
    fails_cleanly(["export-hf", run, tmp_path / "hf"], "pe=p_rope", "'proportional'", "transformers 5")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("model,train,expected", [
    ({"layers": ["rope", "nope"]}, {}, "model.layers=[rope,nope] (a layer pattern)"),
    ({"windows": [8]}, {}, "model.windows (sliding-window attention)"),
    ({"logit_scale": "ssmax"}, {}, "model.logit_scale=ssmax"),
    ({}, {"drop_rope_at": 0.5}, "train.drop_rope_at"),
    ({}, {}, "resonance=true"),
])
def test_methods_without_an_hf_architecture_are_refused(trained_run, tmp_path, model, train, expected):
    run = make_run(RunDir(trained_run), tmp_path / "run", "rope", weights=False, resonance=not (model or train))
    cfg = OmegaConf.load(run / "config.yaml")
    for key, value in model.items():
        cfg.model[key] = value
    for key, value in train.items():
        cfg.train[key] = value
    OmegaConf.save(cfg, run / "config.yaml")
    fails_cleanly(["export-hf", run, tmp_path / "hf"], expected)
    assert not (tmp_path / "hf").exists()


def test_unexportable_training_scaling_is_refused(trained_run, tmp_path):
    run = make_run(RunDir(trained_run), tmp_path / "run", "rope",
                   scaling={"type": "ntk", "factor": 2.0, "original_max_position_embeddings": 8})
    fails_cleanly(["export-hf", run, tmp_path / "hf"], "rope scaling 'ntk'", "linear, dynamic, yarn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_missing_and_unfinished_runs_are_refused(trained_run, tmp_path):
    fails_cleanly(["export-hf", tmp_path / "nope", tmp_path / "hf"], "does not exist")
    unfinished = make_run(RunDir(trained_run), tmp_path / "unfinished", "rope", weights=False)
    fails_cleanly(["export-hf", unfinished, tmp_path / "hf"], "unfinished")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished"]


def test_existing_output_is_refused_unless_forced(trained_run, tmp_path):
    """--force replaces an earlier export (it holds ropebench_export.json), never any other directory."""
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for force in ([], ["--force"]):
        fails_cleanly(["export-hf", trained_run, out, *force], "is not an earlier export")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    fails_cleanly(["export-hf", trained_run, tmp_path / "file"], "not a directory")
    fails_cleanly(["export-hf", trained_run, trained_run, "--force"], "holds the run")
    fails_cleanly(["export-hf", trained_run, trained_run.parent, "--force"], "holds the run")
    assert RunDir(trained_run).is_finished()
    earlier = export(trained_run, tmp_path / "earlier")
    (earlier / "stale.txt").write_text("from before")
    fails_cleanly(["export-hf", trained_run, earlier], "holds an earlier export", "--force")
    export_forced = invoke("export-hf", trained_run, earlier, "--force")
    assert export_forced.exit_code == 0, export_forced.output
    assert not (earlier / "stale.txt").exists() and (earlier / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "file", "hf"]  # no temporary directory left
    empty = tmp_path / "empty"
    empty.mkdir()
    export(trained_run, empty)  # an empty directory is fine without --force


def test_without_transformers_says_how_to_install(trained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    fails_cleanly(["export-hf", trained_run, tmp_path / "hf"], "pip install -e '.[hf]'")
    assert not (tmp_path / "hf").exists()
