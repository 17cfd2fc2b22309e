"""`eval-length MODEL` / `passkey MODEL` on a Hugging Face causal LM: tiny random Llama, GPT-NeoX and GPT-2 models
and a BPE tokenizer built here (no download), checked against transformers' own loss and its own construction
of scaled RoPE, plus the CLI end to end and every refusal."""

import csv
import re
import shutil

import pytest
import torch
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.core.rope.freqs import scaling_for_length, scaling_from_options
from ropebench.eval import hf_model, hf_passkey
from ropebench.eval.hf_model import HFCausalLM
from ropebench.eval.hf_passkey import KEY, PromptBuilder
from ropebench.eval.hf_session import HFRequest, hf_eval_length
from ropebench.run import hf_compat

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
runner = CliRunner()
pytestmark = pytest.mark.hf  # also run with the oldest transformers the [hf] extra accepts (.ci/run)
MAX_POS = 32


@pytest.fixture(scope="module")
def small_text(tmp_path_factory, corpus_dir):
    """A few of the corpus's files: text given by path is scored whole, every token with its cropped baseline."""
    text = tmp_path_factory.mktemp("text")
    for f in sorted(corpus_dir.iterdir())[:3]:
        shutil.copy(f, text / f.name)
    return text


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, corpus_dir):
    """A tokenizer (byte-level BPE, 400 ids, trained on a few corpus files) and four models saved beside it."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("hf")
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([p.read_text() for p in sorted(corpus_dir.iterdir())[:4]], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    vocab, eos = tok.get_vocab_size(), fast.eos_token_id
    shape = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=MAX_POS, eos_token_id=eos, bos_token_id=eos,
                 initializer_range=0.5)  # large weights: sharp attention and logits, so positions matter
    torch.manual_seed(0)
    built = {
        "llama": transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, **shape)),
        "neox": transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(rotary_pct=0.5, **shape)),
        "gpt2": transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2,
                                                                     n_head=4, n_positions=MAX_POS)),
        "bert": transformers.BertForMaskedLM(transformers.BertConfig(**{**shape, "num_hidden_layers": 1})),
    }
    # The same Llama with a RoPE scaling in its own config (linear, factor 2): what a long-context checkpoint ships.
    llama = built["llama"].config
    scaled = hf_compat.with_rope_parameters(llama, {**hf_compat.rope_parameters(llama), "rope_type": "linear",
                                                    "factor": 2.0})
    built["llama_scaled"] = transformers.LlamaForCausalLM(scaled)
    built["llama_scaled"].load_state_dict(built["llama"].state_dict())
    for name, model in built.items():
        model.save_pretrained(root / name)
        fast.save_pretrained(root / name)
    shutil.copytree(root / "llama", root / "no_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (root / "no_tokenizer" / name).unlink()
    (root / "neither").mkdir()
    return root


def load(path, **kwargs):
    return transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", **kwargs).eval()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", ["llama", "neox"])
def test_window_nll_is_the_models_own_loss(hf_dir, monkeypatch, name):
    # Tiny chunks of positions and micro-batches of 2 windows: the chunked path, not one big matmul.
    monkeypatch.setattr(hf_model, "LOGITS_BUDGET", 2 * 400 * 5)
    model = load(hf_dir / name)
    ids = torch.randint(0, 400, (3, 41), generator=torch.Generator().manual_seed(1))
    _, nll = HFCausalLM(model, batch_size=2)(ids[:, :-1], ids[:, 1:])
    assert nll.shape == (3, 40)
    with torch.no_grad():
        own = model(ids, labels=ids).loss  # transformers' mean over every target of the batch
    torch.testing.assert_close(nll.mean(), own, rtol=1e-5, atol=1e-6)


def scored_windows_nll(hf_dir, out, length, split):
    """Token-weighted NLL over the windows ropebench scored, each computed by the model's own loss with the
    unscored targets masked (-100): the independent reference for one evaluated length."""
    from omegaconf import OmegaConf

    from ropebench.data import load_corpus
    from ropebench.eval.perplexity import PerplexityProbe, make_windows
    from ropebench.eval.runner import Session

    session = Session(out)
    probe = PerplexityProbe(max_tokens=int(session.cfg.eval.max_tokens), region_len=int(session.cfg.eval.region_len),
                            split=split)
    probe.corpus = load_corpus(OmegaConf.create(session.cfg.data), log=lambda *a: None)
    held_out = probe.corpus.held_out(split)
    model, total, count = load(hf_dir / "llama"), 0.0, 0
    for w in make_windows(probe.documents(session, length), length, "nonoverlapping", length):
        ids = torch.from_numpy(held_out.tokens[w.start : w.start + length + 1].astype("int64"))[None]
        labels = ids.clone()
        labels[:, : length + 1 - w.n_score] = -100  # HF shifts labels by one: these are the unscored targets
        with torch.no_grad():
            total += model(ids, labels=labels).loss.item() * w.n_score
        count += w.n_score
    return total / count, count


def test_eval_length_scores_the_same_tokens_as_the_models_own_loss(hf_dir, small_text, tmp_path):
    out = tmp_path / "llama"
    request = HFRequest(str(hf_dir / "llama"), out, data=str(small_text), batch_size=3)
    rows = hf_eval_length(request, [32, 48], log=lambda *a: None)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["n_tokens"] == rows[1]["n_tokens"]  # the same targets at every length
    for row in rows:
        nll, count = scored_windows_nll(hf_dir, out, row["eval_len"], row["split"])
        assert row["n_tokens"] == count
        assert row["nll"] == pytest.approx(nll, rel=1e-5)


LLAMA_REFERENCE = {  # rope_parameters written by hand in transformers' schema, at length 64 (2x MAX_POS)
    "linear": {"rope_type": "linear", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": MAX_POS},
    "dynamic": {"rope_type": "dynamic", "factor": 1.0},
    "llama3": {"rope_type": "llama3", "factor": 2.0, "original_max_position_embeddings": MAX_POS,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0},
    # ropebench's static NTK-aware scaling: the default RoPE with base b * s^(d/(d-2)), head_dim d = 8
    "ntk": {"rope_type": "default", "rope_theta": 10000.0 * 2.0 ** (8 / 6)},
}
NEOX_REFERENCE = {"linear": {"rope_type": "linear", "factor": 2.0},
                  "yarn": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": MAX_POS},
                  # rotary_pct 0.5 of head_dim 8: d = 4 rotated channels
                  "ntk": {"rope_type": "default", "rope_theta": 10000.0 * 2.0 ** (4 / 2)}}
CASES = [("llama", k, v) for k, v in LLAMA_REFERENCE.items()] + [("neox", k, v) for k, v in NEOX_REFERENCE.items()]


@pytest.mark.parametrize(("name", "kind", "reference"), CASES, ids=[f"{n}-{k}" for n, k, _ in CASES])
def test_rope_scaling_equals_transformers_own_construction(hf_dir, name, kind, reference):
    model = load(hf_dir / name)
    ids = torch.randint(0, 400, (2, 2 * MAX_POS + 1), generator=torch.Generator().manual_seed(2))
    adapter = HFCausalLM(model, batch_size=2)
    unscaled = adapter(ids[:, :-1], ids[:, 1:])[1]
    spec, _ = scaling_for_length(scaling_from_options(kind), 2 * MAX_POS, MAX_POS)
    adapter.pe.set_scaling(spec)
    ours = adapter(ids[:, :-1], ids[:, 1:])[1]
    config = transformers.AutoConfig.from_pretrained(hf_dir / name)
    config = hf_compat.with_rope_parameters(config, {**hf_compat.rope_parameters(config), **reference})
    theirs = load(hf_dir / name, config=config)
    with torch.no_grad():
        logits = theirs(ids[:, :-1]).logits.float()
    theirs_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    torch.testing.assert_close(ours, theirs_nll, rtol=1e-4, atol=1e-4)  # token by token
    assert (ours - unscaled).abs().max() > 1e-2  # the scaling changed the predictions
    adapter.pe.set_scaling(None)
    torch.testing.assert_close(adapter(ids[:, :-1], ids[:, 1:])[1], unscaled)


def fake_run(path):
    """A ropebench run's results as plot and table read them: config.yaml and eval_length.csv."""
    path.mkdir()
    (path / "config.yaml").write_text("model: {name: tiny}\npe: {name: rope}\ndata: {name: stdlib, tokenizer: bytes}"
                                      "\ntrain: {seq_len: 32}\neval: {max_tokens: 512}\nseed: 0\n")
    (path / "eval_length.csv").write_text("pe,train_seq_len,eval_len,split,protocol,stride,rope_scaling,ppl,nll,"
                                          "status\nrope,32,32,test,nonoverlapping,32,none,3.0,1.1,ok\n"
                                          "rope,32,64,test,nonoverlapping,64,none,4.0,1.4,ok\n")
    return path


def test_cli_results_read_by_table_and_plot_beside_a_run(hf_dir, small_text, tmp_path):
    llama, gpt2, run = tmp_path / "llama", tmp_path / "gpt2", fake_run(tmp_path / "run")
    result = invoke("eval-length", hf_dir / "llama", "--out", llama, "--data", small_text, "--lengths", "32,64",
                    "--rope-scaling", "yarn")
    assert result.exit_code == 0, result.output
    result = invoke("eval-length", hf_dir / "llama", "--out", llama, "--data", small_text, "--lengths", "32,48")
    assert result.exit_code == 0, result.output  # the same model: rows appended
    rows = read_csv(llama / "eval_length.csv")
    assert {(r["eval_len"], r["rope_scaling"]) for r in rows} == {("32", "yarn"), ("64", "yarn"), ("32", "none"),
                                                                  ("48", "none")}
    assert {r["model"] for r in rows} == {r["tokenizer"] for r in rows} == {str(hf_dir / "llama")}
    assert {r["status"] for r in rows} == {"ok"}
    result = invoke("eval-length", hf_dir / "gpt2", "--out", gpt2, "--data", small_text, "--lengths", "32,64")
    assert result.exit_code == 0, result.output
    assert [r["status"].split(":")[0] for r in read_csv(gpt2 / "eval_length.csv")] == ["ok", "not_applicable"]
    table = invoke("table", llama, gpt2, run)
    assert table.exit_code == 0, table.output
    assert re.search(r"^\| llama\b", table.output, re.M) and re.search(r"^\| llama\+yarn\b", table.output, re.M)
    assert re.search(r"^\| gpt2\b.*\| n/a \|", table.output, re.M) and re.search(r"^\| rope\b", table.output, re.M)
    figure = invoke("plot", llama, gpt2, run, "--out", tmp_path / "fig.png")
    assert figure.exit_code == 0, figure.output
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_text_given_by_path_is_scored_whole(hf_dir, corpus_dir, tmp_path):
    """--data FILES: every document given is scored (none held out as training data), every token of each; one
    file is a corpus of one document. n_documents says how many, in every row."""
    files = sorted(corpus_dir.iterdir())[:20]
    texts = tmp_path / "texts"
    texts.mkdir()
    for f in files:
        shutil.copy(f, texts / f.name)
    out = tmp_path / "out"
    result = invoke("eval-length", hf_dir / "llama", "--out", out, "--data", texts, "--lengths", "32,64")
    assert result.exit_code == 0, result.output
    assert "scoring every document of the text given, each whole: 20 documents" in result.stderr
    rows = read_csv(out / "eval_length.csv")
    assert [int(r["n_documents"]) for r in rows] == [20, 20]  # every file is longer than 64 tokens
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir / "llama")
    every = sum(len(tokenizer(f.read_text(), add_special_tokens=False).input_ids) for f in files)
    assert int(rows[0]["n_tokens"]) == every - len(files)  # each document's every target, none twice
    one = tmp_path / "one"
    result = invoke("eval-length", hf_dir / "llama", "--out", one, "--data", files[0], "--lengths", "32")
    assert result.exit_code == 0, result.output
    assert [int(r["n_documents"]) for r in read_csv(one / "eval_length.csv")] == [1]


def test_the_models_own_rope_scaling_names_its_rows_and_none_removes_it(hf_dir, small_text, tmp_path):
    out = tmp_path / "out"
    args = ["eval-length", hf_dir / "llama_scaled", "--out", out, "--data", small_text, "--lengths", "32"]
    assert invoke(*args).exit_code == 0
    assert invoke(*args, "--rope-scaling", "none").exit_code == 0
    rows = {r["rope_scaling"]: r for r in read_csv(out / "eval_length.csv")}
    assert sorted(rows) == ["linear(factor=2)", "none"]
    plain = tmp_path / "plain"
    assert invoke("eval-length", hf_dir / "llama", "--out", plain, "--data", small_text, "--lengths", "32",
                  "--rope-scaling", "linear", "--factor", "2").exit_code == 0
    unscaled = tmp_path / "unscaled"
    assert invoke("eval-length", hf_dir / "llama", "--out", unscaled, "--data", small_text,
                  "--lengths", "32").exit_code == 0

    def nll(path):
        return float(read_csv(path / "eval_length.csv")[0]["nll"])

    # The model's own scaling is what --rope-scaling linear --factor 2 does to the same weights; none, the raw model.
    assert float(rows["linear(factor=2)"]["nll"]) == pytest.approx(nll(plain), abs=1e-6)
    assert float(rows["none"]["nll"]) == pytest.approx(nll(unscaled), abs=1e-6)
    assert rows["none"]["nll"] != rows["linear(factor=2)"]["nll"]
    result = invoke(*args, "--rope-scaling", "yarn")
    assert result.exit_code == 2 and "already scales its RoPE" in result.stderr, result.output


def test_out_of_memory_at_one_length_is_a_status(hf_dir, small_text, tmp_path, monkeypatch):
    real = HFCausalLM._nll

    def short_memory(self, rows, targets):
        if rows.shape[1] == 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, rows, targets)

    monkeypatch.setattr(HFCausalLM, "_nll", short_memory)
    out = tmp_path / "out"
    result = invoke("eval-length", hf_dir / "llama", "--out", out, "--data", small_text, "--lengths", "32,64,128")
    assert result.exit_code == 1, result.output
    assert [r["status"] for r in read_csv(out / "eval_length.csv")] == [
        "ok", "error: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "ok"]


def test_passkey_prompt_has_the_length_and_the_key_at_the_depth(hf_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir / "llama")
    builder = PromptBuilder(tokenizer)
    before_filler = len(builder.lead) + len(builder.task)
    for length in (200, 333):
        for depth in (0.0, 0.25, 0.5, 1.0):
            prompt = builder.build(length, depth, 12345)
            assert len(prompt.ids) == length
            assert prompt.key_start - before_filler == round(depth * prompt.filler)
            key_ids = tokenizer.encode(KEY.format(key=12345), add_special_tokens=False)
            assert prompt.ids[prompt.key_start : prompt.key_start + len(key_ids)] == key_ids
            text = tokenizer.decode(prompt.ids)
            assert text.startswith("There is an important info") and text.endswith("The pass key is")
            assert text.count("12345") == 2
            assert "The grass is green." in text
    with pytest.raises(Exception, match="needs at least"):
        builder.build(50, 0.5, 12345)


def test_passkey_cli_writes_the_csv_and_the_heatmap(hf_dir, corpus_dir, tmp_path):
    out = tmp_path / "pk"
    # An OUT that holds the model's perplexity on other text takes its passkey rows too: passkey reads no text.
    assert invoke("eval-length", hf_dir / "llama", "--out", out, "--data", corpus_dir, "--lengths", "32").exit_code == 0
    result = invoke("passkey", hf_dir / "llama", "--out", out, "--lengths", "192,256", "--depths", "0,1",
                    "--trials", "2", "--batch-size", "2", "--rope-scaling", "linear")
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "passkey.csv")
    assert [(r["eval_len"], r["depth"], r["status"]) for r in rows] == [
        ("192", "0.0", "ok"), ("192", "1.0", "ok"), ("256", "0.0", "ok"), ("256", "1.0", "ok")]
    assert {r["rope_scaling"] for r in rows} == {"linear"}
    figure = invoke("plot", out, "--passkey", "--out", tmp_path / "pk.png")
    assert figure.exit_code == 0, figure.output


def test_passkey_counts_a_decoded_key_as_correct(hf_dir, tmp_path, monkeypatch):
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir / "llama")

    def answers_the_key(hf, prompts, device):  # a perfect model: decodes " 12345." after each prompt
        keys = [re.search(r"pass key is (\d{5})", tokenizer.decode(p)).group(1) for p in prompts]
        return [tokenizer.encode(f" {k}.", add_special_tokens=False) for k in keys]

    monkeypatch.setattr(hf_passkey, "greedy_continuations", answers_the_key)
    rows = hf_passkey.hf_passkey(HFRequest(str(hf_dir / "llama"), tmp_path / "pk"), [200], [0.5], trials=3,
                          log=lambda *a: None)
    assert [(r["correct"], r["accuracy"]) for r in rows] == [(3, 1.0)]


def bad_cases(hf_dir, corpus_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("pe: {name: rope}\n")
    out = ["--out", tmp_path / "out"]
    return {
        "neither": (["eval-length", hf_dir / "neither", *out], "neither a ropebench run directory"),
        "encoder": (["eval-length", hf_dir / "bert", *out], "not a causal language model"),
        "no_tokenizer": (["eval-length", hf_dir / "no_tokenizer", *out], "has no tokenizer"),
        "rope_on_gpt2": (["eval-length", hf_dir / "gpt2", *out, "--rope-scaling", "yarn"],
                         "no rotary position embedding"),
        "passkey_rope_on_gpt2": (["passkey", hf_dir / "gpt2", *out, "--rope-scaling", "linear"],
                                 "no rotary position embedding"),
        "no_out": (["eval-length", hf_dir / "llama"], "add --out"),
        "hf_option_on_run": (["eval-length", run, "--dtype", "float16"], "--dtype applies to a Hugging Face model"),
        "dtype": (["eval-length", hf_dir / "llama", *out, "--dtype", "float8"], "unknown dtype 'float8'"),
        "data": (["eval-length", hf_dir / "llama", *out, "--data", "nowhere.txt"], "--data 'nowhere.txt'"),
        "hub_offline": (["eval-length", "nobody-xyz/missing-model", *out], "nor a Hugging Face model"),
        "passkey_too_short": (["passkey", hf_dir / "llama", *out, "--lengths", "32"], "shorter than the prompt"),
    }


@pytest.mark.parametrize("case", ["neither", "encoder", "no_tokenizer", "rope_on_gpt2", "passkey_rope_on_gpt2",
                                  "no_out", "hf_option_on_run", "dtype", "data", "hub_offline", "passkey_too_short"])
def test_bad_input_is_one_line_and_writes_nothing(hf_dir, corpus_dir, tmp_path, case):
    args, expected = bad_cases(hf_dir, corpus_dir, tmp_path)[case]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert expected in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_another_model_into_the_same_out_is_refused(hf_dir, corpus_dir, tmp_path):
    out = tmp_path / "out"
    assert invoke("eval-length", hf_dir / "llama", "--out", out, "--data", corpus_dir, "--lengths", "32").exit_code == 0
    before = (out / "eval_length.csv").read_text()
    result = invoke("eval-length", hf_dir / "neox", "--out", out, "--data", corpus_dir, "--lengths", "32")
    assert result.exit_code == 2 and "hf.model" in result.stderr, result.output
    assert (out / "eval_length.csv").read_text() == before


def test_a_causal_lm_that_attends_ahead_is_refused(hf_dir, tmp_path):
    # Saved as a causal-LM class, but run as an encoder (is_decoder=False): caught on the weights.
    model = transformers.BertLMHeadModel(transformers.BertConfig(vocab_size=400, hidden_size=32, num_hidden_layers=1,
                                                                 num_attention_heads=4, intermediate_size=64))
    model.save_pretrained(tmp_path / "bert_lm")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(hf_dir / "llama" / name, tmp_path / "bert_lm" / name)
    result = invoke("eval-length", tmp_path / "bert_lm", "--out", tmp_path / "out", "--lengths", "32")
    assert result.exit_code == 2 and "depend on later tokens" in result.stderr, result.output
    assert not (tmp_path / "out").exists()


def test_trust_remote_code_reaches_the_tokenizer(hf_dir, corpus_dir, tmp_path):
    """A model whose tokenizer ships its own class (auto_map): refused in one line without --trust-remote-code,
    loaded and run with it."""
    import json

    model = tmp_path / "custom"
    shutil.copytree(hf_dir / "llama", model)
    (model / "custom_tokenizer.py").write_text(
        "from transformers import PreTrainedTokenizerFast\n\n\nclass CustomTokenizer(PreTrainedTokenizerFast):\n"
        "    pass\n")
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="CustomTokenizer",
                  auto_map={"AutoTokenizer": [None, "custom_tokenizer.CustomTokenizer"]})
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    args = ["eval-length", model, "--out", tmp_path / "out", "--data", corpus_dir, "--lengths", "32"]
    result = invoke(*args)
    assert result.exit_code == 2 and "--trust-remote-code" in result.stderr, result.output
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()
    result = invoke(*args, "--trust-remote-code")
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in read_csv(tmp_path / "out" / "eval_length.csv")] == ["ok"]
