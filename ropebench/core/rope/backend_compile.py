"""The ``compile`` RoPE backend: the reference rotation through ``torch.compile`` (Inductor fuses it).

Compiled lazily on the first call so listing backends costs nothing. Recompiles per dtype, pairing and
(after the first change) with dynamic shapes, which is torch.compile's default behaviour.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from functools import lru_cache

import torch

from ropebench.core.rope import reference
from ropebench.core.rope.backends import Backend, register_backend

_compiled = None


@lru_cache(maxsize=1)
def _dynamo_reason() -> str | None:
    if not hasattr(torch, "compile"):
        return f"needs torch.compile (PyTorch >= 2.0); this is {torch.__version__}"
    try:
        import torch._dynamo as dynamo

        supported = dynamo.is_dynamo_supported()
    except Exception as exc:  # older torch raises from is_dynamo_supported instead of returning False
        return f"torch.compile is not supported with this Python/PyTorch ({exc})"
    if supported is False:
        return (
            f"torch.compile is not supported with this Python/PyTorch ({torch.__version__}); upgrade PyTorch"
        )
    return None


def unavailable_reason(device: torch.device) -> str | None:
    device = torch.device(device)
    reason = _dynamo_reason()
    if reason is not None:
        return reason
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "torch.compile on CUDA needs the triton package (pip install triton)"
    if device.type == "cpu":
        cxx = os.environ.get("CXX", "")
        if not any(shutil.which(c) for c in (cxx, "g++", "c++", "clang++", "cl") if c):
            return "torch.compile on the CPU needs a C++ compiler (install g++ or clang)"
    return None


def apply(q, k, cos, sin, pairing="half"):
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(reference.apply_rope)
    return _compiled(q, k, cos, sin, pairing)


register_backend(Backend("compile", apply, unavailable_reason, cuda_rank=30))
