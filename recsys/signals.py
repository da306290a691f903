"""Numeric item signals (price, sales, rating) as standardised model inputs: numpy only, no torch.

Used by the fusion projection (`recsys.fusion`) and by the hybrid's feature block (`pipeline.item_features`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SignalScaler:
    """Turns raw numeric signals into the projection's standardised inputs (saved with the model)."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, raw: dict[str, np.ndarray]) -> "SignalScaler":
        """Means and standard deviations of the transformed signals over the catalog (NaN = unknown)."""
        names = tuple(raw)
        cols = [_transform(n, raw[n]) for n in names]
        mean = tuple(float(np.nanmean(c)) if np.isfinite(c).any() else 0.0 for c in cols)
        std = tuple(float(np.nanstd(c)) if np.isfinite(c).sum() > 1 and np.nanstd(c) > 0 else 1.0 for c in cols)
        return cls(names, mean, std)

    def transform(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """[n, len(names)] float32; an unknown value becomes 0 (the catalog mean)."""
        cols = [(_transform(n, raw[n]) - m) / s for n, m, s in zip(self.names, self.mean, self.std, strict=True)]
        return np.nan_to_num(np.stack(cols, axis=1), nan=0.0).astype(np.float32)

    def new_item_sales(self) -> tuple[int, float] | None:
        """(column, standardised value) of the sales input of an item nobody has bought yet."""
        if "sales" not in self.names:
            return None
        col = self.names.index("sales")
        return col, float(self.unknown_item()[col])

    def unknown_item(self) -> np.ndarray:
        """The inputs of an item known only by its text (a new item): unknown price and rating, 0 sales."""
        raw = {n: np.array([0.0 if n == "sales" else np.nan]) for n in self.names}
        return self.transform(raw)[0]


def _transform(name: str, values: np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if name in ("price", "sales"):  # heavy-tailed counts and amounts: log scale
        return np.log1p(np.clip(x, 0, None))
    return x


def available_signals(raw: dict[str, np.ndarray | None], wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The wanted signals the data actually carries (at least two known values)."""
    return {n: np.asarray(raw[n], dtype=np.float64) for n in wanted if raw.get(n) is not None and np.isfinite(np.asarray(raw[n], dtype=np.float64)).sum() >= 2}
