"""The core layer: the model, attention, the position encodings (``pe/``) and RoPE's frequencies and kernel
backends (``rope/``). Imports nothing else of ropebench except ``errors``."""
