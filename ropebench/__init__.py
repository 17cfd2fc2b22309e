"""ropebench: train short, test long -- position encodings compared in small GPTs.

``import ropebench`` is cheap: torch is imported only when something that needs it is used.
"""

__version__ = "0.1.0"
__all__ = ["rope_inv_freq", "__version__"]


def __getattr__(name: str):
    if name == "rope_inv_freq":  # the single source of RoPE frequencies, for users' scripts and notebooks
        from ropebench.core.rope.freqs import rope_inv_freq

        return rope_inv_freq
    raise AttributeError(f"module 'ropebench' has no attribute {name!r}")
