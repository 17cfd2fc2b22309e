"""A Hugging Face causal LM behind ropebench's model interface, so the probe runner evaluates it like a run.

* ``HFCausalLM``: ``model(idx, targets, reduction="none") -> (None, nll)`` with nll of shape (B, T), the
  interface ``perplexity.score_windows`` calls. The decoder runs once per window (``base_model``, no KV cache,
  SDPA attention); the output head and the cross-entropy run over chunks of positions, so at most
  ``LOGITS_BUDGET`` float32 logits exist at a time however long the window and large the vocabulary.
* ``HFPositions`` (``model.pe``): what the runner asks of an encoding. ``set_scaling`` rebuilds the model's own
  rotary-embedding modules from a copy of its config whose ``rope_parameters`` (transformers' RoPE schema,
  ``modeling_rope_utils``) hold the scaling, so the frequencies, attention factor and dynamic-NTK updates are
  the ones a transformers user gets by loading the model with that ``rope_scaling``.
* ``load_hf_model``: loads and self-checks the model: causal (a prefix's predictions do not depend on later
  tokens) and scored exactly as the model's own loss (``model(ids, labels=ids).loss``, transformers' mean
  next-token cross-entropy), on a 16-token input, before anything is written.

ropebench's ``ntk`` (static NTK-aware, b' = b * s^(d/(d-2))) has no transformers rope_type; it is expressed
exactly as the default type with that base.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ropebench.errors import UserError
from ropebench.run import hf_compat

# Float32 logits alive at once while scoring: 2^25 (128 MiB), e.g. 256 positions of a 128k vocabulary.
LOGITS_BUDGET = 2**25
# transformers' rope_parameters keys of each ropebench scaling type (rope_theta and partial_rotary_factor are
# the model's own); ntk is handled apart, as a base change.
_HF_KEYS = {
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "mscale",
             "mscale_all_dim", "truncate"),
    "llama3": ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"),
    "longrope": ("factor", "original_max_position_embeddings", "short_factor", "long_factor", "attention_factor"),
}
_OWN_KEYS = ("rope_theta", "partial_rotary_factor")


def import_transformers():
    """transformers, quiet (ropebench prints its own progress); one line when it is not installed."""
    try:
        import transformers
    except ImportError:
        raise UserError("evaluating a Hugging Face model needs transformers: pip install -e '.[hf]'") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def rotary_dim(config) -> int:
    """The number of rotated channels per head, as transformers computes it."""
    params = hf_compat.rope_parameters(config) or {}
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(head_dim * params.get("partial_rotary_factor", 1.0))


def hf_rope_parameters(spec: dict, own: dict, dim: int) -> dict:
    """A ropebench scaling spec (``freqs.normalize_scaling``'s schema) as transformers ``rope_parameters``; None:
    plain RoPE."""
    kept = {key: own[key] for key in _OWN_KEYS if key in own}
    if spec is None:
        return {**kept, "rope_type": "default"}
    kind = spec["rope_type"]
    if kind == "ntk":
        # Static NTK-aware = the default RoPE with base b * s^(d/(d-2)); one pair (d = 2) has no base to change.
        base = own["rope_theta"] * spec["factor"] ** (dim / (dim - 2)) if dim > 2 else own["rope_theta"]
        return {**kept, "rope_type": "default", "rope_theta": base}
    return {**kept, "rope_type": kind, **{key: spec[key] for key in _HF_KEYS[kind] if key in spec}}


def model_scaling(config) -> dict | None:
    """The RoPE scaling a model's config carries, as ropebench's scaling spec (``rope_type`` and its keys; None for
    plain RoPE or none), so that its rows are labelled as a run trained with it is. A scaling ropebench cannot
    name is refused: its rows would carry a wrong label."""
    from ropebench.core.rope.freqs import normalize_scaling

    params = hf_compat.rope_parameters(config)
    if not params or "rope_type" not in params or params["rope_type"] == "default":
        return None
    spec = {key: value for key, value in params.items() if key not in hf_compat.OWN_KEYS[1:]}
    try:
        normalize_scaling({"original_max_position_embeddings": config.max_position_embeddings, **spec})
    except UserError as exc:
        raise UserError(f"the model's own RoPE scaling ({spec}) is not one ropebench can name: {exc}") from None
    return spec


def rope_scaling_problem(config) -> str | None:
    """Why --rope-scaling cannot apply to a model with this config, or None."""
    params = hf_compat.rope_parameters(config)
    if not params:
        return f"it has no rotary position embedding (model_type {config.model_type})"
    if "rope_type" not in params:
        return f"it uses a different RoPE per layer type ({', '.join(params)}); --rope-scaling sets one"
    if params["rope_type"] != "default":
        factor = f", factor {params['factor']:g}" if isinstance(params.get("factor"), (int, float)) else ""
        return (f"it already scales its RoPE (rope_type {params['rope_type']}{factor}); --rope-scaling would "
                "replace that, not add to it (--rope-scaling none evaluates it without)")
    return None


class HFPositions:
    """``model.pe`` of an HF model: whether RoPE scaling applies, the longest length, the scaling itself.

    As loaded, the model computes the scaling its config carries (``trained_scaling``, which labels its rows);
    ``set_scaling`` rebuilds its rotary modules from a copy of the config with other ``rope_parameters`` (None:
    plain RoPE) -- each rebuilt module checked to compute ropebench's own tables for that scaling, since versions
    of transformers differ -- and restores the modules as loaded for the model's own scaling."""

    def __init__(self, hf_model):
        self.hf = hf_model
        self.rotary = [(name, module) for name, module in hf_model.named_modules()
                       if name and type(module).__name__.endswith("RotaryEmbedding")]
        params = hf_compat.rope_parameters(hf_model.config)
        self.own = params if params and "rope_type" in params else None
        self.trained_scaling = model_scaling(hf_model.config) if self.own else None
        # Replacing the model's own scaling is refused before this (hf_session, rope_scaling_problem); removing it
        # (--rope-scaling none) is a scaling like any other.
        self.supports_rope_scaling = bool(self.rotary) and self.own is not None
        self._limit = _learned_limit(hf_model)

    def max_len(self) -> int | None:
        return self._limit

    def _original_length(self) -> int:
        return int(self.hf.config.max_position_embeddings)

    def _is_own(self, spec: dict | None) -> bool:
        from ropebench.core.rope.freqs import normalize_scaling

        def filled(s):
            return normalize_scaling({"original_max_position_embeddings": self._original_length(), **s}) if s else None

        return filled(spec) == filled(self.trained_scaling)

    def set_scaling(self, spec: dict | None) -> None:
        """The model with scaling ``spec`` (None: plain RoPE); the model's own scaling restores its own modules."""
        if self._is_own(spec):
            for name, module in self.rotary:
                self._put(name, module)
            return
        if self.own is None:
            raise UserError("this model has no rotary position embedding to scale")
        dim = rotary_dim(self.hf.config)
        config = hf_compat.with_rope_parameters(self.hf.config, hf_rope_parameters(spec, self.own, dim))
        device = next(self.hf.parameters()).device
        for name, module in self.rotary:
            hf_compat.check_rotary_tables(self._rebuilt(module, config, device), spec, self.own["rope_theta"],
                                          dim, self._original_length())
            # Frequencies stay float32, as transformers computes them; only the device follows the model. A fresh
            # module: the check above moved a dynamic one's cached length.
            self._put(name, self._rebuilt(module, config, device))

    @staticmethod
    def _rebuilt(module, config, device):
        try:
            return type(module)(config=config).to(device)
        except Exception as exc:  # a remote-code rotary class with another constructor
            raise UserError(f"cannot rebuild {type(module).__name__} with the RoPE settings of --rope-scaling: "
                            f"{exc}".splitlines()[0]) from None

    def _put(self, name: str, module) -> None:
        parent, _, child = name.rpartition(".")
        setattr(self.hf.get_submodule(parent) if parent else self.hf, child, module)


def _learned_limit(hf_model) -> int | None:
    """max_position_embeddings for a model with a learned absolute position table (GPT-2's wpe), else None:
    its positions stop there, as a ropebench run with learned positions stops at max_len."""
    if hf_compat.rope_parameters(hf_model.config):
        return None
    limit = getattr(hf_model.config, "max_position_embeddings", None)
    words = hf_model.get_input_embeddings()
    for module in hf_model.modules():
        # Some tables carry an offset of 2 (OPT); a token-type table has 2 rows and never matches.
        if isinstance(module, torch.nn.Embedding) and module is not words and limit and \
                limit <= module.num_embeddings <= limit + 2:
            return int(limit)
    return None


class HFCausalLM(torch.nn.Module):
    """ropebench's calling convention over an HF causal LM; ``batch_size`` windows per decoder pass (None: every
    window the caller passes at once)."""

    rope_dropped = False  # as ropebench's GPT declares it: no HF model has had RoPE taken out (DroPE)

    def max_len(self) -> int | None:
        return self.pe.max_len()

    def __init__(self, hf_model, batch_size: int | None = 1):
        super().__init__()
        self.hf = hf_model
        self.pe = HFPositions(hf_model)
        self.batch_size = batch_size
        config = hf_model.config
        # Output transforms some architectures apply after the head (Gemma 2/3 soft-capping, Cohere's scale);
        # load_hf_model checks that the scores equal the model's own loss, whatever the architecture.
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.logit_scale = getattr(config, "logit_scale", None)

    @torch.no_grad()
    def forward(self, idx: torch.Tensor, targets: torch.Tensor, reduction: str = "none"):
        if reduction != "none":
            raise ValueError("HFCausalLM scores per token only (reduction='none')")
        # The model runs in the dtype it was loaded in (--dtype): never under the caller's autocast.
        with torch.autocast(device_type=idx.device.type, enabled=False):
            size = self.batch_size or len(idx)
            nll = [self._nll(rows, tgt) for rows, tgt in zip(idx.split(size), targets.split(size))]
        return None, torch.cat(nll)

    @torch.no_grad()
    def logits_at(self, idx: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Float32 logits (B, A, V) at positions ``at`` (B, A) of ``idx`` (B, T): the head runs there only."""
        out = []
        with torch.autocast(device_type=idx.device.type, enabled=False):
            size = self.batch_size or len(idx)
            for rows, where in zip(idx.split(size), at.split(size)):
                hidden = self.hf.base_model(input_ids=rows, use_cache=False).last_hidden_state
                out.append(self._logits(hidden.gather(1, where[..., None].expand(-1, -1, hidden.shape[-1]))))
        return torch.cat(out)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.hf.get_output_embeddings()(hidden).float()
        if self.logit_scale:
            logits = logits * self.logit_scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _nll(self, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hidden = self.hf.base_model(input_ids=rows, use_cache=False).last_hidden_state
        step = max(1, LOGITS_BUDGET // (rows.shape[0] * self.hf.get_output_embeddings().weight.shape[0]))
        nll = torch.empty(targets.shape, dtype=torch.float32, device=rows.device)
        for start in range(0, rows.shape[1], step):
            logits = self._logits(hidden[:, start : start + step])
            nll[:, start : start + step] = F.cross_entropy(logits.transpose(1, 2), targets[:, start : start + step],
                                                           reduction="none")
        return nll


def _from_pretrained(transformers, source: str, dtype: torch.dtype, trust_remote_code: bool):
    load = transformers.AutoModelForCausalLM.from_pretrained
    try:
        try:
            return load(source, **hf_compat.dtype_argument(dtype), attn_implementation="sdpa",
                        trust_remote_code=trust_remote_code)
        except ValueError as exc:  # an architecture without SDPA support: its default attention
            if "sdpa" not in str(exc).lower():
                raise
            return load(source, **hf_compat.dtype_argument(dtype), trust_remote_code=trust_remote_code)
    except Exception as exc:  # a missing or damaged file (a safetensors cut short), an unknown architecture
        detail = " ".join(str(exc).split())[:300] or "no message"
        raise UserError(f"cannot load the model '{source}': {type(exc).__name__}: {detail}") from None


def load_hf_model(source: str, dtype: torch.dtype, device: torch.device, batch_size: int | None,
                  trust_remote_code: bool = False) -> HFCausalLM:
    """The model on ``device`` in ``dtype``, in eval mode, checked causal and scored as its own loss."""
    transformers = import_transformers()
    hf_model = _from_pretrained(transformers, source, dtype, trust_remote_code).to(device).eval()
    model = HFCausalLM(hf_model, batch_size)
    _self_check(model, source, device)
    return model


@torch.no_grad()
def _self_check(model: HFCausalLM, source: str, device: torch.device) -> None:
    vocab = model.hf.get_output_embeddings().weight.shape[0]
    n = min(16, getattr(model.hf.config, "max_position_embeddings", None) or 16)  # within a learned table
    ids = torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(0)).to(device)
    hf = model.hf
    full, prefix = hf(ids).logits[:, : n // 2].float(), hf(ids[:, : n // 2]).logits.float()
    # Half precision: tolerances of its rounding; float32: tight.
    tol = 5e-2 if hf.dtype in (torch.float16, torch.bfloat16) else 1e-4
    if not torch.allclose(full, prefix, rtol=tol, atol=tol):
        raise UserError(f"'{source}' is not a causal language model: its predictions at a position depend on "
                        "later tokens")
    own = hf(ids, labels=ids).loss.float().item()
    ours = model(ids[:, :-1], ids[:, 1:])[1].mean().item()
    if abs(own - ours) > tol * max(1.0, abs(own)):
        raise UserError(f"'{source}': ropebench's chunked scoring gives {ours:.5f}, the model's own loss "
                        f"{own:.5f}; its output layer does something ropebench does not reproduce")
