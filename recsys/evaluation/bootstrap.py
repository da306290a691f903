"""Paired bootstrap over test users: how sure is a relative difference between two models?

Both models are scored on the same users; a resample draws users with replacement and recomputes
mean(candidate) / mean(reference) - 1 on the SAME draw for both, so what the users share (easy and
hard baskets) cancels out. The percentile interval of those resampled gains is reported. Pure numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A relative change (candidate / reference - 1) with its bootstrap interval."""

    point: float
    low: float
    high: float
    n: int  # users the comparison rests on
    confidence: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def contains_zero(self) -> bool:
        return self.low <= 0.0 <= self.high


def paired_relative_gain(
    candidate: np.ndarray,
    reference: np.ndarray,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 200,
) -> Interval | None:
    """Relative gain of the candidate's mean over the reference's, with a paired percentile interval.

    Users where either value is NaN (no target for this metric) are left out. Returns None when no user
    remains or the reference's mean is 0 (a relative change is not defined: missing evidence)."""
    cand, ref = np.asarray(candidate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if cand.shape != ref.shape:
        raise ValueError(f"paired values must align: {cand.shape} vs {ref.shape}")
    keep = ~(np.isnan(cand) | np.isnan(ref))
    cand, ref = cand[keep], ref[keep]
    n = len(cand)
    if n == 0 or ref.mean() <= 0:
        return None
    rng = np.random.default_rng(seed)
    gains = np.empty(samples)
    for start in range(0, samples, chunk):  # bounded memory: chunk x n indices at a time
        size = min(chunk, samples - start)
        idx = rng.integers(0, n, size=(size, n))
        c_mean, r_mean = cand[idx].mean(axis=1), ref[idx].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            gains[start : start + size] = np.where(r_mean > 0, c_mean / np.where(r_mean > 0, r_mean, 1.0) - 1.0, np.inf)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(gains, [tail, 1.0 - tail])
    return Interval(float(cand.mean() / ref.mean() - 1.0), float(low), float(high), int(n), confidence)
