"""Peak CPU memory of scoring one window through ropebench's HF path (``HFCausalLM``: chunked head and loss)
against transformers' own ``model(ids, labels=ids)`` loss, at several lengths, each in a fresh process.

A random Llama (8 layers, width 512, 8 heads, 32,000 ids, fp32) built from its config: no download. "Extra" is
the process's peak resident memory minus its resident memory once the model is built.

    python scripts/hf_memory.py --json results/hf/memory.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

CHILD = r"""
import resource, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from ropebench.eval.hf_model import HFCausalLM

length, way = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
config = LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                     num_key_value_heads=8, vocab_size=32000, max_position_embeddings=length,
                     attn_implementation="sdpa")
model = LlamaForCausalLM(config).eval()
ids = torch.randint(0, 32000, (1, length + 1))
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
loaded = rss_mib()
with torch.no_grad():
    if way == "ropebench":
        HFCausalLM(model)(ids[:, :-1], ids[:, 1:])
    else:
        model(ids, labels=ids)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
print(f"{weights:.1f} {loaded:.1f} {peak:.1f}")
"""


def measure(length: int, way: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(length), way], capture_output=True, text=True, check=True)
    weights, loaded, peak = map(float, out.stdout.split())
    return {"length": length, "way": way, "weights_mib": weights, "extra_mib": round(peak - loaded, 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="1024,4096,16384")
    p.add_argument("--json", dest="json_path")
    args = p.parse_args(argv)
    rows = [measure(int(n), way) for n in args.lengths.split(",") for way in ("ropebench", "transformers")]
    for r in rows:
        print(f"L={r['length']:>6} {r['way']:<13} extra {r['extra_mib']:>8.1f} MiB "
              f"(weights {r['weights_mib']:.0f} MiB)")
    if args.json_path:
        import torch
        import transformers

        command = "python scripts/hf_memory.py " + " ".join(argv or sys.argv[1:])
        meta = {"torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version(), "command": command}
        with open(args.json_path, "w") as f:
            json.dump({**meta, "rows": rows}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
