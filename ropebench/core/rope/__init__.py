"""RoPE: frequencies (with context-extension scaling), the reference rotation and the kernel backends."""

from ropebench.core.rope.freqs import rope_inv_freq, rope_tables
from ropebench.core.rope.reference import apply_rope

__all__ = ["rope_inv_freq", "rope_tables", "apply_rope"]
