"""The README.md (Hugging Face model card) and ropebench_export.json of an exported run (``ropebench export-hf``).

The card says what the model is, how to load it with transformers alone, and its limits (the trained context, the
end of a learned position table, the byte tokenizer). The manifest records the run's settings for ropebench (an
export is evaluated on its run's text by default). Neither holds an absolute path of this machine: paths are
written relative to the export directory, so a published export names no local directory, and one evaluated
where it was written still finds its run's text.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

MANIFEST = "ropebench_export.json"
CARD = "README.md"
_LOCAL_DATA_KEYS = ("path", "tokenizer")  # data keys that may name a local directory or file


def portable(path, out: Path) -> str:
    """``path`` relative to the export directory ``out`` (so it names no absolute location)."""
    return os.path.relpath(Path(os.path.expanduser(str(path))).resolve(), Path(out).resolve())


def portable_data(data: dict, out: Path) -> dict:
    """A run's data node without absolute paths: local paths relative to ``out``, the cache directory left out
    (a machine's setting, not the run's)."""
    from ropebench.data.hf_env import is_local

    data = {key: value for key, value in data.items() if key != "cache_dir"}
    if data.get("paths"):
        data["paths"] = [portable(p, out) for p in data["paths"]]
    for key in _LOCAL_DATA_KEYS:
        value = data.get(key)
        if value and value != "bytes" and is_local(str(value)):
            data[key] = portable(value, out)
    return data


def local_data(data: dict, export_dir: Path) -> dict:
    """``portable_data`` read back: its relative paths resolved against the export directory."""
    from ropebench.data.hf_env import is_local

    def absolute(value) -> str:
        path = Path(os.path.expanduser(str(value)))
        return str(path if path.is_absolute() else (Path(export_dir) / path).resolve())

    data = dict(data)
    if data.get("paths"):
        data["paths"] = [absolute(p) for p in data["paths"]]
    for key in _LOCAL_DATA_KEYS:
        value = data.get(key)
        if value and value != "bytes" and (is_local(str(value)) or str(value).startswith("..")):
            data[key] = absolute(value)
    return data


def manifest(run, cfg, hf_model, out: Path) -> dict:
    from ropebench import __version__
    from ropebench.run.hf_tokenizer import tokenizer_dir

    tokenizer = tokenizer_dir(cfg.data)
    return {"source_run": portable(run.path, out), "pe": OmegaConf.to_container(cfg.pe),
            "train_seq_len": int(cfg.train.seq_len), "architecture": hf_model.config.architectures[0],
            "tokenizer": portable(tokenizer, out) if tokenizer and Path(tokenizer).exists() else tokenizer or "bytes",
            "data": portable_data(OmegaConf.to_container(cfg.data), out), "eval": OmegaConf.to_container(cfg.eval),
            "rope_parameters": getattr(hf_model.config, "rope_parameters", None), "ropebench_version": __version__}


def _limits(cfg, architecture: str, train_len: int, table_len: int | None) -> list[str]:
    if table_len is not None:  # learned positions: transformers' GPT-2 has a table of this many rows, no more
        context = (f"- **Context: at most {table_len} tokens.** The learned position table has {table_len} rows; "
                   "an input or a `generate` that goes past them fails inside transformers (an `IndexError` in the "
                   "position embedding). Keep the prompt plus `max_new_tokens` within it (`generate` stops there "
                   "by default).")
    else:
        context = (f"- **Context:** trained on {train_len}-token windows (`max_position_embeddings`). Longer inputs "
                   f"run ({'rotary positions' if cfg.pe.name == 'rope' else 'no positions at all'}), but the model "
                   "never saw them in training.")
    tokenizer = "" if str(cfg.data.get("tokenizer", "bytes") or "bytes") != "bytes" else (
        "- **Tokenizer:** bytes. Token ids are the UTF-8 bytes of the text; `<|endoftext|>` (id 256) ends a "
        "document and pads batches (on the left, for generation). `tok(text)` returns `input_ids` and "
        "`attention_mask` only; no token is added to a text.")
    return [context, tokenizer] if tokenizer else [context]


def _count(n, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def model_card(run, cfg, hf_model, table_len: int | None) -> str:
    """The export's README.md: front matter for the Hub, what was trained, how to load it, its limits."""
    from ropebench import __version__
    from ropebench.errors import UserError

    try:
        final = run.read_final()
    except UserError:  # the weights are there (they were exported); a damaged record only loses the step count
        final = {}
    architecture = hf_model.config.architectures[0]
    train_len = int(cfg.train.seq_len)
    m = cfg.model
    steps = final.get("steps", cfg.train.steps)
    lines = [
        "---", "library_name: transformers", "tags:", "- ropebench", f"- pe-{cfg.pe.name}", "---", "",
        f"# {run.path.name}: a ropebench `pe={cfg.pe.name}` model as `{architecture}`", "",
        f"Trained by ropebench {__version__} ({_count(m.n_layer, 'layer')}, {_count(m.n_head, 'head')}, width "
        f"{m.n_embd}; {_count(steps, 'step')} on `data={cfg.data.name}` at {train_len} tokens) and exported with "
        "`ropebench export-hf`. transformers alone loads it; its logits equal ropebench's (float32).", "",
        "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        'model = AutoModelForCausalLM.from_pretrained("THIS_DIRECTORY")',
        'tok = AutoTokenizer.from_pretrained("THIS_DIRECTORY")',
        'inputs = tok("def f(x):", return_tensors="pt")',
        f"out = model.generate(**inputs, max_new_tokens={max(1, min(32, (table_len or 64) - 16))}, do_sample=False)",
        "print(tok.decode(out[0]))", "```", "",
        "## Limits", "", *_limits(cfg, architecture, train_len, table_len), "",
        f"`{MANIFEST}` records the run's settings (encoding, data, evaluation) for `ropebench eval-length`; its paths "
        "are relative to this directory.", "",
    ]
    return "\n".join(lines)
