"""The ``triton`` RoPE backend: ropebench's own kernel (:mod:`ropebench.core.rope.triton_kernel`).

The kernel module is imported on first use, not at discovery, so this module imports without triton and
``TRITON_INTERPRET`` is read when the kernel is first needed rather than when the backends are listed.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch

from ropebench.core.rope.backends import Backend, register_backend

HOW = "needs CUDA and the triton package (pip install triton)"


@lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install triton)"
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # a broken install raises anything from ImportError to RuntimeError
        return f"triton failed to import ({type(exc).__name__}: {exc}); reinstall it (pip install triton)"
    return None


def unavailable_reason(device: torch.device) -> str | None:
    device = torch.device(device)
    if device.type == "cuda":
        return _triton_import_error()
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return f"{HOW}; on the CPU it runs (slowly) only with TRITON_INTERPRET=1 set"
        return _triton_import_error()
    return f"{HOW}; it does not run on {device.type}"


def apply(q, k, cos, sin, pairing="half"):
    from ropebench.core.rope.triton_kernel import rope_qk

    return rope_qk(q, k, cos, sin, pairing)


register_backend(Backend("triton", apply, unavailable_reason, cuda_rank=40))
