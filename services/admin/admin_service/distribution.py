"""Summaries of a list of numbers: count, mean and percentiles by linear interpolation between
the closest ranks (numpy's default method), so that anyone can recompute them from the values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of values; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


@dataclass(frozen=True)
class Summary:
    count: int
    mean: float
    p5: float
    p50: float
    p95: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        return cls(
            count=len(values),
            mean=math.fsum(values) / len(values),
            p5=percentile(values, 5),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
        )
