"""Training throughput of ropebench's GPT against a plain SDPA GPT written the nanoGPT way, side by side.

Both models have the same shape (learned absolute positions, pre-norm, fused QKV, SDPA causal attention,
GELU MLP, tied head) and train on the same random batches with the same optimizer, alternating in rounds so
drift in the machine's speed hits both equally. Prints tokens/s of each and the ratio.

    python scripts/bench_vs_nanogpt.py                       # tiny default config on this machine
    python scripts/bench_vs_nanogpt.py --n-layer 12 --n-embd 768 --n-head 12 --seq-len 1024 --batch 16  # GPU
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ropebench.config import ModelConfig
from ropebench.model import GPT
from ropebench.pe import registry


class PlainBlock(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    """The baseline: nanoGPT's structure with nothing of ropebench in it."""

    def __init__(self, vocab: int, T: int, n_layer: int, d: int, h: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(T, d)
        self.blocks = nn.ModuleList(PlainBlock(d, h) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def time_steps(model, batches, device, amp) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for x, y in batches:
        with amp:
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    vocab = 320  # ropebench pads its 257-token byte vocabulary to 320
    torch.manual_seed(0)
    ours = GPT(OmegaConf.structured(ModelConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)),
               OmegaConf.structured(registry()["learned"].config_cls()), vocab_size=257,
               train_seq_len=args.seq_len).to(device)
    plain = PlainGPT(vocab, args.seq_len, args.n_layer, args.n_embd, args.n_head).to(device)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 257, (args.batch, args.seq_len), generator=g).to(device),) * 2
               for _ in range(args.steps)]
    time_steps(ours, batches[:3], device, amp)  # warm-up
    time_steps(plain, batches[:3], device, amp)
    tokens = args.steps * args.batch * args.seq_len
    rates = {"ropebench": [], "plain": []}
    for _ in range(args.rounds):
        rates["ropebench"].append(tokens / time_steps(ours, batches, device, amp))
        rates["plain"].append(tokens / time_steps(plain, batches, device, amp))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"config: n_layer={args.n_layer} n_head={args.n_head} n_embd={args.n_embd} seq_len={args.seq_len} "
          f"batch={args.batch}, {args.rounds} rounds x {args.steps} steps, medians")
    print(f"ropebench GPT (pe=learned): {med['ropebench']:>12,.0f} tokens/s")
    print(f"plain nanoGPT-style GPT:    {med['plain']:>12,.0f} tokens/s")
    ratio = med["ropebench"] / med["plain"]
    print(f"ratio ropebench/plain: {ratio:.3f} ({'within' if ratio >= 0.9 else 'OUTSIDE'} the 10% target)")
    assert math.isfinite(ratio)


if __name__ == "__main__":
    main()
