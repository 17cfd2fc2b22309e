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
