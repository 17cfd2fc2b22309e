"""Whether Hugging Face libraries may use the network: only when a config names something on the Hub.

``huggingface_hub``, ``datasets`` and ``transformers`` read ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` once, when
first imported, so the choice is made here, before any of them is imported. Offline by default: otherwise even
a load from a local directory makes network calls and waits for their timeouts. A user's own setting of either
variable is never overridden.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# What the user set before ropebench touched these variables.
_USER_OFFLINE = os.environ.get("HF_HUB_OFFLINE", os.environ.get("HF_DATASETS_OFFLINE"))
_LIBRARIES = ("huggingface_hub", "datasets", "transformers")
_GLOB = set("*?[")


def prepare(network: bool = False) -> None:
    """Set the offline switches before the first import of a Hugging Face library: online only when ``network``
    is asked for, the user did not choose, and no such library has been imported yet (it would not notice)."""
    if network and _USER_OFFLINE is None and not any(name in sys.modules for name in _LIBRARIES):
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "0"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def import_datasets(network: bool = False):
    prepare(network)
    import datasets

    datasets.disable_progress_bars()
    return datasets


def is_local(spec: str) -> bool:
    """Whether ``spec`` names something on this machine (a path, or a glob of files) rather than a Hub name."""
    text = os.path.expanduser(str(spec))
    if _GLOB & set(text):
        return True
    return Path(text).exists() or looks_like_path(spec)


def looks_like_path(spec: str) -> bool:
    """A name that can only be a path (``/abs``, ``./rel``, ``~/x``, ``a/b/c``): never looked up on the Hub,
    whose names are ``name`` or ``owner/name``."""
    text = str(spec)
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text


def surely_local(spec: str) -> bool:
    """Whether a path that may not exist can only mean this machine: it looks like a path (``looks_like_path``)
    or its first component exists here (``runs/typo`` where ``runs/`` exists), so a typo is reported as a missing
    path rather than looked up on the Hub."""
    parts = Path(os.path.expanduser(str(spec))).parts
    return looks_like_path(spec) or (bool(parts) and Path(parts[0]).exists())
