"""Numeric signals as words in item documents: exact bands on hand-built catalogs."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys.data.documents import FIELDS, DocumentConfig, item_documents, price_bands, rating_bands, sales_bands


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e", "f"],
            "title": ["Mug", "Plate", "Bowl", "Cup", "Jug", None],
            "description": [None, "Blue", None, None, None, None],
            "category": ["Kitchen > Mugs", None, None, None, None, None],
            "price": [1.0, 2.0, 3.0, 4.0, 5.0, None],
            "tags": [None] * 6,
        }
    )


def test_price_tertiles():
    # known prices 1..5: tertile cut points at quantiles 1/3 and 2/3 = 2.333 and 3.667
    assert price_bands(_items()["price"]).tolist() == ["budget", "budget", "mid-range", "premium", "premium", pd.NA]


def test_sales_bands_by_rank():
    items = _items()
    sales = pd.Series({"a": 50, "b": 10, "c": 9, "d": 1, "e": 0})
    cfg = DocumentConfig(bestseller_share=0.25, popular_share=0.5)
    # sold: a, b, c, d (4 items). rank/4: a .25 -> bestseller; b .5, c .75 -> popular; d 1.0 -> niche; e, f new
    assert sales_bands(items["item_id"], sales, cfg).tolist() == ["bestseller", "popular", "popular", "niche", "new", "new"]


def test_rating_bands_on_a_ten_point_scale():
    items = _items()
    mean = pd.Series({"a": 9.0, "b": 6.0, "c": 4.0})  # /10 -> 4.5, 3.0, 2.0 on five
    got = rating_bands(items["item_id"], mean, DocumentConfig(rating_scale=10.0)).tolist()
    assert got == ["highly rated", "well rated", "poorly rated", pd.NA, pd.NA, pd.NA]


def test_documents_in_template_order_and_missing_signals_skipped():
    sales = pd.Series({"a": 50, "b": 10})
    docs = item_documents(_items(), DocumentConfig(template=FIELDS, bestseller_share=0.5, popular_share=0.5), sales=sales)
    assert docs[0] == "Mug. Category: Kitchen > Mugs. Price: budget. Sales: bestseller."
    assert docs[1] == "Plate. Blue. Price: budget. Sales: popular."
    assert docs[4] == "Jug. Price: premium. Sales: new."
    assert docs[5] == "item f. Sales: new."  # no text and no price: the id keeps a vector meaningful
    assert all("nan" not in d.lower() and "<na>" not in d.lower() for d in docs)


def test_template_subset_and_order():
    docs = item_documents(_items(), DocumentConfig(template=("price_band", "title")))
    assert docs[0] == "Price: budget. Mug."


def test_unknown_template_part_is_rejected():
    with pytest.raises(ValueError, match="unknown document fields"):
        DocumentConfig(template=("title", "colour"))


def test_default_template_leaves_the_sales_band_out():
    # measured: "Sales: new" in every new item's text hurts cold start (see recsys.data.documents)
    sales = pd.Series({"a": 50})
    assert "Sales" not in " ".join(item_documents(_items(), sales=sales))
