"""Small builders shared by tests."""

import torch
from omegaconf import OmegaConf

from ropebench.core.model import GPT
from ropebench.core.pe import registry
from ropebench.run.config import ModelConfig


def pe_config(name: str, **overrides):
    cfg = OmegaConf.structured(registry()[name].config_cls())
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def tiny_model(name: str, n_layer=2, n_head=4, n_embd=32, train_seq_len=16, seed=0, **pe_overrides) -> GPT:
    torch.manual_seed(seed)
    model_cfg = OmegaConf.structured(ModelConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd))
    return GPT(model_cfg, pe_config(name, **pe_overrides), vocab_size=257, train_seq_len=train_seq_len).eval()


def refused(result, *expected: str, code: int = 2, logs: bool = False) -> str:
    """The exit code, one error line (the last; with ``logs``, progress lines may come before it) holding each
    expected text, no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and (logs or lines == errors), result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]
