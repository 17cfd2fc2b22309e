"""NoPE: no position signal at all; the causal mask is the only source of order (Kazemnejad et al. 2023)."""

from dataclasses import dataclass

from ropebench.core.pe import register
from ropebench.core.pe.base import PEConfig, PositionEncoding


@dataclass
class NoPEConfig(PEConfig):
    name: str = "nope"


@register("nope", NoPEConfig)
class NoPE(PositionEncoding):
    kind = "none"
