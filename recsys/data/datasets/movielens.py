"""MovieLens 100K, as shipped in RecBole's atomic-file format inside the recbole wheel.

The only data set of the three with real timestamps (a time split is possible) and explicit
ratings. Atomic files are tab-separated with a typed header ("user_id:token").
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence

import pandas as pd

from recsys.data.datasets.packaged import PackagedDataset
from recsys.data.datasets.wheels import WheelSource, decode_text
from recsys.errors import DataValidationError
from recsys.data.privacy import Pseudonymizer
from recsys.data.schema import (
    CATEGORY,
    DESCRIPTION,
    EVENT,
    ITEM_ID,
    RATING,
    TAG_SEP,
    TAGS,
    TIMESTAMP,
    TITLE,
    USER_ID,
    Dataset,
)

logger = logging.getLogger(__name__)

NAME = "movielens-100k"
SOURCE = WheelSource(
    package="recbole",
    version="1.2.1",
    sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    filename="recbole-1.2.1-py3-none-any.whl",
)
INTER_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
ITEM_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.item"
ID_PREFIX = "ML"
# MovieLens flags movies without a genre with the pseudo-genre "unknown": that is no category.
_NO_GENRE = "unknown"


def _read_atomic(text: str, required: tuple[str, ...], member: str) -> pd.DataFrame:
    """Read a RecBole atomic file as strings, naming columns without their type suffix."""
    # QUOTE_NONE: titles may contain quote characters that are not CSV quoting
    df = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    df.columns = [str(c).split(":", 1)[0] for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataValidationError(
            "input", member, [f"missing column(s) {missing} (rule: atomic file must have columns {list(required)})"]
        )
    return df


def parse_movielens(inter_text: str, item_text: str, pseudonymizer: Pseudonymizer, source: str = "") -> Dataset:
    """Map the ml-100k .inter and .item atomic files to the canonical schema.

    Args:
        inter_text: `user_id:token item_id:token rating:float timestamp:float`, tab-separated.
        item_text: `item_id:token movie_title:token_seq release_year:token class:token_seq`.
        pseudonymizer: replaces the MovieLens user ids.
        source: lineage label stored on the Dataset.

    Returns:
        Items with title, "Released <year>." description, first genre as category and all
        genres as tags; one "rating" interaction per row with its UTC timestamp.
    """
    inter_raw = _read_atomic(inter_text, ("user_id", "item_id", "rating", "timestamp"), INTER_MEMBER)
    item_raw = _read_atomic(item_text, ("item_id", "movie_title", "release_year", "class"), ITEM_MEMBER)

    year = item_raw["release_year"].str.strip()
    year = year.where(year.str.fullmatch(r"\d{4}"))  # the file has "unkonwn" and "V" in this column
    genres = item_raw["class"].str.split().map(lambda gs: [g for g in gs if g != _NO_GENRE])
    items = pd.DataFrame(
        {
            ITEM_ID: ID_PREFIX + item_raw["item_id"].str.strip(),
            TITLE: item_raw["movie_title"].str.strip(),
            DESCRIPTION: "Released " + year + ".",  # NaN year -> NaN description
            CATEGORY: genres.map(lambda gs: gs[0] if gs else None),
            TAGS: genres.map(lambda gs: TAG_SEP.join(gs) if gs else None),
        }
    )

    seconds = pd.to_numeric(inter_raw["timestamp"], errors="raise")
    inter = pd.DataFrame(
        {
            USER_ID: pseudonymizer.series(inter_raw["user_id"].str.strip()),
            ITEM_ID: ID_PREFIX + inter_raw["item_id"].str.strip(),
            EVENT: "rating",
            TIMESTAMP: pd.to_datetime(seconds, unit="s", utc=True),
            RATING: pd.to_numeric(inter_raw["rating"], errors="raise"),
        }
    )
    return Dataset.canonical(NAME, items, inter, has_time=True, has_text=True, source=source)


def _from_members(data: Sequence[bytes], pseudonymizer: Pseudonymizer, source: str) -> Dataset:
    inter, item = data
    return parse_movielens(decode_text(inter), decode_text(item), pseudonymizer, source=source)


DATASET = PackagedDataset(NAME, SOURCE, (INTER_MEMBER, ITEM_MEMBER), _from_members)
