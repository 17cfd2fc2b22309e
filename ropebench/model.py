"""A nanoGPT-class decoder whose only varying part is the position encoding.

Pre-norm blocks, fused QKV projection, SDPA causal attention (flash where the encoding adds no bias),
GELU MLP, weight-tied head. The encoding (``ropebench.pe``) enters at its hook: ``embed`` on the token
embeddings, ``qk`` on queries and keys in every layer, or ``bias`` on the attention logits -- a dense
(H, T, T) mask for SDPA, or a FlexAttention ``score_mod`` that never materialises it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ropebench import pe as pe_registry
from ropebench.errors import UserError


def padded_vocab(vocab_size: int) -> int:
    """Round the vocabulary up to a multiple of 64: the head's matmul is faster and the extra rows unused."""
    return ((vocab_size + 63) // 64) * 64


class LayerNorm(nn.Module):
    def __init__(self, dim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pe: pe_registry.PositionEncoding, pos: Tensor, attn) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = pe.qk(q, k, pos)
        v = pe.value(v, pos)
        y = pe.output(attn(q, k, v, self.dropout if self.training else 0.0), pos)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, n_embd: int, bias: bool, dropout: float):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float):
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, bias)
        self.attn = Attention(n_embd, n_head, bias, dropout)
        self.ln_2 = LayerNorm(n_embd, bias)
        self.mlp = MLP(n_embd, bias, dropout)

    def forward(self, x, pe, pos, attn):
        x = x + self.attn(self.ln_1(x), pe, pos, attn)
        return x + self.mlp(self.ln_2(x))


def _flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


class GPT(nn.Module):
    def __init__(self, model_cfg, pe_cfg, *, vocab_size: int, train_seq_len: int):
        super().__init__()
        if model_cfg.n_head <= 0 or model_cfg.n_embd % model_cfg.n_head:
            raise UserError(f"model.n_head={model_cfg.n_head} must divide model.n_embd={model_cfg.n_embd}")
        if model_cfg.n_layer <= 0:
            raise UserError(f"model.n_layer must be positive, got {model_cfg.n_layer}")
        self.cfg = model_cfg
        self.vocab_size = vocab_size
        self.wte = nn.Embedding(padded_vocab(vocab_size), model_cfg.n_embd)
        self.pe = pe_registry.build(pe_cfg, n_embd=model_cfg.n_embd, n_head=model_cfg.n_head,
                                    train_seq_len=train_seq_len)
        self.drop = nn.Dropout(model_cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(model_cfg.n_embd, model_cfg.n_head, model_cfg.bias, model_cfg.dropout)
            for _ in range(model_cfg.n_layer)
        )
        self.ln_f = LayerNorm(model_cfg.n_embd, model_cfg.bias)
        self.lm_head = nn.Linear(model_cfg.n_embd, padded_vocab(vocab_size), bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * model_cfg.n_layer))
        self.attention = self._choose_attention(model_cfg.attention)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and module.weight.shape[1] > 1:
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _choose_attention(self, name: str) -> str:
        if name not in ("auto", "sdpa", "flex"):
            raise UserError(f"unknown model.attention '{name}'; choose one of: auto, flex, sdpa")
        if name == "flex" and not _flex_available():
            raise UserError(f"model.attention=flex needs FlexAttention (PyTorch >= 2.5); this is {torch.__version__}")
        return name

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        """nanoGPT's estimate, 6N + 12 L H Q T: every parameter that multiplies activations (the tied embedding is
        the head, so it stays in; a learned position table is a lookup, so it does not) plus attention."""
        n = self.num_params(non_embedding=False) - sum(p.numel() for p in self.pe.parameters())
        head_dim = self.cfg.n_embd // self.cfg.n_head
        return 6 * n + 12 * self.cfg.n_layer * self.cfg.n_head * head_dim * seq_len

    def _attention_fn(self, T: int, device: torch.device):
        """The attention call for this forward pass, with the encoding's bias (if any) built once for all layers."""
        if not self.pe.has_bias():
            return lambda q, k, v, p: F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        use_flex = self.attention == "flex" or (
            self.attention == "auto" and device.type == "cuda" and _flex_available())
        if use_flex:
            from ropebench.flex import flex_attention_with

            return flex_attention_with(self.pe.score_mod(T, device), T, device)
        causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        mask = self.pe.bias(T, device).masked_fill(~causal, float("-inf"))[None]

        def sdpa_with_bias(q, k, v, p):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=p)

        return sdpa_with_bias

    def forward(self, idx: Tensor, targets: Tensor | None = None, reduction: str = "mean"):
        """idx: (B, T) token ids. Returns (logits, loss); loss is per token when reduction='none'."""
        B, T = idx.shape
        limit = self.pe.max_len()
        if limit is not None and T > limit:
            raise UserError(f"sequence length {T} exceeds what pe={self.pe.cfg.name} can encode ({limit})")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.pe.embed(self.wte(idx), pos))
        attn = self._attention_fn(T, idx.device)
        for block in self.blocks:
            x = block(x, self.pe, pos, attn)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        return logits, loss.view(B, T) if reduction == "none" else loss
