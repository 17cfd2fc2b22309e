"""Smoke tests of the benchmarks: tiny CPU shapes, seconds; the numbers themselves are not checked."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import pe_config, tiny_model
from omegaconf import OmegaConf
from typer.testing import CliRunner

from ropebench.bench.cli import bench_app
from ropebench.bench.rope_bench import bench_rope, parse_shape
from ropebench.bench.train_bench import bench_train
from ropebench.core.model import GPT
from ropebench.errors import UserError
from ropebench.run.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_bench_rope_cli(tmp_path):
    out = tmp_path / "rope.json"
    result = runner.invoke(
        bench_app,
        [
            "rope",
            "--device",
            "cpu",
            "--shapes",
            "none",
            "--shape",
            "1,16,3,8",
            "--backends",
            "torch,complex",
            "--reps",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "only check that the benchmark works" in result.output
    rows = json.loads(out.read_text())["rows"]
    expected = {(b, p) for b in ("torch", "complex") for p in ("fwd", "fwd+bwd")}
    assert {(r["backend"], r["pass"]) for r in rows} == expected
    assert all(r["us"] > 0 and r["frac_of_copy"] > 0 for r in rows)


def test_bench_rope_small_shapes_interleaved_contiguous():
    result = bench_rope(
        shapes="small",
        names=["torch"],
        dtype="fp32",
        pairing="interleaved",
        layout="contiguous",
        device="cpu",
        reps=1,
        echo=lambda _: None,
    )
    assert len(result["rows"]) == 2 * 2


def test_bench_rope_rejects_bad_input():
    with pytest.raises(UserError, match="B,S,H,D"):
        parse_shape("8,4096,32")
    with pytest.raises(UserError, match="unknown rope backend 'fast'"):
        bench_rope(shapes="none", extra_shape=(1, 8, 2, 8), names=["fast"], device="cpu", echo=lambda _: None)
    result = runner.invoke(bench_app, ["rope", "--device", "cpu", "--dtype", "fp8"])
    assert result.exit_code == 2 and "unknown dtype 'fp8'" in result.output


def test_bench_train_cli(tmp_path):
    out = tmp_path / "train.json"
    result = runner.invoke(
        bench_app,
        [
            "train",
            "--device",
            "cpu",
            "--model",
            "tiny",
            "--encodings",
            "nope,learned,rope:torch,alibi,t5",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--peak-tflops",
            "989",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["encoding"] for r in rows] == ["nope", "learned", "rope:torch", "alibi", "t5"]
    assert rows[0]["ratio_to_nope"] == 1.0
    assert all(r["ms_per_step"] > 0 and 0 < r["mfu"] < 1 for r in rows)


def test_bench_train_rejects_unknown_encoding():
    result = runner.invoke(bench_app, ["train", "--device", "cpu", "--encodings", "nope,xpos2"])
    assert result.exit_code == 2 and "unknown encoding or method 'xpos2'" in result.output


def test_bench_train_without_known_peak_has_no_mfu():
    result = bench_train(encodings=["nope"], model="tiny", batch_size=1, seq_len=8, steps=1, warmup=0, device="cpu",
                         echo=lambda _: None)
    assert result["peak_flops"] is None and result["rows"][0]["mfu"] is None


# --- scripts/bench_vs_nanogpt.py: the baseline must be nanoGPT's model, not merely "nanoGPT-like" -------------

def _load_script():
    spec = importlib.util.spec_from_file_location("bench_vs_nanogpt", REPO / "scripts" / "bench_vs_nanogpt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nanogpt_baseline_has_nanogpts_module_tree():
    """Parameter names and shapes as nanoGPT's model.py names them (bias=False), the head tied to wte."""
    nano = _load_script().NanoGPT(vocab=257, block_size=8, n_layer=2, n_embd=16, n_head=2)
    d = 16
    per_layer = {"ln_1.weight": (d,), "attn.c_attn.weight": (3 * d, d), "attn.c_proj.weight": (d, d),
                 "ln_2.weight": (d,), "mlp.c_fc.weight": (4 * d, d), "mlp.c_proj.weight": (d, 4 * d)}
    expected = {"transformer.wte.weight": (257, d), "transformer.wpe.weight": (8, d),
                "transformer.ln_f.weight": (d,), "lm_head.weight": (257, d),
                **{f"transformer.h.{i}.{k}": v for i in range(2) for k, v in per_layer.items()}}
    assert {k: tuple(v.shape) for k, v in nano.state_dict().items()} == expected
    assert nano.lm_head.weight is nano.transformer.wte.weight
    assert isinstance(nano.transformer.h[0].mlp.gelu, torch.nn.GELU)
    # GPT-2's init: N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 * n_layer)), LayerNorm weights 1
    big = _load_script().NanoGPT(vocab=257, block_size=8, n_layer=2, n_embd=256, n_head=4)
    assert abs(big.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 1e-3
    assert abs(big.transformer.h[0].mlp.c_proj.weight.std().item() - 0.01) < 1e-3
    assert torch.equal(big.transformer.ln_f.weight, torch.ones(256))


def test_nanogpt_optimizer_groups():
    nano = _load_script().NanoGPT(vocab=257, block_size=8, n_layer=2, n_embd=16, n_head=2, bias=True)
    opt = nano.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    d = 16  # decayed: wte (= head, once), wpe, and the four matrices per layer; biases and norms not
    assert sum(p.numel() for p in decay["params"]) == 257 * d + 8 * d + 2 * 12 * d * d
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 2 * 8 + 2


def test_nanogpt_baseline_computes_what_ropebench_learned_computes():
    """Two independently written models of the same architecture: with the same weights, the same logits."""
    nano = _load_script().NanoGPT(vocab=257, block_size=8, n_layer=2, n_embd=16, n_head=2).eval()
    ours = GPT(OmegaConf.structured(ModelConfig(n_layer=2, n_head=2, n_embd=16)), pe_config("learned"),
               vocab_size=257, train_seq_len=8).eval()
    theirs = nano.state_dict()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            source = {"wte.weight": "transformer.wte.weight", "pe.wpe.weight": "transformer.wpe.weight",
                      "ln_f.weight": "transformer.ln_f.weight"}.get(name, name.replace("blocks.", "transformer.h."))
            p[: theirs[source].shape[0]] = theirs[source]
    idx = torch.randint(0, 257, (3, 8), generator=torch.Generator().manual_seed(0))
    ours_logits, ours_loss = ours(idx, idx)
    nano_logits, nano_loss = nano(idx, idx)
    torch.testing.assert_close(ours_logits[..., :257], nano_logits, atol=1e-5, rtol=1e-5)
    if ours_logits.shape[-1] == 257:  # no padded rows: the loss is the same too
        torch.testing.assert_close(ours_loss, nano_loss, atol=1e-5, rtol=1e-5)


def test_nanogpt_rope_baseline_computes_what_ropebench_rope_computes():
    """The nanoGPT+RoPE contestant (rotate_half with full-width tables) and ropebench's RoPE (any backend `auto`
    picks here), with the same weights: the same logits -- so the throughput ratio compares equal work."""
    nano = _load_script().NanoGPT(vocab=257, block_size=8, n_layer=2, n_embd=16, n_head=2, rope=True).eval()
    assert "transformer.wpe.weight" not in nano.state_dict()
    ours = GPT(OmegaConf.structured(ModelConfig(n_layer=2, n_head=2, n_embd=16)), pe_config("rope"),
               vocab_size=257, train_seq_len=8).eval()
    theirs = nano.state_dict()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            source = {"wte.weight": "transformer.wte.weight",
                      "ln_f.weight": "transformer.ln_f.weight"}.get(name, name.replace("blocks.", "transformer.h."))
            p.copy_(theirs[source])
    idx = torch.randint(0, 257, (3, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours(idx, idx)[0], nano(idx, idx)[0], atol=1e-5, rtol=1e-5)


def test_bench_vs_nanogpt_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "nv.json"
    result = _load_script().main(["--pe", "learned", "--pe", "rope,alibi", "--n-layer", "1", "--n-embd", "16",
                                  "--n-head", "2", "--seq-len", "8", "--batch", "2", "--steps", "3", "--rounds", "2",
                                  "--json", str(out)])
    printed = capsys.readouterr().out
    for part in ("step", "model"):
        for pe in ("learned", "rope", "alibi"):
            assert f"RATIO {part} ropebench pe={pe} / nanoGPT" in printed
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result))
    assert data["optimizers"]["nanoGPT"] == "AdamW, default loop"  # nanoGPT fuses AdamW on CUDA only
    assert data["optimizers"]["ropebench pe=rope"] == "AdamW, fused"
    for part in ("step", "model"):
        rates = data[part]["tokens_per_s_rounds"]
        assert set(rates) == {"nanoGPT", "nanoGPT+RoPE", "ropebench pe=learned", "ropebench pe=rope",
                              "ropebench pe=alibi"}
        assert all(len(v) == 2 and min(v) > 0 for v in rates.values())
        r = data[part]["ratios"]["ropebench pe=rope"]
        assert r["baseline"] == "nanoGPT+RoPE"  # RoPE is compared with nanoGPT plus RoPE, not with learned positions
        assert r["ratio_of_medians"] == pytest.approx(data[part]["tokens_per_s_median"]["ropebench pe=rope"]
                                                      / data[part]["tokens_per_s_median"]["nanoGPT+RoPE"])
        assert data[part]["ratios"]["ropebench pe=alibi"]["baseline"] == "nanoGPT"
    for name in rates:  # the model alone is a part of the step: never slower
        assert min(a / b for a, b in zip(data["model"]["tokens_per_s_rounds"][name],
                                         data["step"]["tokens_per_s_rounds"][name])) > 1


def test_bench_vs_nanogpt_rejects_bad_input():
    script = _load_script()
    with pytest.raises(SystemExit, match="unknown encoding \\(--pe\\) 'rpoe'"):
        script.main(["--pe", "rpoe"])
    with pytest.raises(SystemExit, match="--rounds must be a positive integer, got 0"):
        script.main(["--rounds", "0"])
    with pytest.raises(UserError, match="--nanogpt '/nonexistent/model.py' is not a file"):
        script.load_nanogpt_file(Path("/nonexistent/model.py"), None, torch.device("cpu"))


# --- evaluation cost: ropebench bench eval ----------------------------------------------------------------------

def test_bench_eval_cli(tmp_path):
    out = tmp_path / "eval.json"
    result = runner.invoke(bench_app, ["eval", "--device", "cpu", "--model", "tiny", "--train-len", "8",
                                       "--encodings", "rope,alibi", "--tokens", "64", "--batch-tokens", "32",
                                       "--reps", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["encoding"], r["eval_len"]) for r in rows] == [(e, n) for n in (8, 32, 128) for e in ("rope", "alibi")]
    for r in rows:
        n_windows = max(1, 64 // r["eval_len"])
        assert r["status"] == "ok" and r["n_windows"] == n_windows and r["n_tokens"] == n_windows * r["eval_len"]
        assert r["tokens_per_s"] > 0 and r["score_s"] > 0 and r["forward_only_s"] > 0
        # one dense (H, T, T) bias per forward for ALiBi on the CPU (SDPA path), none for RoPE
        assert r["bias_calls_per_forward"] == (1 if r["encoding"] == "alibi" else 0)
        assert r["bias_shapes"] == ([[4, r["eval_len"], r["eval_len"]]] if r["encoding"] == "alibi" else [])


def test_bench_eval_rejects_bad_input():
    result = runner.invoke(bench_app, ["eval", "--device", "cpu", "--lengths", "64,0"])
    assert result.exit_code == 2 and "evaluation length '0' is not a positive integer" in result.output
    result = runner.invoke(bench_app, ["eval", "--device", "cpu", "--encodings", "rope,alibbi"])
    assert result.exit_code == 2 and "unknown encoding 'alibbi'" in result.output
    result = runner.invoke(bench_app, ["eval", "--device", "cpu", "--reps", "0"])
    assert result.exit_code == 2 and "--reps must be positive, got 0" in result.output


def test_forward_only_feeds_the_model_what_score_windows_feeds_it():
    """The "without bookkeeping" loop must time the same batches through the same call, or the share is wrong."""
    from ropebench.bench.eval_bench import forward_only
    from ropebench.eval.perplexity import make_windows, score_windows

    model = tiny_model("rope", n_layer=1)
    tokens = np.random.default_rng(0).integers(0, 257, 5 * 16 + 1).astype(np.uint16)
    windows = make_windows([(0, len(tokens))], 16, "nonoverlapping", 16)
    seen = {"score": [], "forward": []}
    for key, run in (("score", lambda: score_windows(model, tokens, windows, 16, 2, torch.device("cpu"), 4)),
                     ("forward", lambda: forward_only(model, tokens, windows, 16, 2, torch.device("cpu")))):
        hook = model.register_forward_hook(lambda m, args, kwargs, out, key=key: seen[key].append(
            (args[0].clone(), args[1].clone(), kwargs.get("reduction"))), with_kwargs=True)
        run()
        hook.remove()
    assert len(seen["score"]) == len(seen["forward"]) == 3  # 5 windows in batches of 2
    for (x1, y1, r1), (x2, y2, r2) in zip(seen["score"], seen["forward"]):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and r1 == r2 == "none"


class _TTAllocations(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every fresh tensor (not a view of an earlier one) whose last two dims are (T, T)."""

    def __init__(self, T):
        super().__init__()
        self.T, self.kept, self.storages = T, [], set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and tuple(t.shape[-2:]) == (self.T, self.T):
                self.kept.append(t)  # held, so a freed block cannot be reused and counted twice
                self.storages.add((t.untyped_storage().data_ptr(), t.numel(), t.dtype))
        return out


def _tt_allocations(pe, n_layer, autocast):
    model = tiny_model(pe, n_layer=n_layer)
    idx = torch.randint(0, 257, (2, 17))
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.no_grad()
    with torch.no_grad(), context, _TTAllocations(16) as rec:
        model(idx[:, :-1], idx[:, 1:], reduction="none")
    return sorted((numel, str(dtype)) for _, numel, dtype in rec.storages if numel >= 4 * 16 * 16)


@pytest.mark.parametrize("pe", ["alibi", "t5", "fire", "kerple"])
def test_bias_encodings_build_their_bias_once_per_forward(pe):
    """pe.bias runs once per forward, shared by every layer."""
    from ropebench.bench.eval_bench import BiasCounter

    model = tiny_model(pe, n_layer=3)
    with torch.no_grad(), BiasCounter(model.pe) as counter:
        model(torch.randint(0, 257, (2, 16)))
        model(torch.randint(0, 257, (2, 9)))
    assert counter.calls == 2 and counter.shapes == [(4, 16, 16), (4, 9, 9)]


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("pe", ["alibi", "t5", "fire", "kerple"])
def test_no_bias_sized_tensor_is_allocated_per_layer(pe, autocast):
    """1 layer and 3 layers allocate the same (H, T, T) tensors (the bias, its intermediates, its masked and
    cast copy): nothing bias-sized per layer, also under autocast where the mask must be cast once, not per layer."""
    assert _tt_allocations(pe, 1, autocast) == _tt_allocations(pe, 3, autocast)


# --- the one-command GPU check ------------------------------------------------------------------------------------

def test_gpu_check_steps_bind_to_their_benchmarks():
    """The full-size arguments (not run here) must be ones the benchmark functions accept."""
    import inspect

    from ropebench.bench.suite import STEPS

    for step in STEPS:
        inspect.signature(step.fn).bind(**step.kwargs, echo=print)
        inspect.signature(step.fn).bind(**{**step.kwargs, **step.smoke}, echo=print)
    assert {s.name for s in STEPS} >= {"rope_qkv_half", "train_gpt2", "eval_speed", "eval_memory_64k"}


def test_gpu_check_smoke_runs_every_step(tmp_path):
    from ropebench.bench.suite import STEPS

    result = runner.invoke(bench_app, ["all", "--smoke", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "gpu_check_cpu_smoke.json").read_text())
    assert {k: v["status"] for k, v in summary["steps"].items()} == {s.name: "ok" for s in STEPS}
    tables = (tmp_path / "tables.md").read_text()
    for step in STEPS:
        data = json.loads((tmp_path / f"{step.name}_cpu_smoke.json").read_text())
        assert data["rows"] and f"## {step.name}_cpu_smoke.json" in tables
    train = json.loads((tmp_path / "train_gpt2_cpu_smoke.json").read_text())
    assert {r["mode"] for r in train["rows"]} == {"eager", "compiled"}
    assert "| alibi | compiled |" in tables


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_check_fails_in_one_line_without_cuda(tmp_path):
    import subprocess

    proc = subprocess.run([str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in proc.stderr
    result = runner.invoke(bench_app, ["all", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "error: no CUDA device" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_report_tables_from_known_rows(tmp_path):
    rows = [{"encoding": "nope", "mode": "eager", "ms_per_step": 51.2, "tokens_per_s": 320000.0,
             "ratio_to_nope": 1.0, "mfu": 0.4126},
            {"encoding": "rope:triton", "mode": "compiled", "ms_per_step": 47.0, "tokens_per_s": 348595.7,
             "ratio_to_nope": 1.0217, "mfu": None}]
    (tmp_path / "train_x.json").write_text(json.dumps(
        {"bench": "train", "device": "cuda", "device_name": "NVIDIA H100", "model": "gpt2", "batch_size": 16,
         "seq_len": 1024, "steps": 20, "torch": "2.x", "rows": rows}))
    (tmp_path / "summary.json").write_text(json.dumps({"steps": {}}))  # not a benchmark: skipped
    result = runner.invoke(bench_app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "tables.md").read_text()
    assert "| nope | eager | 51.20 | 320000 | 1.000 | 41.3% |" in text
    assert "| rope:triton | compiled | 47.00 | 348596 | 1.022 | - |" in text
    assert text.count("## ") == 1
