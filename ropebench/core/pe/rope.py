"""RoPE (Su et al., RoFormer): rotate each query/key channel pair by position * theta_i.

Only q and k are rotated (``rotate_values`` is an ablation, off by default). Angle tables are float32 and
computed with autocast off; the rotation itself runs on the backend named by ``backend``
(see :mod:`ropebench.core.rope.backends`). Evaluation can stretch the frequencies with a Hugging Face-style
``rope_scaling`` dict through :meth:`RoPE.set_scaling`.
"""

from dataclasses import dataclass, field

import torch

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding
from ropebench.core.rope import backends, reference
from ropebench.core.rope.freqs import normalize_scaling, rope_inv_freq, rope_tables
from ropebench.core.rope.reference import PAIRINGS
from ropebench.errors import UserError, choose


@dataclass
class ScalingConfig:
    """RoPE scaling applied while training (fine-tuned context extension: PI, NTK, YaRN), in Hugging Face's
    ``rope_scaling`` names. Evaluation applies the same scaling to the run by default."""

    type: str = "none"  # none | linear | ntk | dynamic | yarn | llama3 | longrope
    factor: float | None = None
    # The length the base model was trained at; filled in when the run starts (init_from's length, else seq_len).
    original_max_position_embeddings: int | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    attention_factor: float | None = None


@dataclass
class RopeConfig(PEConfig):
    name: str = "rope"
    base: float = 10000.0
    # half: channel i with i + d/2 (NeoX, HF Llama); interleaved: 2i with 2i+1 (RoFormer, GPT-J, Meta Llama).
    pairing: str = "half"
    # Channels rotated per head; 0 means all of them (partial rotary below head_dim).
    rotary_dim: int = 0
    backend: str = "auto"
    # Ablation: also rotate the values by their position (not RoPE as published).
    rotate_values: bool = False
    # Resonance RoPE (Wang et al. 2024): every wavelength rounded to an integer, after any scaling.
    resonance: bool = False
    scaling: ScalingConfig = field(default_factory=ScalingConfig)


def scaling_spec(cfg) -> dict | None:
    """The rope_scaling dict a RoPE config trains with, as configured (None: plain RoPE) -- the keys given only,
    so that it labels its rows as a `--rope-scaling` with the same options would."""
    node = cfg.get("scaling") if hasattr(cfg, "get") else None
    if not node or str(node.get("type", "none")) in ("none", "default"):
        return None
    return {"rope_type": str(node["type"]), **{k: node[k] for k in node if k != "type" and node[k] is not None}}


def trained_scaling(cfg) -> dict | None:
    """``scaling_spec`` validated, with each type's defaults filled in."""
    return normalize_scaling(scaling_spec(cfg))


@register("rope", RopeConfig)
class RoPE(PositionEncoding):
    kind = "qk"
    supports_rope_scaling = True
    supports_position_ids = True

    def __init__(self, cfg, **dims):
        super().__init__(cfg, **dims)
        choose("rope pairing", cfg.pairing, PAIRINGS)
        self.rotary_dim = cfg.rotary_dim or self.head_dim
        if self.head_dim % 2:
            raise UserError(f"RoPE needs an even head dimension, got n_embd/n_head = {self.head_dim}")
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.head_dim:
            raise UserError(f"pe.rotary_dim must be even and in (0, head_dim={self.head_dim}], got {self.rotary_dim}")
        if not cfg.base > 0:
            raise UserError(f"pe.base must be positive, got {cfg.base}")
        # Scaling trained with (pe.scaling) is part of the model; set_scaling(None) shows the raw model.
        self.trained_scaling = trained_scaling(cfg)
        self.scaling: dict | None = self.trained_scaling
        self._tables: dict = {}
        self._pos_tables = None
        self._backend = None
        # Plain attributes for the per-layer hot path: torch.compile cannot trace an OmegaConf lookup.
        self.pairing = str(cfg.pairing)
        self.rotate_values = bool(cfg.rotate_values)
        self.resonance = bool(cfg.resonance)
        self.kept_pairs: int | None = None  # p-RoPE: pairs at and past this index do not rotate

    def inv_freq(self, seq_len: int):
        """(inv_freq, attention_factor) of the rotary pairs at the current length: freqs.rope_inv_freq's."""
        return rope_inv_freq(self.rotary_dim, self.cfg.base, self.scaling, seq_len=seq_len, resonance=self.resonance,
                             kept_pairs=self.kept_pairs)

    def decay_params(self):
        return self.rotary_dim, float(self.cfg.base)

    def uses_value_hooks(self):
        return self.rotate_values

    def set_scaling(self, rope_scaling: dict | None) -> None:
        """Stretch the frequencies (evaluation-time context extension); None restores plain RoPE."""
        self.scaling = normalize_scaling(rope_scaling)
        self._tables, self._pos_tables = {}, None

    def tables(self, T: int, device: torch.device):
        key = (T, device)  # dynamic scaling depends on T, so the length is part of the key
        if key not in self._tables:
            inv_freq, attention_factor = self.inv_freq(T)
            positions = torch.arange(T, device=device)
            self._tables = {key: rope_tables(inv_freq, positions, attention_factor)}
        return self._tables[key]

    def _apply(self, fn, *args, **kwargs):
        self._tables, self._pos_tables = {}, None  # tables follow the module's device
        return super()._apply(fn, *args, **kwargs)

    def position_tables(self, pos: torch.Tensor):
        """Tables for per-example position ids (B, T) -- PoSE's skipped positions: (B, 1, T, rotary_dim/2), so
        they broadcast over heads. Built once per forward pass (every layer gets the same ``pos`` tensor)."""
        if self._pos_tables is None or self._pos_tables[0] is not pos:
            length = int(pos.max()) + 1  # what dynamic scaling stretches to
            inv_freq, attention_factor = self.inv_freq(length)
            cos, sin = rope_tables(inv_freq, pos.reshape(-1), attention_factor)
            self._pos_tables = (pos, cos.view(*pos.shape, -1)[:, None], sin.view(*pos.shape, -1)[:, None])
        return self._pos_tables[1:]

    def qk(self, q, k, pos):
        if pos.dim() == 2:  # per-example positions: the reference rotation broadcasts (B, 1, T, D/2) tables
            return reference.apply_rope(q, k, *self.position_tables(pos), self.pairing)
        if self._backend is None:
            self._backend = backends.resolve(self.cfg.backend, q.device)
        cos, sin = self.tables(pos.shape[0], q.device)
        return self._backend.apply(q, k, cos, sin, self.pairing)

    def value(self, v, pos):
        if not self.rotate_values:
            return v
        cos, sin = self.position_tables(pos) if pos.dim() == 2 else self.tables(pos.shape[0], v.device)
        return reference.rotate(v, cos, sin, self.pairing)
