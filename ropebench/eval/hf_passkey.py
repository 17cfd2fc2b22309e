"""Passkey retrieval for a Hugging Face model, with the standard natural-language prompt.

The prompt is Mohtashami & Jaggi's (2023, arXiv 2305.16300), the one PI (arXiv 2306.15595) and YaRN
(arXiv 2309.00071) report: a task sentence, filler sentences repeated, the key sentence at the wanted depth,
more filler, the question. It is built in the model's own tokens to exactly the evaluated length: the fixed
parts are tokenized once each, the filler is its one sentence group's tokens repeated and cut to the tokens left,
and a fraction ``depth`` of the filler comes before the key (0: right after the task, 1: right before the
question). The model decodes greedily (transformers' ``generate``, ``do_sample=False``) ``NEW_TOKENS`` tokens;
a trial succeeds when the key's five digits appear in their text. Keys are drawn from a seed of (length, depth)
alone, so every model, scaling and re-run is asked the same keys.

Rows, statuses, effective context and the heatmap are the passkey probe's (``ropebench.eval.passkey``); the loop
around one length is the probe runner's.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import torch

from ropebench.data.passkey import check_depth
from ropebench.data.tokenizer import special_lead
from ropebench.errors import UserError
from ropebench.eval.hf_session import TOKENS_PER_PASS, HFRequest, open_session
from ropebench.eval.passkey import DEFAULT_DEPTHS, DEFAULT_MULTIPLES, PasskeyProbe
from ropebench.eval.runner import AS_TRAINED, run_probe
from ropebench.progress import console

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.")
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
NEW_TOKENS = 10  # enough for five digits however the tokenizer splits them, plus a space or punctuation


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    key: int
    key_start: int  # index of the key sentence's first token
    filler: int  # filler tokens in all (before and after the key)


def cell_keys(length: int, depth: float, trials: int) -> list[int]:
    """The five-digit keys of one (length, depth) cell, the same for every model and run."""
    rng = random.Random(zlib.crc32(f"hf-passkey:{length}:{depth:.6f}".encode()))
    return [rng.randrange(10_000, 100_000) for _ in range(trials)]


class PromptBuilder:
    """Prompts of exactly ``length`` tokens of one tokenizer (a transformers tokenizer)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.lead = special_lead(tokenizer)  # a BOS, kept at the prompt's start
        self.task, self.question = self._encode(TASK), self._encode(QUESTION)
        self.unit = self._encode(FILLER)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def fixed(self, key: int) -> int:
        """Tokens of everything but the filler."""
        return len(self.lead) + len(self.task) + len(self._encode(KEY.format(key=key))) + len(self.question)

    def build(self, length: int, depth: float, key: int) -> Prompt:
        key_ids = self._encode(KEY.format(key=key))
        n = length - (len(self.lead) + len(self.task) + len(key_ids) + len(self.question))
        if n < 0:
            raise UserError(f"a passkey prompt needs at least {length - n} tokens; {length} is too short")
        stream = self.unit * (n // len(self.unit) + 1)
        before = round(check_depth(depth) * n)
        head = self.lead + self.task + stream[:before]
        return Prompt(head + key_ids + stream[: n - before] + self.question, key, len(head), n)

    def shortest(self, cells) -> int:
        """The fewest tokens any prompt of these (length, depth, keys) cells needs."""
        return max(self.fixed(key) for length, depth, keys in cells for key in keys)


@torch.no_grad()
def greedy_continuations(hf_model, prompts: list[list[int]], device) -> list[list[int]]:
    """``NEW_TOKENS`` greedily decoded tokens after each prompt (prompts of one length: no padding)."""
    ids = torch.tensor(prompts, dtype=torch.long, device=device)
    pad = hf_model.generation_config.pad_token_id
    if pad is None:
        eos = hf_model.generation_config.eos_token_id
        pad = (eos[0] if isinstance(eos, list) else eos) if eos is not None else 0
    # The model runs in the dtype it was loaded in (--dtype), never under a caller's autocast.
    with torch.autocast(device_type=device.type, enabled=False):
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                do_sample=False, num_beams=1, pad_token_id=pad)
    return out[:, ids.shape[1] :].tolist()


class HFPasskeyProbe(PasskeyProbe):
    """Accuracy at one length, one row per depth, ``batch_size`` prompts per ``generate`` call."""

    def __init__(self, builder: PromptBuilder, depths, trials: int, batch_size: int | None):
        super().__init__(depths, trials)
        self.builder, self.batch_size = builder, batch_size

    def measure(self, session, length: int, rows: list[dict], meter) -> list:
        meter.total(len(rows))
        for row in rows:
            prompts = [self.builder.build(length, row["depth"], key)
                       for key in cell_keys(length, row["depth"], self.trials)]
            correct = 0
            size = self.batch_size or max(1, TOKENS_PER_PASS // length)  # default: prompts making a pass's tokens
            for i in range(0, len(prompts), size):
                chunk = prompts[i : i + size]
                new = greedy_continuations(session.model.hf, [p.ids for p in chunk], session.device)
                texts = self.builder.tokenizer.batch_decode(new, skip_special_tokens=True)
                correct += sum(str(p.key) in text for p, text in zip(chunk, texts))
            row.update(correct=correct, accuracy=correct / self.trials, status="ok")
            meter.advance()
        return []


def hf_passkey(request: HFRequest, lengths: list[int] | None = None, depths: list[float] | None = None,
               trials: int = 32, rope_scaling: dict | str | None = AS_TRAINED, log=console.print) -> list[dict]:
    """Passkey accuracy of an HF model at each (length, depth) (default 1x, 2x, 4x, 8x max_position_embeddings
    at 5 depths), merged into OUT/passkey.csv; returns the rows."""
    if trials <= 0:
        raise UserError(f"passkey trials must be a positive integer, got {trials}")
    depths = sorted({check_depth(d) for d in (DEFAULT_DEPTHS if depths is None else depths)})
    if not depths:
        raise UserError("no passkey depths given; use fractions such as 0,0.25,0.5,0.75,1")
    session = open_session(request, rope_scaling, log, reads_data=False)
    lengths = sorted(set(lengths or [m * session.train_len for m in DEFAULT_MULTIPLES]))
    builder = PromptBuilder(session.tokenizer.hf)
    need = builder.shortest([(n, d, cell_keys(n, d, trials)) for n in lengths for d in depths])
    if lengths[0] < need:
        raise UserError(f"passkey length {lengths[0]} is shorter than the prompt without filler ({need} tokens of "
                        f"{request.source}'s tokenizer); use lengths >= {need}")
    return run_probe(HFPasskeyProbe(builder, depths, trials, request.batch_size), session, lengths, rope_scaling)
