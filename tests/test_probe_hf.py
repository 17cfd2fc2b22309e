"""`ropebench probe` on a Hugging Face model, in its own tokens: the trials of a BPE tokenizer (with the model's BOS)
hold the needle where they say, the logits the scores read are the model's own, and the command writes OUT/probe.csv.
The models and the tokenizer are test_hf_eval's (built there, no download)."""

from __future__ import annotations

import csv

import pytest
import torch
from test_hf_eval import hf_dir, invoke, transformers  # noqa: F401  (hf_dir: the fixture)

from ropebench.data.probes import TASKS, Encoder
from ropebench.data.tokenizer import special_lead


def test_trials_in_a_bpe_tokenizer_hold_the_needle_at_the_depth(hf_dir):  # noqa: F811
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir / "llama")
    assert special_lead(tokenizer) == []  # this tokenizer adds no BOS; give the trials one, to see it kept first
    lead = (tokenizer.eos_token_id,)
    encoder = Encoder(lambda text: tokenizer.encode(text, add_special_tokens=False), lead)
    for task in TASKS:
        for depth in (0.0, 0.5, 1.0):
            for trial in TASKS[task](encoder, 160, depth, 3, 4):
                assert len(trial.tokens()) == 161 and trial.prefix[: len(lead)] == lead
                # Each answer is in a needle (as text: a name starting a line is other tokens than after a space).
                needles = tokenizer.decode([t for start, n in trial.needles for t in trial.prefix[start : start + n]])
                for slot, answer in enumerate(trial.candidates[0]):
                    assert tokenizer.decode(answer).strip() in needles
                    assert len({c[slot] for c in trial.candidates}) == 4


def test_hf_logits_at_are_the_models_own(hf_dir):  # noqa: F811
    from ropebench.eval.hf_model import HFCausalLM

    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir / "llama").eval()
    model = HFCausalLM(hf, batch_size=2)
    ids = torch.randint(0, 300, (3, 20), generator=torch.Generator().manual_seed(0))
    at = torch.tensor([[0, 5], [19, 3], [7, 7]])
    with torch.no_grad():
        own = hf(ids).logits
    torch.testing.assert_close(model.logits_at(ids, at), own.gather(1, at[..., None].expand(-1, -1, own.shape[-1])))


def test_probe_on_a_hugging_face_model(hf_dir, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    result = invoke("probe", hf_dir / "llama", "--out", out, "--lengths", "96,128", "--depths", "0.5", "--trials",
                    "2", "--candidates", "3", "--task", "niah_multiquery,passkey", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    with open(out / "probe.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["task"], r["eval_len"], r["status"]) for r in rows] == [
        (t, n, "ok") for t in ("niah_multiquery", "passkey") for n in ("96", "128")]
    assert invoke("plot", out, "--probe", "--out", tmp_path / "p.png").exit_code == 0
    # Measured afresh, the cells already there are replaced, not added to.
    again = invoke("probe", hf_dir / "llama", "--out", out, "--lengths", "96", "--depths", "0.5", "--trials", "2",
                   "--candidates", "3", "--task", "passkey", "--only-missing")
    assert again.exit_code == 0, again.output
    with open(out / "probe.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4


@pytest.mark.parametrize("bad, message", [
    (["--task", "nope"], "unknown probe task 'nope'"),
    (["--lengths", "8", "--task", "vt"], "probe length 8 is too short for vt"),
])
def test_bad_input_for_a_hugging_face_model(hf_dir, tmp_path, bad, message):  # noqa: F811
    out = tmp_path / "out"
    result = invoke("probe", hf_dir / "llama", "--out", out, *bad)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not out.exists()
