"""Result-CSV cells as numbers: one reading for the runner (row keys, sort order when merging rows) and for the
report layer (rows read back for tables and figures).

Torch-free, so that the report layer reads results without importing torch.
"""

from __future__ import annotations

import math


def finite_float(value) -> float | None:
    """``value`` as a float; None when it is not a number (None, "", "abc") or not finite ("inf", "nan")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
