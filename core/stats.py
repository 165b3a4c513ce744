"""Small statistics shared by the evaluation, the reports and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; ``None`` for no values.

    p50 is the lower median for an even count, which keeps every reported figure an observed value.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def share(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator
