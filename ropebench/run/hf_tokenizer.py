"""ropebench's tokenizer as a Hugging Face tokenizer, for `ropebench export-hf`.

A byte-tokenized run (the default) gets a tokenizer built with the ``tokenizers`` library whose ids are exactly
the UTF-8 bytes of the text (byte b -> id b) plus ``<|endoftext|>`` = 256, ropebench's end-of-document token:
a byte-level BPE with no merges (GPT-2's byte-to-unicode alphabet, Radford et al. 2019, openai/gpt-2
``encoder.py``), no normaliser, no added prefix space, and special-token text in the input split into bytes
like any other text (``split_special_tokens``), so that ``tok(text).input_ids == list(text.encode())`` always.
A run trained with a tokenizer directory (``data.tokenizer``) gets a copy of that tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

EOD_TOKEN = "<|endoftext|>"
_CONFIG = "tokenizer_config.json"
# What `tok(text)` returns: a decoder takes no token_type_ids (GPT-2 would add a token-type embedding for them).
MODEL_INPUTS = ("input_ids", "attention_mask")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters (openai/gpt-2
    ``src/encoder.py``): printable Latin-1 bytes map to themselves, the others to code points 256 and up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_tokenizer(model_max_length: int | None = None):
    """A ``PreTrainedTokenizerFast`` whose ids are the UTF-8 bytes plus ``<|endoftext|>`` = 256 (bos, eos and the
    padding, on the left as generation wants it); ``model_max_length`` None leaves transformers' "no limit"."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = bytes_to_unicode()
    backend = Tokenizer(models.BPE(vocab={chars[b]: b for b in range(256)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(EOD_TOKEN, special=True, normalized=False)])
    if backend.token_to_id(EOD_TOKEN) != 256:
        raise AssertionError(f"{EOD_TOKEN} got id {backend.token_to_id(EOD_TOKEN)}, not 256")
    limit = {} if model_max_length is None else {"model_max_length": int(model_max_length)}
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOD_TOKEN, eos_token=EOD_TOKEN,
                                   pad_token=EOD_TOKEN, padding_side="left", model_input_names=list(MODEL_INPUTS),
                                   clean_up_tokenization_spaces=False, split_special_tokens=True, **limit)


def tokenizer_dir(data_cfg) -> str | None:
    """The tokenizer directory a run was trained with, or None for ropebench's bytes."""
    name = str(data_cfg.get("tokenizer") or "bytes").strip() if hasattr(data_cfg, "get") else "bytes"
    return None if name in ("", "bytes") else name


def load_run_tokenizer(data_cfg, model_max_length: int | None):
    """The tokenizer a run was trained with: ropebench's bytes, or its ``data.tokenizer`` (loaded as training
    loaded it, ``ropebench.data.tokenizer``)."""
    source = tokenizer_dir(data_cfg)
    if source is None:
        return byte_tokenizer(model_max_length)
    from ropebench.data.tokenizer import load_tokenizer

    return load_tokenizer(source).hf


def save_tokenizer(tok, out: Path) -> None:
    """Save ``tok`` into ``out`` under a class name every transformers version loads, returning exactly
    ``MODEL_INPUTS`` (a copied tokenizer may have been saved for an encoder, with token_type_ids) and with a pad
    token (its end-of-text token when it has none), so that batches and pipelines work."""
    tok.save_pretrained(str(out))
    path = Path(out) / _CONFIG
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":  # transformers 5's name for the generic fast class
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["model_input_names"] = list(MODEL_INPUTS)
    if tok.pad_token is None:
        config["pad_token"] = tok.eos_token
    path.write_text(json.dumps(config, indent=2) + "\n")
