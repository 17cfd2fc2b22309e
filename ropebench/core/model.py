"""A nanoGPT-class decoder whose only varying part is the position encoding.

Pre-norm blocks, fused QKV projection, SDPA causal attention (flash where the encoding adds no bias),
GELU MLP, weight-tied head. The encoding (``ropebench.core.pe``) enters at its hook: ``embed`` on the token
embeddings, ``qk`` on queries and keys in every layer, ``bias`` on the attention logits -- a dense
(H, T, T) mask for SDPA, or a FlexAttention ``score_mod`` that never materialises it -- or ``logit_term``, a
logit term of one layer computed from its input or its queries and keys.

Each layer has an encoding and an attention window (``ropebench.core.layers``: a pattern such as Llama 4's
``[rope, rope, rope, nope]``; one encoding everywhere is the pattern of length one). The run's encoding is
``self.pe``; another one in the pattern lives in ``self.layer_pe``. Attention temperature that depends on length
(``ropebench.core.temperature``) multiplies the queries; DroPE's ``drop_rope`` takes RoPE out of every layer.

The model initialises its own parameters (GPT-2's scheme); the encoding initialises its own, and is built with
the random state forked, so a given seed gives the model the same weights whatever the encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ropebench.core import pe as pe_registry
from ropebench.core import temperature
from ropebench.core.layers import check_logit_scale, layer_pattern
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
        y = attn(x, q, k, v, self.dropout if self.training else 0.0)  # value hooks, temperature: inside attn
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


@dataclass(frozen=True)
class Layer:
    """What one layer's attention uses: its encoding, which of that encoding's layers it is, its window."""

    pe: pe_registry.PositionEncoding
    use: int  # 0 .. pe.n_layer - 1
    window: int | None  # keys a query sees (itself included); None: every earlier key


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
        self.train_seq_len = train_seq_len
        self.wte = nn.Embedding(vocab_size, model_cfg.n_embd)
        names, windows = layer_pattern(model_cfg, pe_cfg.name)
        dims = dict(n_embd=model_cfg.n_embd, n_head=model_cfg.n_head, train_seq_len=train_seq_len)
        with torch.random.fork_rng(devices=[]):  # the encodings' draws leave the model's random stream alone
            self.pe = pe_registry.build(pe_cfg, **dims, n_layer=names.count(pe_cfg.name))
            self.layer_pe = nn.ModuleDict({name: pe_registry.build(pe_registry.default_config(name), **dims,
                                                                   n_layer=names.count(name))
                                           for name in dict.fromkeys(names) if name != pe_cfg.name})
        encoding = {pe_cfg.name: self.pe, **self.layer_pe}
        self.layers = [Layer(encoding[name], names[:i].count(name), window)
                       for i, (name, window) in enumerate(zip(names, windows))]
        self.rope_dropped = False
        self.logit_scale = check_logit_scale(model_cfg, pe_cfg.name)
        if self.logit_scale != "none":
            temperature.check_train_len(train_seq_len, f"model.logit_scale={self.logit_scale}")
        if self.logit_scale == "ssmax":  # s per layer and head, 1-D so that weight decay leaves it alone
            init = temperature.ssmax_init(train_seq_len)
            self.ssmax_s = nn.Parameter(torch.full((model_cfg.n_layer * model_cfg.n_head,), init))
        self.eval_logit_scale: dict | None = None  # set_logit_scale
        self.drop = nn.Dropout(model_cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(model_cfg.n_embd, model_cfg.n_head, model_cfg.bias, model_cfg.dropout)
            for _ in range(model_cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(model_cfg.n_embd, bias=model_cfg.bias)
        self.lm_head = nn.Linear(model_cfg.n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        for name, module in self.named_modules():  # the encodings initialised their own parameters: leave them
            if not _is_encoding(name):
                self._init_weights(module)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight") and not _is_encoding(name):
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

    def encodings(self) -> list[pe_registry.PositionEncoding]:
        """The distinct encodings the layers use, in layer order."""
        return list(dict.fromkeys(layer.pe for layer in self.layers))

    def takes_position_ids(self) -> bool:
        """Whether per-example position ids mean something to the model: some layer's encoding takes them, and
        every other one reads no position at all (kind "none": a NoPE layer of a hybrid pattern)."""
        encodings = self.encodings()
        return (any(pe.supports_position_ids for pe in encodings)
                and all(pe.supports_position_ids or pe.kind == "none" for pe in encodings))

    def max_len(self) -> int | None:
        """Longest sequence every encoding of the model can represent (None: no limit)."""
        limits = [n for n in (pe.max_len() for pe in self.encodings()) if n is not None]
        return min(limits) if limits else None

    def drop_rope(self) -> None:
        """DroPE (Gelberg et al. 2025, arXiv 2512.12167): from now on every layer whose encoding rotates queries
        and keys attends without it (as NoPE). The encoding's weights (none, for RoPE) stay in the model."""
        if self.rope_dropped:
            return
        self.dropped_pe = pe_registry.build(pe_registry.default_config("nope"), n_embd=self.cfg.n_embd,
                                            n_head=self.cfg.n_head, train_seq_len=self.train_seq_len)
        self.layers = [replace(layer, pe=self.dropped_pe, use=0) if layer.pe.kind == "qk" else layer
                       for layer in self.layers]
        self.rope_dropped = True

    def set_logit_scale(self, spec: dict | None) -> None:
        """Evaluation-time temperature (``ropebench.core.temperature``): {"type": "logn"}, {"type": "beta", "c": c}
        or None. A model trained with its own (model.logit_scale) takes none."""
        if spec and self.logit_scale != "none":
            raise UserError(f"this model was trained with model.logit_scale={self.logit_scale}, which already "
                            f"scales its logits with length; it takes no --logit-scale {spec['type']}")
        if spec:
            temperature.check_train_len(self.train_seq_len, f"--logit-scale {spec['type']}")
        self.eval_logit_scale = dict(spec) if spec else None

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        """nanoGPT's estimate, 6N + 12 L H Q T: every parameter that multiplies activations (the tied embedding is
        the head, so it stays in; a learned position table is a lookup, so it does not) plus attention."""
        n = self.num_params(non_embedding=False) - sum(p.numel() for p in self.pe.parameters())
        head_dim = self.cfg.n_embd // self.cfg.n_head
        return 6 * n + 12 * self.cfg.n_layer * self.cfg.n_head * head_dim * seq_len

    def _attention_fns(self, T: int, pos: Tensor, device: torch.device) -> list:
        """Each layer's attention call ``f(x, q, k, v, dropout_p)`` for this forward pass, built once per kernel
        (a bias computed once for all its layers); value/output hooks and the temperature are folded in only
        where they apply (no per-layer no-op calls otherwise)."""
        scales = self._query_scales(T, device)
        kernels, fns = {}, []
        for i, layer in enumerate(self.layers):
            key = (layer.pe, layer.window, layer.use if layer.pe.has_logit_term() else None)
            if key not in kernels:
                kernels[key] = self._with_value_hooks(layer.pe, self._attention_kernel(layer, T, pos, device), pos)
            fns.append(kernels[key] if scales[i] is None else _scaled(kernels[key], scales[i]))
        return fns

    @staticmethod
    def _with_value_hooks(pe, attend, pos):
        if not pe.uses_value_hooks():
            return attend

        def attend_with_value_hooks(x, q, k, v, p):
            return pe.output(attend(x, q, k, pe.value(v, pos), p), pos)

        return attend_with_value_hooks

    def _query_scales(self, T: int, device: torch.device) -> list[Tensor | None]:
        """Per layer, the factor on its queries (broadcast over (B, H, T, D)), or None."""
        n, L, spec = len(self.layers), self.train_seq_len, self.eval_logit_scale
        if self.logit_scale == "ssmax":
            heads = self.ssmax_s.view(n, -1)
            return [temperature.ssmax(heads[i], T) for i in range(n)]
        if self.logit_scale == "llama4":
            scale = temperature.llama4(T, L, device)
            return [scale if layer.pe.kind == "none" else None for layer in self.layers]
        if spec is None:
            return [None] * n
        scale = temperature.logn(T, L, device) if spec["type"] == "logn" else temperature.beta(T, L, spec["c"], device)
        return [scale] * n

    def _use_flex(self, device: torch.device) -> bool:
        return self.attention == "flex" or (self.attention == "auto" and device.type == "cuda" and _flex_available())

    def _attention_kernel(self, layer: Layer, T: int, pos: Tensor, device: torch.device):
        pe, window = layer.pe, layer.window
        per_example = pos.dim() == 2
        allowed = None if window is None else _window_mask(T, window, device)
        if not pe.has_bias() and not pe.has_logit_term():
            if allowed is None:
                return lambda x, q, k, v, p: F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            return lambda x, q, k, v, p: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        if pe.has_logit_term():
            return self._logit_term_kernel(layer, T, pos, device, allowed)
        # An encoding with bias() but no score_mod() falls back to its dense bias: FlexAttention reads a None
        # score_mod as "leave the scores alone", which would silently drop the bias.
        # Per-example position ids (B, T) take the dense bias, built from the ids (score_mod knows only 0 .. T-1).
        score_mod = pe.score_mod(T, device) if self._use_flex(device) and not per_example else None
        if score_mod is not None:
            from ropebench.core.flex import flex_attention_with

            attend = flex_attention_with(score_mod, T, device, window)
            return lambda x, q, k, v, p: attend(q, k, v, p)
        mask = self._dense_mask(_bias(pe, T, pos, device), T, device, allowed)

        def sdpa_with_bias(x, q, k, v, p):
            attn_mask = mask if mask.dtype == q.dtype else mask.to(q.dtype)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)

        return sdpa_with_bias

    def _dense_mask(self, bias: Tensor | None, T: int, device: torch.device, allowed: Tensor | None,
                    dtype: torch.dtype | None = None) -> Tensor:
        """The additive mask (1 or B, H or 1, T, T): the bias (or 0; (B, H, T, T) for per-example ids) where a key
        is seen, -inf elsewhere, cast once here to the dtype q will have (autocast's, else the weights') unless
        ``dtype`` is given."""
        seen = allowed if allowed is not None else torch.ones(T, T, dtype=torch.bool, device=device).tril()
        bias = bias if bias is not None else torch.zeros(T, T, device=device)
        if dtype is None:
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else self.lm_head.weight.dtype
        mask = bias.masked_fill(~seen, float("-inf"))
        return (mask if mask.dim() == 4 else mask[None]).to(dtype)

    def _logit_term_kernel(self, layer: Layer, T: int, pos: Tensor, device: torch.device, allowed: Tensor | None):
        """Attention with the layer's logit term, computed per call from its input and its queries and keys. As a
        FlexAttention score_mod (no (B, H, T, T) tensor) only without gradients -- evaluation at long lengths: a
        score_mod reading a tensor that needs a gradient has not been checked on a GPU here."""
        pe = layer.pe
        mask = self._dense_mask(_bias(pe, T, pos, device), T, device, allowed, torch.float32)
        flex = self._use_flex(device) and not pe.has_bias() and not torch.is_grad_enabled() and pos.dim() == 1

        def attend_with_term(x, q, k, v, p):
            if flex and (score_mod := pe.logit_term(x, q, k, pos, layer.use, flex=True)) is not None:
                from ropebench.core.flex import flex_attention_with

                return flex_attention_with(score_mod, T, device, layer.window)(q, k, v, p)
            term = pe.logit_term(x, q, k, pos, layer.use)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=(term + mask).to(q.dtype), dropout_p=p)

        return attend_with_term

    def forward(self, idx: Tensor, targets: Tensor | None = None, reduction: str = "mean", pos: Tensor | None = None):
        """idx: (B, T) token ids. Returns (logits, loss); loss is per token when reduction='none'.

        ``pos``: per-example position ids (B, T), increasing along each row (PoSE's skipped positions, randomized
        positions); only for encodings that declare ``supports_position_ids``. Default: 0 .. T-1 for every
        example."""
        B, T = idx.shape
        limit = self.max_len()
        if limit is not None and T > limit:
            raise UserError(f"sequence length {T} exceeds what pe={self.pe.cfg.name} can encode ({limit})")
        encodings = self.encodings()
        if pos is None:
            pos = torch.arange(T, device=idx.device)
        elif not (self.takes_position_ids() or self.rope_dropped):
            # After DroPE's drop the ids a run trains on (PoSE, randomized positions) reach layers that read no
            # position, as DroPE intends; before it, ids no layer reads would be ignored silently.
            raise UserError(f"pe={self.pe.cfg.name} takes no position ids (PoSE and randomized positions need an "
                            "encoding that does)")
        x = self.wte(idx)
        for pe in encodings:
            x = pe.embed(x, pos)
        x = self.drop(x)
        for block, layer, attn in zip(self.blocks, self.layers, self._attention_fns(T, pos, idx.device)):
            x = block(x, layer.pe, pos, attn)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        # .float() is the identity on fp32 logits (no copy); under bf16 autocast the loss is taken in fp32.
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        return logits, loss.view(B, T) if reduction == "none" else loss


def _is_encoding(name: str) -> bool:
    """Whether a parameter or module name belongs to a position encoding (which initialises its own)."""
    return name.split(".")[0] in ("pe", "layer_pe")


def _bias(pe, T: int, pos: Tensor, device: torch.device) -> Tensor | None:
    """The encoding's dense bias: (H, T, T), or (B, H, T, T) built from per-example position ids (B, T)."""
    return pe.bias(T, device, pos=pos) if pos.dim() == 2 else pe.bias(T, device)


def _window_mask(T: int, window: int, device: torch.device) -> Tensor:
    """(T, T) bool: query i sees keys i - window < j <= i."""
    i = torch.arange(T, device=device)
    distance = i[:, None] - i[None, :]
    return (distance >= 0) & (distance < window)


def _scaled(attend, scale: Tensor):
    """``attend`` with the queries multiplied by ``scale`` (the attention temperature of one layer)."""

    def attend_scaled(x, q, k, v, p):
        return attend(x, q * scale.to(q.dtype), k, v, p)

    return attend_scaled


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
