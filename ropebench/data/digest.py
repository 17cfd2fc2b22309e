"""Content digests of files, for cache keys that depend on what the files hold -- never on how their path was
spelled, where they were copied, or when they were last touched.

Reading every byte of a large corpus at each start would cost seconds, so a digest is remembered (in
``digests.json`` beside the caches) under the file's resolved path, size and modification time, and recomputed
only when one of those changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

MEMO = "digests.json"
_CHUNK = 1 << 20


def _compute(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Digests:
    """``digests[path]``: the sha1 of a file's bytes; remembered across calls in ``cache_root/digests.json``."""

    def __init__(self, cache_root: Path):
        self.path = Path(cache_root) / MEMO
        try:
            self.memo: dict[str, str] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.memo = {}
        self.changed = False

    def __getitem__(self, path: Path) -> str:
        st = Path(path).stat()
        key = f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in self.memo:
            self.memo[key] = _compute(Path(path))
            self.changed = True
        return self.memo[key]

    def save(self) -> None:
        """Write the memo atomically (jobs side by side may race: the last one wins, none is ever half-written);
        a cache directory that cannot be written only costs recomputing next time."""
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{MEMO}.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(self.memo, f)
            os.replace(tmp, self.path)
        except OSError:
            return


def files_key(named_files, cache_root: Path) -> str:
    """A digest of (name, content) pairs: the same files under other paths, or touched, give the same key."""
    digests = Digests(cache_root)
    h = hashlib.sha1()
    for name, path in named_files:
        h.update(f"{name}:{digests[path]}\n".encode())
    digests.save()
    return h.hexdigest()
