"""The HF path's default batch: windows adding up to TOKENS_PER_PASS tokens in one forward pass (batch size 1 made an
exported model's evaluation several times slower than the run's own), scoring exactly what one window at a time
scores."""

import pytest
import torch

from ropebench.eval.hf_model import HFCausalLM
from ropebench.eval.hf_session import TOKENS_PER_PASS, HFRequest, hf_eval_length
from tests.test_hf_eval import hf_dir, load, small_text  # noqa: F401  (the fixtures: tiny random models, text)

pytest.importorskip("transformers")


def test_no_batch_size_runs_every_window_given_in_one_pass(hf_dir):  # noqa: F811
    model = load(hf_dir / "llama")
    ids = torch.randint(0, 400, (6, 17), generator=torch.Generator().manual_seed(2))
    passes = []
    hook = model.base_model.register_forward_hook(
        lambda module, args, kwargs, out: passes.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        _, together = HFCausalLM(model, batch_size=None)(ids[:, :-1], ids[:, 1:])
        _, alone = HFCausalLM(model, batch_size=1)(ids[:, :-1], ids[:, 1:])
    finally:
        hook.remove()
    assert passes == [6, 1, 1, 1, 1, 1, 1]
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_the_default_batch_scores_like_one_window_at_a_time(hf_dir, small_text, tmp_path):  # noqa: F811
    assert HFRequest("m", None).batch_size is None and TOKENS_PER_PASS == 8192
    default = hf_eval_length(HFRequest(str(hf_dir / "llama"), tmp_path / "a", data=str(small_text)), [16, 32],
                             log=lambda *a: None)
    single = hf_eval_length(HFRequest(str(hf_dir / "llama"), tmp_path / "b", data=str(small_text), batch_size=1),
                            [16, 32], log=lambda *a: None)
    for a, b in zip(default, single):
        assert a["n_tokens"] == b["n_tokens"] and a["nll"] == pytest.approx(b["nll"], rel=1e-5)
