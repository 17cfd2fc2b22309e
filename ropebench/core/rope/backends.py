"""RoPE kernel backends behind one interface: ``apply(q, k, cos, sin, pairing) -> (q_rot, k_rot)``.

q, k: (B, H, T, D), any float dtype, possibly non-contiguous; cos, sin: (T, rotary_dim/2) float32 tables from
:func:`ropebench.core.rope.freqs.rope_tables`. Every backend must return what :mod:`ropebench.core.rope.reference`
returns. Backends register themselves here with :func:`register_backend`; optional ones live in
``backend_<name>.py`` modules beside this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ropebench.core.rope import reference
from ropebench.errors import UserError

ApplyFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Backend:
    name: str
    apply: ApplyFn
    # (device) -> None when usable there, else a one-line reason with how to get it.
    unavailable_reason: Callable[[torch.device], str | None]
    # Preference for `auto` on CUDA and on other devices (higher wins; 0: never picked over the reference).
    cuda_rank: int = 0
    cpu_rank: int = 0


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Add a backend; a name already taken by a different backend is refused rather than silently replaced."""
    taken = _BACKENDS.get(backend.name)
    if taken is not None and taken != backend:
        raise UserError(f"rope backend name '{backend.name}' is already registered (by "
                        f"{taken.apply.__module__}); register the new one under another name")
    _BACKENDS[backend.name] = backend


def backends() -> dict[str, Backend]:
    _load_optional()
    return dict(_BACKENDS)


def _load_optional() -> None:
    # Each optional backend is its own module, ``backend_<name>.py``, discovered here. It must import without
    # its optional dependency and register itself with an unavailable_reason saying how to get it.
    import importlib
    import pkgutil

    import ropebench.core.rope as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("backend_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def available(device: torch.device) -> list[str]:
    return [name for name, b in backends().items() if b.unavailable_reason(device) is None]


def agrees_with_reference(backend: Backend, device: torch.device) -> str | None:
    """None when ``backend`` matches the reference on a small tensor on ``device``, else why it does not."""
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 16, 8, generator=generator).to(device) for _ in range(2))
    angles = torch.arange(16, dtype=torch.float32)[:, None] * torch.rand(4, generator=generator)[None]
    cos, sin = angles.cos().to(device), angles.sin().to(device)
    try:
        got = backend.apply(q, k, cos, sin, "half")
    except Exception as exc:  # a kernel that fails to compile or launch on this device
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    want = reference.apply_rope(q, k, cos, sin, "half")
    error = max(float((g.float() - w.float()).abs().max()) for g, w in zip(got, want))
    return None if error <= 1e-4 else f"differs from the reference by {error:.2e}"


_CHECKED: dict[tuple[str, str], str | None] = {}


def _auto(table: dict[str, Backend], device: torch.device) -> Backend:
    """The fastest usable backend that gives the reference's result on this device (checked once per device):
    a kernel that has never run on this hardware is not trusted on its rank alone."""
    def rank(b: Backend) -> int:
        return b.cuda_rank if device.type == "cuda" else b.cpu_rank

    usable = sorted((b for b in table.values() if b.unavailable_reason(device) is None and (rank(b) > 0 or
                     b.name == "torch")), key=lambda b: -rank(b))
    for backend in usable:
        key = (backend.name, str(device))
        if key not in _CHECKED:
            _CHECKED[key] = None if backend.name == "torch" else agrees_with_reference(backend, device)
            if _CHECKED[key] is not None:
                import warnings

                warnings.warn(f"rope backend '{backend.name}' fails its check on {device} ({_CHECKED[key]}); "
                              "pe.backend=auto falls back to the next one", stacklevel=2)
        if _CHECKED[key] is None:
            return backend
    return table["torch"]


def resolve(name: str, device: torch.device) -> Backend:
    """The backend called ``name`` (or the fastest usable, verified one for ``auto``); UserError if it can't run
    here."""
    table = backends()
    if name == "auto":
        return _auto(table, device)
    if name not in table:
        raise UserError(f"unknown rope backend '{name}'; choose one of: auto, {', '.join(sorted(table))}")
    reason = table[name].unavailable_reason(device)
    if reason is not None:
        raise UserError(f"rope backend '{name}' is not available on {device.type}: {reason}; "
                        f"available here: {', '.join(available(device))}")
    return table[name]


register_backend(Backend("torch", reference.apply_rope, lambda device: None, cuda_rank=0))
