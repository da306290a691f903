"""The canonical schema every data set is mapped to before it is validated or stored.

Column names are shared constants (as in recommenders-team/recommenders) so that no module
spells a column by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# --- items -------------------------------------------------------------------------------
ITEM_ID = "item_id"
TITLE = "title"
DESCRIPTION = "description"
CATEGORY = "category"  # a path, levels joined by CATEGORY_SEP ("Home > Kitchen > Mugs")
PRICE = "price"
TAGS = "tags"  # free-form tags joined by TAG_SEP

CATEGORY_SEP = " > "
TAG_SEP = "|"

ITEM_COLUMNS: tuple[str, ...] = (ITEM_ID, TITLE, DESCRIPTION, CATEGORY, PRICE, TAGS)
ITEM_REQUIRED: tuple[str, ...] = (ITEM_ID, TITLE)
ITEM_TEXT_COLUMNS: tuple[str, ...] = (TITLE, DESCRIPTION, CATEGORY, TAGS)

# --- interactions ------------------------------------------------------------------------
USER_ID = "user_id"  # always pseudonymized (keyed hash) before anything is written
EVENT = "event"
TIMESTAMP = "timestamp"  # tz-aware UTC; null for data sets without time
BASKET_ID = "basket_id"  # order / session id; null where absent
QUANTITY = "quantity"
RATING = "rating"  # explicit feedback value where the data has it

INTERACTION_COLUMNS: tuple[str, ...] = (USER_ID, ITEM_ID, EVENT, TIMESTAMP, BASKET_ID, QUANTITY, RATING)
INTERACTION_REQUIRED: tuple[str, ...] = (USER_ID, ITEM_ID, EVENT)

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "purchase", "rating")

# longest value of each length-limited column: the warehouse's VARCHAR sizes and the validation gate's
# length rules are both declared from this one table (user ids are stored pseudonymized: 22 characters)
MAX_LENGTHS: dict[str, int] = {ITEM_ID: 128, USER_ID: 64, EVENT: 16, BASKET_ID: 128}
DATASET_NAME_MAX = 64  # a data set's name: the warehouse key and its inbox folder

# pandas dtypes of the canonical frames (nullable where a data set may lack the field)
ITEM_DTYPES: dict[str, str] = {
    ITEM_ID: "string",
    TITLE: "string",
    DESCRIPTION: "string",
    CATEGORY: "string",
    PRICE: "Float64",
    TAGS: "string",
}
INTERACTION_DTYPES: dict[str, str] = {
    USER_ID: "string",
    ITEM_ID: "string",
    EVENT: "string",
    TIMESTAMP: "datetime64[ns, UTC]",
    BASKET_ID: "string",
    QUANTITY: "Float64",
    RATING: "Float64",
}


@dataclass(frozen=True)
class Dataset:
    """A data set in the canonical schema, with what it can and cannot support."""

    name: str
    items: pd.DataFrame
    interactions: pd.DataFrame
    has_time: bool  # timestamps are meaningful -> global time split
    has_text: bool  # items carry a title -> the text-presence expectation applies
    source: str  # where it came from (package==version/member, or file paths), for lineage

    @classmethod
    def canonical(cls, name: str, items: pd.DataFrame, interactions: pd.DataFrame, *, has_time: bool, has_text: bool, source: str) -> Dataset:
        """A loader's frames brought to the canonical columns and dtypes (`to_canonical_items` / `_interactions`)."""
        return cls(name, to_canonical_items(items), to_canonical_interactions(interactions), has_time, has_text, source)


def empty_items() -> pd.DataFrame:
    """An items frame with the canonical columns and dtypes and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in ITEM_DTYPES.items()})


def empty_interactions() -> pd.DataFrame:
    """An interactions frame with the canonical columns and dtypes and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in INTERACTION_DTYPES.items()})


def to_canonical_items(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing optional columns as nulls, order columns, cast to the canonical dtypes."""
    out = df.copy()
    for col, dtype in ITEM_DTYPES.items():
        if col not in out.columns:
            out[col] = pd.Series(pd.NA, index=out.index, dtype=dtype)
    return out[list(ITEM_COLUMNS)].astype(ITEM_DTYPES)


def to_canonical_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing optional columns as nulls, order columns, cast to the canonical dtypes."""
    out = df.copy()
    for col, dtype in INTERACTION_DTYPES.items():
        if col not in out.columns:
            out[col] = pd.Series(pd.NA if dtype != INTERACTION_DTYPES[TIMESTAMP] else pd.NaT, index=out.index, dtype=dtype)
    return out[list(INTERACTION_COLUMNS)].astype(INTERACTION_DTYPES)


def sample_users(dataset: Dataset, n_users: int) -> Dataset:
    """Keep `n_users` users (the first by pseudonymized id: a random but reproducible choice) and the items they touched."""
    users = sorted(dataset.interactions[USER_ID].dropna().unique())[:n_users]
    inter = dataset.interactions[dataset.interactions[USER_ID].isin(users)].reset_index(drop=True)
    items = dataset.items[dataset.items[ITEM_ID].isin(set(inter[ITEM_ID]))].reset_index(drop=True)
    return Dataset(dataset.name, items, inter, dataset.has_time, dataset.has_text, dataset.source + f" (sample of {len(users)} users)")
