"""UCI Online Retail, as grouped per customer in the PyARMViz wheel.

Each CSV line is one customer; its fields are the distinct product descriptions that customer
bought. There are no times, quantities or invoices in this form, so the data set only
supports a random (not a time) split, and every interaction is a "purchase".
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import tarfile
from collections.abc import Sequence

import pandas as pd

from recsys.data.datasets.packaged import PackagedDataset
from recsys.data.datasets.wheels import WheelSource, decode_text
from recsys.data.privacy import Pseudonymizer
from recsys.data.schema import (
    EVENT,
    ITEM_ID,
    TITLE,
    USER_ID,
    Dataset,
)

logger = logging.getLogger(__name__)

NAME = "online-retail"
SOURCE = WheelSource(
    package="PyARMViz",
    version="0.1.4",
    sha256="5bba48a1b0c790955ecd080cc11f1469a02e0fe84268dc9f40a97f4b1f04bde0",
    filename="PyARMViz-0.1.4-py2.py3-none-any.whl",
)
MEMBER = "PyARMViz/datasets/Online_Retail_Grouped.tar.xz"
CSV_NAME = "Online_Retail_Grouped.csv"
SOURCE_LABEL = f"{SOURCE.requirement}:{MEMBER}"

# Lines of the original invoices that are fees or bookkeeping, not products a customer chose:
# recommending "POSTAGE" would be useless. Exact titles after normalization; only those
# present in the data are dropped.
NON_MERCHANDISE: frozenset[str] = frozenset(
    {
        "POSTAGE",
        "DOTCOM POSTAGE",
        "CARRIAGE",
        "Manual",
        "Bank Charges",
        "AMAZON FEE",
        "Adjust bad debt",
        "SAMPLES",
        "CRUK Commission",
        "Next Day Carriage",
        "Discount",
        "High Resolution Image",
    }
)

_WS = re.compile(r"\s+")


def normalize_title(raw: str) -> str:
    """Strip a description and collapse internal whitespace ("FOUR HOOK  WHITE " -> "FOUR HOOK WHITE")."""
    return _WS.sub(" ", raw).strip()


def item_id_for(title: str) -> str:
    """A stable item id from the normalized title: "OR" + 12 hex chars of its sha1 (no commas, no spaces)."""
    return "OR" + hashlib.sha1(title.encode("utf-8")).hexdigest()[:12]


def extract_csv(archive: bytes, csv_name: str = CSV_NAME) -> str:
    """Read the CSV out of the tar.xz archive in memory (nothing is extracted to disk)."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:xz") as tar:
        try:
            member = tar.getmember(csv_name)
        except KeyError:
            raise RuntimeError(f"archive {MEMBER} has no member {csv_name!r} (has {tar.getnames()})") from None
        fh = tar.extractfile(member)
        if fh is None:
            raise RuntimeError(f"archive member {csv_name!r} is not a regular file")
        return decode_text(fh.read())


def parse_online_retail_csv(text: str, pseudonymizer: Pseudonymizer, source: str = SOURCE_LABEL) -> Dataset:
    """Map the grouped CSV (one customer per line) to the canonical schema.

    Args:
        text: the CSV text; descriptions containing commas are quoted.
        pseudonymizer: replaces the customer's line number (the only user id there is).
        source: lineage label stored on the Dataset.

    Returns:
        One item per distinct normalized description (non-merchandise dropped) and one
        "purchase" per (customer, distinct item), without time, basket or quantity.
    """
    titles: dict[str, str] = {}  # normalized title -> item id, in first-seen order
    users: list[str] = []
    item_ids: list[str] = []
    dropped: dict[str, int] = {}
    # csv (not str.split) because some descriptions are quoted and contain commas
    for line_no, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        seen: set[str] = set()
        for field in fields:
            title = normalize_title(field)
            if not title or title in seen:
                continue  # empty field (trailing comma) or the same item twice on one line
            seen.add(title)
            if title in NON_MERCHANDISE:
                dropped[title] = dropped.get(title, 0) + 1
                continue
            item_id = titles.get(title)
            if item_id is None:
                item_id = titles[title] = item_id_for(title)
            users.append(str(line_no))
            item_ids.append(item_id)
    if dropped:
        logger.info("online-retail: dropped non-merchandise titles (customers per title): %s", dropped)

    items = pd.DataFrame({ITEM_ID: list(titles.values()), TITLE: list(titles.keys())})
    inter = pd.DataFrame({USER_ID: pd.Series(users, dtype="string"), ITEM_ID: item_ids})
    inter[USER_ID] = pseudonymizer.series(inter[USER_ID])
    inter[EVENT] = "purchase"
    return Dataset.canonical(NAME, items, inter, has_time=False, has_text=True, source=source)


def _from_members(data: Sequence[bytes], pseudonymizer: Pseudonymizer, source: str) -> Dataset:
    (archive,) = data
    return parse_online_retail_csv(extract_csv(archive), pseudonymizer, source=source)


DATASET = PackagedDataset(NAME, SOURCE, (MEMBER,), _from_members)
