"""Numeric item signals (price, sales, rating) as standardised model inputs: numpy and pandas, no torch.

Used by the fusion projection (`recsys.model.fusion`) and by the hybrid's feature block (`item_features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recsys.data import schema as S

if TYPE_CHECKING:
    from recsys.data.splits import Split


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


def train_mean_rating(ratings: pd.DataFrame, split: Split) -> pd.Series | None:
    """Mean rating per item over the training interactions (None when the data has no ratings); `ratings`
    holds the interactions' user, item and rating columns (`recsys.run.load_ratings`)."""
    from recsys.data.splits import TRAIN

    rated = ratings.dropna(subset=[S.RATING]).merge(split.part(TRAIN)[[S.USER_ID, S.ITEM_ID]], on=[S.USER_ID, S.ITEM_ID])
    return rated.groupby(S.ITEM_ID)[S.RATING].mean() if len(rated) else None


def item_signals(catalog: pd.DataFrame, split: Split, ratings: pd.DataFrame) -> dict[str, np.ndarray | None]:
    """Raw numeric signals per catalog item: price, training sales count, mean training rating (NaN = unknown)."""
    from recsys.data.splits import train_popularity

    price = pd.to_numeric(catalog[S.PRICE], errors="coerce").astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    mean_rating = train_mean_rating(ratings, split)
    rating = catalog[S.ITEM_ID].map(mean_rating).to_numpy(dtype=np.float64, na_value=np.nan) if mean_rating is not None else None
    return {"price": price, "sales": train_popularity(split, catalog[S.ITEM_ID].tolist()).astype(np.float64), "rating": rating}


def item_features(catalog: pd.DataFrame, split: Split, ratings: pd.DataFrame) -> np.ndarray | None:
    """Standardised numeric item features for the hybrid: log price and the mean training rating
    (0 where unknown). Sales are left out on purpose: they would only say which items are new."""
    raw = available_signals(item_signals(catalog, split, ratings), ("price", "rating"))
    return SignalScaler.fit(raw).transform(raw) if raw else None
