"""Item documents: the text the encoder reads for each item.

A document is built from every signal the data has, in the order of `DocumentConfig.template`:

    title. description. Category: a > b. Tags: x, y. Price: mid-range. Sales: bestseller. Rating: highly rated.

Numeric signals become words (bands) so the language model can use them: the price band is the
item's price tertile within the catalog (budget / mid-range / premium); the sales band comes from
training interactions (bestseller = top 10% of items, popular = next 40%, niche = the rest with any
sale, new = none); the rating band from the mean rating where the data has ratings (highly rated >=
4/5, well rated >= 3, poorly rated below). Missing fields and missing signals are skipped, never
printed as "nan". An item with no text at all gets its id, so it still has a (weak) vector.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data import schema as S

# declared in recsys.config, which stays pandas-free: the training DAG reads the settings when Airflow parses it
from recsys.config import DEFAULT_TEMPLATE, FIELDS, DocumentConfig  # noqa: F401  (re-exported)


def _present(value: object) -> bool:
    return value is not None and not pd.isna(value) and str(value).strip() != ""


def price_bands(prices: pd.Series) -> pd.Series:
    """Tertiles of the known prices: budget / mid-range / premium (null where the price is unknown)."""
    p = pd.to_numeric(prices, errors="coerce").astype("Float64")
    out = pd.Series(pd.NA, index=prices.index, dtype="string")
    known = p.dropna()
    if known.nunique() < 3:
        return out
    lo, hi = np.quantile(known.to_numpy(dtype=float), [1 / 3, 2 / 3])
    out[known.index] = np.where(known <= lo, "budget", np.where(known <= hi, "mid-range", "premium"))
    return out


def sales_bands(item_ids: pd.Series, sales: pd.Series | None, config: DocumentConfig) -> pd.Series:
    """bestseller / popular / niche by rank of training sales; "new" for items without any."""
    out = pd.Series(pd.NA, index=item_ids.index, dtype="string")
    if sales is None:
        return out
    counts = item_ids.map(sales).fillna(0).to_numpy(dtype=float)
    sold = counts > 0
    out[~sold] = "new"
    if sold.any():
        rank = pd.Series(counts[sold]).rank(ascending=False, method="first").to_numpy() / sold.sum()
        out[sold] = np.where(rank <= config.bestseller_share, "bestseller", np.where(rank <= config.bestseller_share + config.popular_share, "popular", "niche"))
    return out


def rating_bands(item_ids: pd.Series, mean_rating: pd.Series | None, config: DocumentConfig) -> pd.Series:
    out = pd.Series(pd.NA, index=item_ids.index, dtype="string")
    if mean_rating is None:
        return out
    r = item_ids.map(mean_rating).astype("Float64") * (5.0 / config.rating_scale)
    has = r.notna()
    out[has] = np.where(r[has] >= 4.0, "highly rated", np.where(r[has] >= 3.0, "well rated", "poorly rated"))
    return out


def item_document(row: dict, config: DocumentConfig | None = None) -> str:
    """One item's document from its fields and (optional) `price_band`/`sales_band`/`rating_band`."""
    template = (config or DocumentConfig()).template
    parts: list[str] = []
    for part in template:
        if part in (S.TITLE, S.DESCRIPTION) and _present(row.get(part)):
            text = str(row[part]).strip().rstrip(".").strip()
            if text:  # a field that is only punctuation says nothing
                parts.append(text)
        elif part == S.CATEGORY and _present(row.get(S.CATEGORY)):
            parts.append("Category: " + str(row[S.CATEGORY]).strip())
        elif part == S.TAGS and _present(row.get(S.TAGS)):
            tags = [t.strip() for t in str(row[S.TAGS]).split(S.TAG_SEP) if t.strip()]
            if tags:
                parts.append("Tags: " + ", ".join(tags))
        elif part == "price_band" and _present(row.get("price_band")):
            parts.append(f"Price: {row['price_band']}")
        elif part == "sales_band" and _present(row.get("sales_band")):
            parts.append(f"Sales: {row['sales_band']}")
        elif part == "rating_band" and _present(row.get("rating_band")):
            parts.append(f"Rating: {row['rating_band']}")
    if not any(p for p in parts if not p.startswith(("Price:", "Sales:", "Rating:"))):
        parts.insert(0, f"item {row[S.ITEM_ID]}")
    return ". ".join(parts) + "."


def item_documents(
    items: pd.DataFrame,
    config: DocumentConfig | None = None,
    sales: pd.Series | None = None,
    mean_rating: pd.Series | None = None,
) -> list[str]:
    """Documents for every item, in the frame's row order.

    Args:
        items: canonical items.
        config: which parts, in which order.
        sales: training interactions per item id (for the sales band); None skips the band.
        mean_rating: mean rating per item id (for the rating band); None skips the band.
    """
    config = config or DocumentConfig()
    frame = items.assign(
        price_band=price_bands(items[S.PRICE]) if S.PRICE in items else pd.NA,
        sales_band=sales_bands(items[S.ITEM_ID], sales, config),
        rating_band=rating_bands(items[S.ITEM_ID], mean_rating, config),
    )
    return [item_document(r, config) for r in frame.to_dict("records")]
