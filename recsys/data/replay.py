"""Replay a real timestamped data set into the inbox, one time window per batch.

`replay` cuts a data set's interactions into calendar windows (`time_windows`) and drops each as
a batch ``NNNN_<window start date>`` into ``inbox/<dataset>/`` (`write_batch`), to be picked up by
`recsys.data.ingest.ingest_inbox` as if a shop had sent it. ``shuffle=True`` is the no-drift control:
the same window sizes, but interactions drawn at random from the whole data set. `inject` adds a
known drift to a window for experiments.

User ids (the double-hashing question): ingestion pseudonymizes user ids at read, and the
`recsys.data.datasets` loaders pseudonymize them at load. Replay therefore plays the shop and writes
RAW user ids by default: load the source with `load_raw_source` (the same loader, with an identity
id mapping instead of the keyed hash) and ingest with the installation's pseudonymizer. The ids
that end up in the warehouse are then exactly those `load_dataset` gives for the same key (the
loaders and ingestion hash the same raw strings), and nothing is hashed twice. The inbox files
and their raw copies hold the data set's public raw ids (for MovieLens, "1".."943"), as a shop's
files would. ``raw_user_ids=False`` writes already pseudonymized ids as they are; those batches
must be ingested with ``pseudonymize=False``. `replay` checks which kind of ids it was given and
refuses the wrong one.

Sources (`ReplaySource.parse`, `recsys replay --source`): a packaged data set by name
("movielens-100k"), a shop's own files ("files:<items path>,<interactions path>", CSV, CSV.gz or
Parquet in the canonical schema, raw user ids), or a data set already in the warehouse
("warehouse:<data set name>"). The warehouse holds pseudonyms only, so a warehouse replay is the one
case where ids are hashed again: its batches go through the normal, pseudonymizing ingestion and
every person keeps one (new) id across the replay, which cannot be joined with the source data set.
It must therefore go into another data-set name (replaying a data set into itself is refused).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from recsys import atomic
from recsys.data import schema as S
from recsys.data.ingest import INTERACTIONS, ITEMS, PSEUDONYM_PATTERN, READY, SUFFIXES, check_name, inbox_dir
from recsys.paths import ProjectPaths
from recsys.data.privacy import Pseudonymizer

logger = logging.getLogger(__name__)

INJECT_KINDS: tuple[str, ...] = ("category_shift", "new_items", "price_shift")
MIN_CATEGORY_SHARE = 0.01  # category_shift targets the rarest top-level category with at least this share
NEW_TITLE_SUFFIX = " (new edition)"
SYNTHETIC_PRICE_MEDIAN = 20.0
SYNTHETIC_PRICE_SIGMA = 0.8


# --- raw ids -------------------------------------------------------------------------------


class _KeepRawIds(Pseudonymizer):
    """An id mapping that keeps ids as they are: only for writing replay batches (the shop's side).

    Never use it for anything that is stored: ingestion pseudonymizes these ids at read.
    """

    def __init__(self) -> None:  # no key: nothing is hashed
        pass

    def one(self, raw_id: object) -> str:
        return str(raw_id)

    def series(self, raw_ids: pd.Series) -> pd.Series:
        return raw_ids.astype("string")


def load_raw_source(paths: ProjectPaths, dataset_name: str) -> S.Dataset:
    """Load a public demo data set with its RAW user ids, as the input of a replay.

    The same loader as `recsys.data.datasets.load_dataset` (same items, interactions and order), with
    user ids left as the data set has them, so that ingestion hashes them exactly once.
    """
    from recsys.data.datasets import load_dataset

    return load_dataset(dataset_name, paths.cache, _KeepRawIds())


@dataclass(frozen=True)
class ReplaySource:
    """Where a replay's interactions come from.

    kind: "packaged" (a public demo data set, `name`), "files" (`items_path`, `interactions_path`:
    a shop's files with raw user ids) or "warehouse" (the data set `name` as stored, pseudonymized).
    """

    kind: str
    name: str = ""
    items_path: Path | None = None
    interactions_path: Path | None = None

    SYNTAX = "a packaged data set name, warehouse:<data set name> or files:<items path>,<interactions path>"

    @classmethod
    def parse(cls, spec: str) -> ReplaySource:
        """`movielens-100k`, `warehouse:shop-a` or `files:items.csv,interactions.parquet`."""
        from recsys.data.datasets import DATASET_NAMES

        text = str(spec).strip()
        kind, sep, rest = text.partition(":")
        if sep and kind == "warehouse":
            if not rest.strip():
                raise ValueError(f"--source {spec!r}: name the warehouse data set (warehouse:<data set name>)")
            return cls("warehouse", name=rest.strip())
        if sep and kind == "files":
            parts = [x.strip() for x in rest.split(",")]
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"--source {spec!r}: files:<items path>,<interactions path> (two paths, comma-separated)")
            return cls("files", items_path=Path(parts[0]).expanduser(), interactions_path=Path(parts[1]).expanduser())
        if text in DATASET_NAMES:
            return cls("packaged", name=text)
        raise ValueError(f"unknown replay source {spec!r}: {cls.SYNTAX} (packaged: {', '.join(DATASET_NAMES)})")

    @property
    def pseudonymized(self) -> bool:
        """Its user ids are this installation's pseudonyms already (the warehouse's)."""
        return self.kind == "warehouse"

    def __str__(self) -> str:
        if self.kind == "files":
            return f"files:{self.items_path},{self.interactions_path}"
        return f"warehouse:{self.name}" if self.kind == "warehouse" else self.name


def load_replay_source(paths: ProjectPaths, source: str | ReplaySource, warehouse_url: str | None = None) -> S.Dataset:
    """The data set of a replay source, user ids as the source holds them (raw, or the warehouse's
    pseudonyms: see `ReplaySource.pseudonymized`).

    Args:
        paths: the project home (packaged data sets are cached under it).
        source: a `ReplaySource` or its text (`ReplaySource.parse`).
        warehouse_url: the warehouse, for "warehouse:" sources (default: ``paths.warehouse_url``).
    """
    src = source if isinstance(source, ReplaySource) else ReplaySource.parse(source)
    if src.kind == "packaged":
        return load_raw_source(paths, src.name)
    if src.kind == "files":
        from recsys.data.datasets.files import read_user_files, user_files_dataset

        # the shop's side: ids stay raw here, ingestion hashes them once
        items, inter = read_user_files(src.items_path, src.interactions_path, _KeepRawIds())
        data = user_files_dataset(items, inter, src.items_path, src.interactions_path)
        return dc_replace(data, name=str(src))
    from recsys.data import warehouse

    engine = warehouse.make_engine(warehouse_url or paths.warehouse_url)
    try:
        items, inter = warehouse.read_dataset(engine, src.name)
    finally:
        engine.dispose()
    if inter.empty:
        raise ValueError(f"the warehouse holds no interactions for {src.name!r}: nothing to replay")
    return S.Dataset(str(src), items, inter, True, True, str(src))


def replay_source(
    paths: ProjectPaths,
    source: str | ReplaySource,
    dataset_name: str,
    freq: str = "W",
    start: int = 0,
    count: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    warehouse_url: str | None = None,
) -> list[Path]:
    """`replay` of a source given as `recsys replay --source` takes it (see `ReplaySource.parse`)."""
    src = source if isinstance(source, ReplaySource) else ReplaySource.parse(source)
    if src.kind == "warehouse" and src.name == dataset_name:
        # re-hashed ids would land next to the originals: every interaction twice, under new user ids
        raise ValueError(f"cannot replay the warehouse data set {src.name!r} into itself; name another one (--as)")
    data = load_replay_source(paths, src, warehouse_url)
    return replay(paths, dataset_name, data, freq=freq, start=start, count=count, shuffle=shuffle, seed=seed, rehash_pseudonyms=src.pseudonymized)


def _looks_pseudonymized(user_ids: pd.Series) -> pd.Series:
    return user_ids.astype("string").str.fullmatch(PSEUDONYM_PATTERN).fillna(False).astype(bool)


def _check_user_ids(inter: pd.DataFrame, raw_user_ids: bool, rehash_pseudonyms: bool = False) -> None:
    if rehash_pseudonyms and not raw_user_ids:
        raise ValueError("rehash_pseudonyms=True sends the ids through the pseudonymizing ingestion: it needs raw_user_ids=True")
    ids = inter[S.USER_ID].dropna()
    if ids.empty:
        return
    hashed = _looks_pseudonymized(ids)
    if raw_user_ids and hashed.all() and not rehash_pseudonyms:
        raise ValueError(
            "raw_user_ids=True but the source's user ids are already pseudonymized (u_ + 20 hex digits): "
            "ingesting them would hash them twice. Load the source with recsys.data.replay.load_raw_source, or "
            "pass raw_user_ids=False and ingest with pseudonymize=False."
        )
    if not raw_user_ids and not hashed.all():
        raise ValueError(
            f"raw_user_ids=False but {int((~hashed).sum())} of {len(ids)} user ids are not pseudonymized "
            "(u_ + 20 hex digits); pass raw_user_ids=True and let ingestion pseudonymize them."
        )


# --- windows -------------------------------------------------------------------------------


def _timestamps(interactions: pd.DataFrame) -> pd.Series:
    ts = interactions[S.TIMESTAMP]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True)
    return ts.dt.tz_convert("UTC")


def _edges(tmin: pd.Timestamp, tmax: pd.Timestamp, freq: str) -> pd.DatetimeIndex:
    """Window edges: the first at or before tmin on the offset's calendar, the last after tmax."""
    offset = to_offset(freq)
    first = offset.rollback(tmin.normalize())  # e.g. "W" (W-SUN): the Sunday 00:00 at or before tmin
    edges = pd.date_range(first, tmax, freq=offset)
    if len(edges) == 0 or edges[0] != first:
        edges = pd.DatetimeIndex([first]).append(edges)
    while edges[-1] <= tmax:
        edges = edges.append(pd.DatetimeIndex([edges[-1] + offset]))
    return edges


def _window_index(ts: pd.Series, edges: pd.DatetimeIndex) -> np.ndarray:
    return edges.searchsorted(pd.DatetimeIndex(ts), side="right") - 1


def time_windows(interactions: pd.DataFrame, freq: str = "W") -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Half-open ``[start, end)`` calendar windows covering every timestamp, in time order.

    Args:
        interactions: a frame with a ``timestamp`` column (nulls are ignored).
        freq: a pandas offset alias: "W" (weeks Sunday 00:00 to Sunday 00:00 UTC), "D", "MS",
            "6h", ... Windows start on the offset's calendar at or before the first timestamp.

    Returns:
        (start, end) UTC Timestamps of the windows that hold at least one interaction.
    """
    ts = _timestamps(interactions).dropna()
    if ts.empty:
        return []
    edges = _edges(ts.min(), ts.max(), freq)
    counts = np.bincount(_window_index(ts, edges), minlength=len(edges) - 1)
    return [(edges[i], edges[i + 1]) for i in np.flatnonzero(counts)]


def batch_id_for(index: int, start: pd.Timestamp) -> str:
    """``0000_1997-09-21`` (``0000_1997-09-21T0600`` for windows that do not start at midnight)."""
    stamp = start.strftime("%Y-%m-%d") if start == start.normalize() else start.strftime("%Y-%m-%dT%H%M")
    return f"{index:04d}_{stamp}"


# --- writing batches -----------------------------------------------------------------------


def write_batch(
    paths: ProjectPaths, dataset: str, batch_id: str, items: pd.DataFrame | None, interactions: pd.DataFrame
) -> Path:
    """Write one batch into ``inbox/<dataset>/<batch_id>/``: Parquet in the canonical schema, ``_READY`` last.

    Every file is written under a temporary name and renamed into place; a batch folder that is
    rewritten loses its ``_READY`` first, so a reader never sees a half-written batch as ready.
    Data files of the same table in another format (left from an earlier write) are removed.

    Returns:
        The batch folder.
    """
    check_name(batch_id, "batch id")
    batch_dir = inbox_dir(paths, dataset) / batch_id
    batch_dir.mkdir(parents=True, exist_ok=True)
    ready = batch_dir / READY
    ready.unlink(missing_ok=True)
    tables = {ITEMS: None if items is None else S.to_canonical_items(items), INTERACTIONS: S.to_canonical_interactions(interactions)}
    for table, frame in tables.items():
        target = batch_dir / f"{table}.parquet"
        for suffix in SUFFIXES:
            other = batch_dir / f"{table}{suffix}"
            if other != target or frame is None:
                other.unlink(missing_ok=True)
        if frame is not None:
            with atomic.temp_path(target) as tmp:
                frame.to_parquet(tmp, index=False)
    with atomic.temp_path(ready) as tmp:
        tmp.touch()
    return batch_dir


# --- replay --------------------------------------------------------------------------------


def _items_for(items: pd.DataFrame, interactions: pd.DataFrame) -> pd.DataFrame:
    return items[items[S.ITEM_ID].isin(set(interactions[S.ITEM_ID].dropna()))].reset_index(drop=True)


def replay_windows(
    source: S.Dataset, freq: str = "W", shuffle: bool = False, seed: int = 0
) -> list[tuple[tuple[pd.Timestamp, pd.Timestamp], pd.DataFrame]]:
    """The windows of a replay and each window's interactions (all windows, before start/count).

    Real replay: each window holds its own interactions, sorted by time (stable). Shuffled replay
    (the no-drift control): window ``i`` holds as many interactions as the real window ``i``, drawn
    at random without replacement from the whole data set (seeded); their timestamps are the real
    window's timestamps in random order, so every one falls inside its window and the within-window
    time profile is the real one, but what happens in a window no longer depends on when. Data with
    basket ids is drawn basket by basket (whole baskets in random order, cut into windows of the real
    sizes: at most one basket per window edge is split), so the control keeps the baskets the basket-size
    signal counts; drawing lines one by one scattered every basket over the year, and the basket-size
    signal alarmed on all 135 shuffled weeks of completejourney.
    """
    inter = source.interactions
    ts = _timestamps(inter)
    if ts.isna().any():
        raise ValueError(f"{source.name}: {int(ts.isna().sum())} interactions have no timestamp; a replay needs times")
    inter = inter.assign(**{S.TIMESTAMP: ts}).sort_values(S.TIMESTAMP, kind="stable").reset_index(drop=True)
    windows = time_windows(inter, freq)
    if not windows:
        return []
    edges = pd.DatetimeIndex([w[0] for w in windows] + [windows[-1][1]])
    # the frame is sorted: each window is a contiguous slice
    bounds = edges.searchsorted(pd.DatetimeIndex(inter[S.TIMESTAMP]), side="right") - 1
    offsets = np.searchsorted(bounds, np.arange(len(windows) + 1), side="left")
    if not shuffle:
        return [(w, inter.iloc[offsets[i] : offsets[i + 1]].reset_index(drop=True)) for i, w in enumerate(windows)]
    rng = np.random.default_rng(seed)
    if S.BASKET_ID in inter and inter[S.BASKET_ID].notna().any():
        codes, uniques = pd.factorize(inter[S.BASKET_ID])  # a line without a basket id is a basket of its own: -1 here
        alone = codes < 0
        codes[alone] = len(uniques) + np.arange(int(alone.sum()))
        drawn = np.argsort(rng.permutation(int(codes.max()) + 1)[codes], kind="stable")  # baskets in random order, lines kept together
    else:
        drawn = rng.permutation(len(inter))
    real_ts = pd.DatetimeIndex(inter[S.TIMESTAMP])
    out = []
    for i, w in enumerate(windows):
        lo, hi = offsets[i], offsets[i + 1]
        chunk = inter.iloc[drawn[lo:hi]].copy()
        chunk[S.TIMESTAMP] = real_ts[lo:hi][rng.permutation(hi - lo)]  # positional: the real window's times, shuffled
        out.append((w, chunk.sort_values(S.TIMESTAMP, kind="stable").reset_index(drop=True)))
    return out


def replay(
    paths: ProjectPaths,
    dataset_name: str,
    source: S.Dataset,
    freq: str = "W",
    start: int = 0,
    count: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    raw_user_ids: bool = True,
    rehash_pseudonyms: bool = False,
) -> list[Path]:
    """Write windows ``start .. start+count-1`` of ``source`` as inbox batches of ``dataset_name``.

    Each batch ``NNNN_<window start date>`` (NNNN: the window's number in the whole replay, so a
    replay can be dripped in several calls) holds the window's interactions and the items they
    reference (so an item first appears with its first interactions, and every batch can be
    validated on its own).

    Args:
        paths: the project home (batches go to ``inbox/<dataset_name>/``).
        dataset_name: the inbox folder and warehouse data-set name.
        source: the data set to replay (timestamps required); see `load_raw_source`.
        freq: window length, a pandas offset alias ("W", "D", "MS", ...).
        start, count: which windows to write (count None: all from start).
        shuffle: the no-drift control (see `replay_windows`); seeded by ``seed``, and the same
            whatever start/count, so a shuffled replay can be dripped too.
        raw_user_ids: the source holds raw user ids (ingest with pseudonymization, the default)
            or already pseudonymized ones (ingest with ``pseudonymize=False``). Checked.
        rehash_pseudonyms: the source holds pseudonyms (a warehouse data set) that the normal
            ingestion is to hash once more, on purpose (see the module docstring); without it such
            ids are refused, as a mistake that would hash them twice.

    Returns:
        The batch folders written, in order.
    """
    if start < 0 or (count is not None and count < 0):
        raise ValueError(f"start and count must be >= 0, got start={start}, count={count}")
    check_name(dataset_name, "data set name")
    _check_user_ids(source.interactions, raw_user_ids, rehash_pseudonyms)
    windows = replay_windows(source, freq=freq, shuffle=shuffle, seed=seed)
    stop = len(windows) if count is None else min(len(windows), start + count)
    if start >= len(windows):
        logger.warning("replay of %s: start=%d but there are only %d windows; nothing written", source.name, start, len(windows))
    written = []
    for i in range(start, stop):
        (w_start, _), inter = windows[i]
        batch = write_batch(paths, dataset_name, batch_id_for(i, w_start), _items_for(source.items, inter), inter)
        written.append(batch)
    logger.info(
        "replayed %s as %s: %d of %d %s-windows (%s) into %s",
        source.name, dataset_name, len(written), len(windows), freq, "shuffled" if shuffle else "real",
        inbox_dir(paths, dataset_name),
    )  # fmt: skip
    return written


# --- injected drift ------------------------------------------------------------------------


def _top_category(items: pd.DataFrame) -> pd.Series:
    """item_id -> top-level category (the first level of the category path)."""
    items = items.drop_duplicates(S.ITEM_ID)
    top = items[S.CATEGORY].astype("string").str.split(S.CATEGORY_SEP, regex=False).str[0].str.strip()
    return pd.Series(top.to_numpy(), index=items[S.ITEM_ID].astype("string").to_numpy())


def shift_target_category(interactions: pd.DataFrame, items: pd.DataFrame) -> str:
    """The category ``category_shift`` pushes: the rarest top-level category with >= 1% of the
    interactions, other than the most common one (ties: alphabetical)."""
    cats = interactions[S.ITEM_ID].astype("string").map(_top_category(items))
    shares = cats.value_counts() / max(len(interactions), 1)
    if shares.empty:
        raise ValueError("category_shift: no interaction has an item with a category")
    most = shares.sort_values(ascending=False, kind="stable").index[0]
    candidates = shares[(shares >= MIN_CATEGORY_SHARE) & (shares.index != most)]
    if candidates.empty:
        raise ValueError(f"category_shift: no category other than {most!r} has at least {MIN_CATEGORY_SHARE:.0%} of interactions")
    frame = pd.DataFrame({"cat": candidates.index.astype(str), "share": candidates.to_numpy()})
    return str(frame.sort_values(["share", "cat"], kind="stable").iloc[0]["cat"])


def _draw(rng: np.random.Generator, rows: np.ndarray, k: int) -> np.ndarray:
    """k of rows, without replacement when there are enough, else with."""
    if k == 0:
        return rows[:0]
    if len(rows) == 0:
        raise ValueError(f"cannot draw {k} rows from none")
    return rng.choice(rows, size=k, replace=k > len(rows))


def _category_shift(interactions: pd.DataFrame, items: pd.DataFrame, strength: float, seed: int) -> pd.DataFrame:
    target = shift_target_category(interactions, items)
    cats = interactions[S.ITEM_ID].astype("string").map(_top_category(items))
    is_target = (cats == target).fillna(False).to_numpy(dtype=bool)
    n = len(interactions)
    k = int(round(strength * n))
    rng = np.random.default_rng(seed)
    picked = np.concatenate([_draw(rng, np.flatnonzero(is_target), k), _draw(rng, np.flatnonzero(~is_target), n - k)])
    out = interactions.iloc[np.sort(picked)].reset_index(drop=True)  # original (time) order
    logger.info("category_shift: %r now has %d of %d interactions (%.1f%%, was %.1f%%)", target, k, n, 100 * k / max(n, 1), 100 * is_target.mean())
    return out


def _new_items(interactions: pd.DataFrame, items: pd.DataFrame, strength: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(interactions)
    k = int(round(strength * n))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=k, replace=False))
    originals = pd.unique(interactions[S.ITEM_ID].iloc[rows].astype("string"))
    taken = set(items[S.ITEM_ID].astype(str))
    new_ids = {}
    for orig in originals:
        new_id, j = f"{orig}-new{seed}", 1
        while new_id in taken:  # brand-new: never an id the catalog already has
            new_id, j = f"{orig}-new{seed}.{j}", j + 1
        taken.add(new_id)
        new_ids[orig] = new_id
    by_id = items.assign(**{S.ITEM_ID: items[S.ITEM_ID].astype("string")}).drop_duplicates(S.ITEM_ID).set_index(S.ITEM_ID)
    clones = by_id.reindex(list(new_ids)).reset_index()
    title = clones[S.TITLE].astype("string").fillna(clones[S.ITEM_ID].astype("string"))
    clones[S.TITLE] = title + NEW_TITLE_SUFFIX
    clones[S.ITEM_ID] = clones[S.ITEM_ID].map(new_ids)
    out = interactions.copy()
    col = out.columns.get_loc(S.ITEM_ID)
    out.iloc[rows, col] = out[S.ITEM_ID].iloc[rows].astype("string").map(new_ids).to_numpy()
    logger.info("new_items: %d of %d interactions moved to %d brand-new items", k, n, len(new_ids))
    return pd.concat([items, clones[items.columns]], ignore_index=True), out


def inject(
    interactions: pd.DataFrame, items: pd.DataFrame, kind: str, strength: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inject a known drift into one window's data, for drift-detection experiments.

    Kinds:
        ``category_shift``: resample the interactions (same count) so that the target category
            (`shift_target_category`: the rarest top-level category with >= 1% share, i.e. the
            opposite of the most common one) holds exactly ``round(strength * n)`` of them; rows
            are drawn without replacement where the pool is large enough, else with. Items unchanged.
        ``new_items``: ``round(strength * n)`` interactions (random, seeded) move to brand-new
            items, one per original item involved: a copy of it under a new id (``<id>-new<seed>``)
            whose title is the original's real title plus " (new edition)". The new items are
            appended to the items returned.
        ``price_shift``: every price multiplied by ``1 + strength`` (nulls stay null); interactions
            unchanged. Data without prices (MovieLens) need `attach_synthetic_prices` first.

    Returns:
        (items, interactions), new frames; the inputs are not modified.
    """
    if kind not in INJECT_KINDS:
        raise ValueError(f"unknown drift kind {kind!r}; known kinds: {', '.join(INJECT_KINDS)}")
    if kind == "price_shift":
        if strength <= -1:
            raise ValueError(f"price_shift needs strength > -1 (prices stay positive), got {strength}")
        if S.PRICE not in items.columns or items[S.PRICE].isna().all():
            raise ValueError("price_shift: the items have no prices; call recsys.data.replay.attach_synthetic_prices first")
        out = items.copy()
        out[S.PRICE] = out[S.PRICE] * (1.0 + strength)
        return out, interactions.copy()
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"{kind} needs 0 <= strength <= 1 (a share of interactions), got {strength}")
    if kind == "category_shift":
        return items.copy(), _category_shift(interactions, items, strength, seed)
    return _new_items(interactions, items, strength, seed)


def attach_synthetic_prices(items: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Give every item a SYNTHETIC price, for the price-shift experiment only (MovieLens has none).

    Lognormal (median 20.00, sigma 0.8), rounded to cents, at least 0.01. Each price depends only on
    (seed, item_id) through a hash, so an item has the same price in every batch and every run,
    whatever other items the frame holds. Existing prices are replaced.
    """
    ids = items[S.ITEM_ID].astype(str)
    digests = [hashlib.sha256(f"{seed}\x1f{i}".encode()).digest() for i in ids]
    # two uniform numbers in (0, 1) per item from 53-bit slices of its digest (exact in float64)
    words = np.array([[int.from_bytes(d[0:8], "big") >> 11, int.from_bytes(d[8:16], "big") >> 11] for d in digests], dtype=np.float64)
    u = (words.reshape(-1, 2) + 0.5) / 2.0**53
    z = np.sqrt(-2.0 * np.log(u[:, 0])) * np.cos(2.0 * np.pi * u[:, 1])  # Box-Muller: standard normal
    price = np.maximum(np.round(SYNTHETIC_PRICE_MEDIAN * np.exp(SYNTHETIC_PRICE_SIGMA * z), 2), 0.01)
    out = items.copy()
    out[S.PRICE] = pd.array(price, dtype="Float64")
    return out


__all__ = [
    "time_windows",
    "write_batch",
    "replay",
    "replay_windows",
    "load_raw_source",
    "load_replay_source",
    "replay_source",
    "ReplaySource",
    "batch_id_for",
    "inject",
    "shift_target_category",
    "attach_synthetic_prices",
    "INJECT_KINDS",
]
