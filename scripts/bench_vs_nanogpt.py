"""Training throughput of ropebench's GPT against a baseline built exactly as nanoGPT's ``model.py``, side by side.

The baseline (``NanoGPT`` below) mirrors the module tree of nanoGPT's model.py (Karpathy, github.com/karpathy/nanoGPT):
``transformer.{wte, wpe, drop, h, ln_f}`` and ``lm_head`` with weight tying; attention with one ``c_attn``
projection split into q, k, v, each viewed and transposed to (B, nh, T, hs), SDPA with ``is_causal=True`` and
no mask, heads re-assembled with ``transpose(1, 2).contiguous().view``; an MLP ``c_fc`` -> ``nn.GELU`` ->
``c_proj``; its LayerNorm with optional bias; N(0, 0.02) init with the scaled ``c_proj`` init; AdamW with 2-D
tensors decayed and the rest not (its ``configure_optimizers``). The vocabulary is used as given (257 bytes).

Every model trains on the same random batches with the same AdamW hyper-parameters, each with the AdamW its own
code builds (nanoGPT's ``configure_optimizers`` fuses it on CUDA only; ropebench's ``make_optimizer`` on the CPU
too), in rounds whose order alternates so drift in the machine's speed hits each equally; tokens/s are medians
over rounds. Two ratios are printed: the whole training step, and the model alone (forward + backward, the
optimizer's time left out), so a faster optimizer cannot hide a slower model.

    python scripts/bench_vs_nanogpt.py                            # tiny default shape, pe=learned and pe=rope
    python scripts/bench_vs_nanogpt.py --pe learned --json out.json
    python scripts/bench_vs_nanogpt.py --nanogpt ~/nanoGPT/model.py   # also time nanoGPT's own file
    python scripts/bench_vs_nanogpt.py --n-layer 12 --n-embd 768 --n-head 12 --seq-len 1024 --batch 16  # GPU
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ropebench.bench.rope_bench import device_name
from ropebench.core.model import GPT
from ropebench.core.pe import registry
from ropebench.errors import UserError, choose
from ropebench.run.config import ModelConfig, TrainConfig
from ropebench.run.trainer import make_optimizer

BYTE_VOCAB = 257  # ropebench's byte vocabulary: 256 bytes + end of document
PARTS = ("step", "model")  # the whole training step; forward + backward without the optimizer


class NanoLayerNorm(nn.Module):
    """LayerNorm whose bias can be switched off (nanoGPT predates nn.LayerNorm(bias=False))."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class NanoAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float):
        super().__init__()
        self.rotary = None  # (cos, sin), each (T, head_dim), set by NanoGPT(rope=True)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)  # used only by nanoGPT's non-flash path; kept for the same tree
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.n_embd, self.dropout = n_head, n_embd, dropout

    def forward(self, x):
        B, T, C = x.size()
        heads = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in heads)
        if self.rotary is not None:  # the usual way a nanoGPT fork adds RoPE (GPT-NeoX / Llama's rotate_half)
            cos, sin = self.rotary
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=p, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class NanoMLP(nn.Module):
    def __init__(self, n_embd: int, bias: bool, dropout: float):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class NanoBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float):
        super().__init__()
        self.ln_1 = NanoLayerNorm(n_embd, bias)
        self.attn = NanoAttention(n_embd, n_head, bias, dropout)
        self.ln_2 = NanoLayerNorm(n_embd, bias)
        self.mlp = NanoMLP(n_embd, bias, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """The baseline: nanoGPT's GPT, nothing of ropebench in it."""

    def __init__(self, vocab: int, block_size: int, n_layer: int, n_embd: int, n_head: int, bias: bool = False,
                 dropout: float = 0.0, rope: bool = False):
        super().__init__()
        self.rope = rope
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList(NanoBlock(n_embd, n_head, bias, dropout) for _ in range(n_layer)),
            ln_f=NanoLayerNorm(n_embd, bias),
        ))
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied: the head's matrix is the embedding
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's residual-projection scaling, 1/sqrt(2 * n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
        if rope:  # nanoGPT + RoPE: no position table; one fp32 (T, head_dim) cos/sin pair shared by the layers
            del self.transformer["wpe"]
            head_dim = n_embd // n_head
            inv_freq = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
            angles = torch.arange(block_size, dtype=torch.float32)[:, None] * inv_freq[None]
            self.register_buffer("cos", torch.cat((angles, angles), -1).cos(), persistent=False)
            self.register_buffer("sin", torch.cat((angles, angles), -1).sin(), persistent=False)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None):
        t = idx.size(1)
        if self.rope:
            x = self.transformer.drop(self.transformer.wte(idx))
            for block in self.transformer.h:
                block.attn.rotary = (self.cos[:t], self.sin[:t])
        else:
            pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas, device_type: str):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        fused = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **fused)


def load_nanogpt_file(path: Path, args, device):
    """nanoGPT's own model.py, loaded from a local checkout, as a third contestant (checks the baseline)."""
    if not path.is_file():
        raise UserError(f"--nanogpt '{path}' is not a file; give the path of nanoGPT's model.py")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.GPTConfig(block_size=args.seq_len, vocab_size=BYTE_VOCAB, n_layer=args.n_layer,
                           n_head=args.n_head, n_embd=args.n_embd, dropout=0.0, bias=False)
    with contextlib.redirect_stdout(sys.stderr):  # its constructor and optimizer print
        model = module.GPT(cfg).to(device)
        opt = model.configure_optimizers(TrainConfig.weight_decay, TrainConfig.lr,
                                         (TrainConfig.beta1, TrainConfig.beta2), device.type)
    return model, opt


def build_contestants(args, device) -> dict:
    """name -> (model, optimizer), every one seeded the same and given the same AdamW hyper-parameters."""
    t = TrainConfig()
    contestants = {}
    torch.manual_seed(0)
    nano = NanoGPT(BYTE_VOCAB, args.seq_len, args.n_layer, args.n_embd, args.n_head).to(device)
    contestants["nanoGPT"] = (nano, nano.configure_optimizers(t.weight_decay, t.lr, (t.beta1, t.beta2),
                                                              device.type))
    if "rope" in args.pe:
        torch.manual_seed(0)
        nano_rope = NanoGPT(BYTE_VOCAB, args.seq_len, args.n_layer, args.n_embd, args.n_head, rope=True).to(device)
        contestants["nanoGPT+RoPE"] = (nano_rope, nano_rope.configure_optimizers(
            t.weight_decay, t.lr, (t.beta1, t.beta2), device.type))
    if args.nanogpt:
        torch.manual_seed(0)
        contestants["nanoGPT model.py"] = load_nanogpt_file(Path(args.nanogpt).expanduser(), args, device)
    model_cfg = OmegaConf.structured(ModelConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd))
    for name in args.pe:
        torch.manual_seed(0)
        ours = GPT(model_cfg, OmegaConf.structured(registry()[name].config_cls()), vocab_size=BYTE_VOCAB,
                   train_seq_len=args.seq_len).to(device)
        contestants[f"ropebench pe={name}"] = (ours, make_optimizer(ours, t, device))
    return contestants


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(model, opt, batches, device, amp) -> tuple[float, float]:
    """(seconds for one pass over ``batches`` as a training loop does it: forward, backward, AdamW step;
    seconds of that spent in forward + backward). The model's share is timed apart from the optimizer's so that
    the model can be compared alone (every contestant's optimizer is its own code's choice)."""
    total = model_time = 0.0
    for x, y in batches:
        _sync(device)
        start = time.perf_counter()
        with amp():
            _, loss = model(x, y)
        loss.backward()
        _sync(device)
        middle = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        total += time.perf_counter() - start
        model_time += middle - start
    return total, model_time


def measure(contestants: dict, batches, rounds: int, device) -> dict[str, dict[str, list[float]]]:
    """tokens/s of each contestant per round, for the whole step ("step") and forward + backward alone
    ("model"); the order is reversed every other round."""
    amp = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda"
           else contextlib.nullcontext)
    for model, opt in contestants.values():  # warm-up: allocator, optimizer state, kernels
        time_steps(model, opt, batches[:3], device, amp)
    tokens = sum(x.numel() for x, _ in batches)
    rates = {part: {name: [] for name in contestants} for part in PARTS}
    names = list(contestants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            seconds = time_steps(*contestants[name], batches, device, amp)
            for part, t in zip(PARTS, seconds):
                rates[part][name].append(tokens / t)
    return rates


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pe", action="append", default=None,
                   help="ropebench encoding(s) to time, repeatable or comma-separated (default: learned,rope)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    # Many short rounds: the machine's speed drifts, and a ratio taken within a round pairs equal conditions.
    p.add_argument("--steps", type=int, default=5, help="steps per round")
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--nanogpt", default="", help="path of nanoGPT's model.py: also time the original")
    p.add_argument("--json", dest="json_path", default="", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    args.pe = [n.strip() for item in (args.pe or ["learned,rope"]) for n in item.split(",") if n.strip()]
    for name in args.pe:
        choose("encoding (--pe)", name, registry())
    for name in ("n_layer", "n_head", "n_embd", "seq_len", "batch", "steps", "rounds"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.steps < 3:
        raise UserError(f"--steps must be at least 3 (the warm-up replays 3 batches), got {args.steps}")
    return args


def git_state() -> dict:
    def git(*cmd):
        out = subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        return out.stdout.strip() if out.returncode == 0 else None

    dirty = git("status", "--porcelain", "--", "ropebench/core", "ropebench/run/trainer.py")
    return {"commit": git("rev-parse", "--short", "HEAD"), "model_uncommitted": bool(dirty) if dirty is not None
            else None}


def _ratios(rates: dict[str, list[float]]) -> dict:
    """ropebench's contestants against their nanoGPT baseline: RoPE against nanoGPT with RoPE added, everything
    else against nanoGPT's learned positions."""
    med = {name: statistics.median(v) for name, v in rates.items()}
    ratios = {}
    for name in med:
        if name.startswith("nanoGPT"):
            continue
        ref = "nanoGPT+RoPE" if name.endswith("pe=rope") and "nanoGPT+RoPE" in med else "nanoGPT"
        per_round = [a / b for a, b in zip(rates[name], rates[ref])]
        ratios[name] = {"baseline": ref, "ratio_of_medians": med[name] / med[ref], "per_round": per_round,
                        "median_per_round": statistics.median(per_round),
                        "rounds_faster": sum(r > 1 for r in per_round)}
    return ratios


def report(args, device, rates: dict[str, dict[str, list[float]]], optimizers: dict[str, str]) -> dict:
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"shape: n_layer={args.n_layer} n_head={args.n_head} n_embd={args.n_embd} seq_len={args.seq_len} "
          f"batch={args.batch} vocab={BYTE_VOCAB}; {args.rounds} rounds x {args.steps} steps, medians")
    result = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(),
              "shape": {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd", "seq_len", "batch")},
              "vocab": BYTE_VOCAB, "rounds": args.rounds, "steps_per_round": args.steps, **git_state(),
              "optimizers": optimizers}
    labels = {"step": "training step (forward, backward, each one's own AdamW)",
              "model": "model alone (forward + backward)"}
    for part in PARTS:
        med = {name: statistics.median(v) for name, v in rates[part].items()}
        ratios = _ratios(rates[part])
        print(f"{labels[part]}:")
        for name, rate in med.items():
            print(f"  {name:<22}{rate:>12,.0f} tokens/s   ({optimizers[name]})" if part == "step"
                  else f"  {name:<22}{rate:>12,.0f} tokens/s")
        for name, r in ratios.items():
            per_round = r["per_round"]
            print(f"RATIO {part} {name} / {r['baseline']}: {r['ratio_of_medians']:.3f}x "
                  f"(per round: median {r['median_per_round']:.3f}, {min(per_round):.3f}-{max(per_round):.3f}, "
                  f"faster in {r['rounds_faster']} of {len(per_round)})")
        result[part] = {"tokens_per_s_rounds": rates[part], "tokens_per_s_median": med, "ratios": ratios}
    return result


def optimizer_kind(opt: torch.optim.Optimizer) -> str:
    flags = opt.defaults
    return "AdamW, " + ("fused" if flags.get("fused") else "foreach" if flags.get("foreach") else "default loop")


def main(argv=None) -> dict:
    try:
        args = parse_args(argv)
    except UserError as exc:
        sys.exit(f"error: {exc}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    contestants = build_contestants(args, device)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        seq = torch.randint(0, BYTE_VOCAB, (args.batch, args.seq_len + 1), generator=g).to(device)
        batches.append((seq[:, :-1].contiguous(), seq[:, 1:].contiguous()))
    optimizers = {name: optimizer_kind(opt) for name, (_, opt) in contestants.items()}
    start = time.perf_counter()
    result = report(args, device, measure(contestants, batches, args.rounds, device), optimizers)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    if args.json_path:
        path = Path(args.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
