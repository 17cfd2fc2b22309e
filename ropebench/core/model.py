"""A nanoGPT-class decoder whose only varying part is the position encoding.

Pre-norm blocks, fused QKV projection, SDPA causal attention (flash where the encoding adds no bias),
GELU MLP, weight-tied head. The encoding (``ropebench.core.pe``) enters at its hook: ``embed`` on the token
embeddings, ``qk`` on queries and keys in every layer, or ``bias`` on the attention logits -- a dense
(H, T, T) mask for SDPA, or a FlexAttention ``score_mod`` that never materialises it.

The model initialises its own parameters (GPT-2's scheme); the encoding initialises its own, and is built with
the random state forked, so a given seed gives the model the same weights whatever the encoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ropebench.core import pe as pe_registry
from ropebench.errors import UserError


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
        # Split along channels, then view each as heads (nanoGPT's way): its backward is the concatenation that
        # happens anyway, where one permute of a (B, T, 3, H, D) view costs a copy per layer.
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        q, k = pe.qk(q, k, pos)
        y = attn(q, k, v, self.dropout if self.training else 0.0)  # the encoding's value hooks are inside attn
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
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = Attention(n_embd, n_head, bias, dropout)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
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
        self.wte = nn.Embedding(vocab_size, model_cfg.n_embd)
        with torch.random.fork_rng(devices=[]):  # the encoding's draws leave the model's random stream alone
            self.pe = pe_registry.build(pe_cfg, n_embd=model_cfg.n_embd, n_head=model_cfg.n_head,
                                        train_seq_len=train_seq_len)
        self.drop = nn.Dropout(model_cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(model_cfg.n_embd, model_cfg.n_head, model_cfg.bias, model_cfg.dropout)
            for _ in range(model_cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(model_cfg.n_embd, bias=model_cfg.bias)
        self.lm_head = nn.Linear(model_cfg.n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        for name, module in self.named_modules():  # the encoding initialised its own parameters: leave them
            if name != "pe" and not name.startswith("pe."):
                self._init_weights(module)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight") and not name.startswith("pe."):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * model_cfg.n_layer))
        self.attention = self._choose_attention(model_cfg.attention)
        self.register_load_state_dict_pre_hook(_unpadded_vocabulary_hook)

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

    def _attention_fn(self, T: int, pos: Tensor, device: torch.device):
        """The attention call for this forward pass: the encoding's bias (if any) built once for all layers, and
        its value/output hooks folded in only when it declares them (no per-layer no-op calls otherwise)."""
        attend = self._attention_kernel(T, pos, device)
        if not self.pe.uses_value_hooks():
            return attend
        pe = self.pe

        def attend_with_value_hooks(q, k, v, p):
            return pe.output(attend(q, k, pe.value(v, pos), p), pos)

        return attend_with_value_hooks

    def _attention_kernel(self, T: int, pos: Tensor, device: torch.device):
        if not self.pe.has_bias():
            return lambda q, k, v, p: F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        use_flex = self.attention == "flex" or (
            self.attention == "auto" and device.type == "cuda" and _flex_available())
        # An encoding with bias() but no score_mod() falls back to its dense bias: FlexAttention reads a None
        # score_mod as "leave the scores alone", which would silently drop the bias.
        # Per-example position ids (B, T) take the dense bias, built from the ids (score_mod knows only 0 .. T-1).
        per_example = pos.dim() == 2
        score_mod = self.pe.score_mod(T, device) if use_flex and not per_example else None
        if score_mod is not None:
            from ropebench.core.flex import flex_attention_with

            return flex_attention_with(score_mod, T, device)
        causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        # Cast once here to the dtype q will have (autocast's, else the weights'), not in every layer.
        autocast = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast else self.lm_head.weight.dtype
        bias = self.pe.bias(T, device, pos=pos) if per_example else self.pe.bias(T, device)[None]
        mask = bias.masked_fill(~causal, float("-inf")).to(dtype)

        def sdpa_with_bias(q, k, v, p):
            attn_mask = mask if mask.dtype == q.dtype else mask.to(q.dtype)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)

        return sdpa_with_bias

    def forward(self, idx: Tensor, targets: Tensor | None = None, reduction: str = "mean", pos: Tensor | None = None):
        """idx: (B, T) token ids. Returns (logits, loss); loss is per token when reduction='none'.

        ``pos``: per-example position ids (B, T), increasing along each row (PoSE's skipped positions, randomized
        positions); only for encodings that declare ``supports_position_ids``. Default: 0 .. T-1 for every
        example."""
        B, T = idx.shape
        limit = self.pe.max_len()
        if limit is not None and T > limit:
            raise UserError(f"sequence length {T} exceeds what pe={self.pe.cfg.name} can encode ({limit})")
        if pos is None:
            pos = torch.arange(T, device=idx.device)
        elif not self.pe.supports_position_ids:
            raise UserError(f"pe={self.pe.cfg.name} takes no position ids (PoSE and randomized positions need an "
                            "encoding that does)")
        x = self.drop(self.pe.embed(self.wte(idx), pos))
        attn = self._attention_fn(T, pos, idx.device)
        for block in self.blocks:
            x = block(x, self.pe, pos, attn)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        # .float() is the identity on fp32 logits (no copy); under bf16 autocast the loss is taken in fp32.
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        return logits, loss.view(B, T) if reduction == "none" else loss


def _unpadded_vocabulary_hook(model: GPT, state_dict, prefix, *_):
    """Load checkpoints written when the vocabulary was padded to a multiple of 64 (257 -> 320 rows).

    The token table (tied to the head) is resized in place to the checkpoint's rows, so such a model computes
    exactly what it computed when it was trained, padded logits included; the Parameter object stays the same,
    so an optimizer that already holds it keeps working (a resumed run's moments have the padded shape too).
    """
    rows = next((state_dict[prefix + key].shape[0] for key in ("wte.weight", "lm_head.weight")
                 if prefix + key in state_dict), None)
    weight = model.wte.weight
    if rows is None or rows == weight.shape[0] or rows < model.vocab_size or rows % 64:
        return  # nothing to adapt; a real mismatch is left for load_state_dict to report
    weight.data = weight.data.new_empty(rows, weight.shape[1])
    model.wte.num_embeddings = model.lm_head.out_features = rows
