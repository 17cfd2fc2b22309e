"""ropebench: train short, test long -- position encodings compared in small GPTs."""

from ropebench.rope.freqs import rope_inv_freq

__version__ = "0.1.0"
__all__ = ["rope_inv_freq", "__version__"]
