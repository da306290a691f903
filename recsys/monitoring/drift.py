"""Drift monitoring: does recent data still look like the data behind the champion model?

At training time `ReferenceStats.build` condenses the training interactions into what the monitor
needs (mixes, capped samples, a sample of item vectors, the champion's catalog and evaluation
score) and `save` stores it next to the model version, so the monitor never re-reads training
data. Later `window_from_frames` computes the same statistics for a recent window and
`detect_drift` compares the two, one `Signal` per aspect:

    category_mix     category of the interacted items, at the      PSI (JS distance reported too)
                     deepest level of its path with enough support
    event_mix        event types (view / cart / purchase ...)    PSI (JS distance reported too)
    price            price of the interacted items               two-sample KS (+ Wasserstein)
    basket_size      items per basket (per user-day w/o baskets) two-sample KS (+ Wasserstein)
    user_activity    interactions per user                       two-sample KS (+ Wasserstein)
    item_popularity  interactions per interacted item            two-sample KS (+ Wasserstein)
    text_embedding   item vectors, reference vs window items     domain-classifier ROC AUC
    unseen_items     window interactions on items the champion never saw          share
    champion_recall  the champion's Recall@10 on the window vs at evaluation      relative drop, with a
                     bootstrap interval over users; alarms on the interval's bound, not the point

The statistics come from scipy (ks_2samp, wasserstein_distance, jensenshannon) and scikit-learn
(LogisticRegression, cross_val_score); only PSI, which neither library has, is written out here.
Pure: numpy / pandas / scipy / scikit-learn, no MLflow, no Airflow, no I/O but `save` / `load`.
scipy and scikit-learn are imported inside the functions so that importing this module stays
cheap for the DAG parser.

Window length. user_activity and item_popularity are counts per window, so they grow with the
window's length: a reference built over six months compared with a one-week window always
"drifts". Build the reference with `period=` the monitoring window's length (its counts are then
taken per period-long slice of the training data), or compare windows of equal length. Signals
whose counts scale with time say so in their detail when the spans differ by more than 2x.

Evidence. Two signals rest on few units when data sets are small, and decide only with enough:
champion_recall needs `min_recall_users` evaluable users on each side and alarms only when the
conservative end of a percentile bootstrap interval of the relative drop (users resampled, seeded)
is past the threshold (a 2x swing of a 9-user reference recall between seeds of a quiet replay is
noise, not drift); category_mix splits a category into its sub-categories ("Movies > Drama") only
where each holds `min_category_support` reference interactions and as many expected in the window
(PSI over sparse bins grows with the number of bins alone: about bins / window interactions).

Speed. Everything is vectorised (factorize + bincount, one groupby per mix); the KS and
Wasserstein tests run on at most `DriftConfig.max_test_sample` (100k) values per side (seeded
sub-samples: at that size KS resolves differences far below `ks_threshold`, and it keeps a 1M-row
window to seconds).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import atomic
from recsys.data.schema import BASKET_ID, CATEGORY, CATEGORY_SEP, EVENT, ITEM_ID, PRICE, TIMESTAMP, USER_ID

PSI_EPS = 1e-4  # share given to a bin that is empty on one side (PSI's log would be infinite)
# counts that grow with the window's length (see the module docstring)
_TIME_SCALED: frozenset[str] = frozenset({"user_activity", "item_popularity"})
_MIN_NUMERIC_VALUES = 5  # fewer values than this on either side: the distribution is not measured
_MAX_MIX_BINS_REPORTED = 30  # shares kept in a mix signal's `extra` (largest first)
_OTHER = "(other)"  # the bin of a split category's interactions in none of its supported sub-categories
_MAX_MULTINOMIAL_VALUES = 256  # above this many distinct values, drawing users is faster than counts per value
MAX_RECALL_USERS = 20_000  # per-user evaluation recalls kept in a reference (a seeded sample above it)
_FORMAT_VERSION = 1
LEGACY_RECALL_K = 10  # the k of references saved before they kept theirs (the monitor's k then)


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds of the drift monitor, and why they sit where they do.

    Attributes:
        psi_threshold: PSI above which a categorical mix (top-level category of the interacted
            items, event types) has shifted. 0.2 is the conventional "significant shift" line of
            credit-risk monitoring (< 0.1 stable, 0.1-0.2 moderate, > 0.2 significant).
        ks_threshold: two-sample KS statistic (largest gap between the two ECDFs) above which a
            numeric distribution has shifted. With hundreds of thousands of values every
            difference is "significant", so the p-value alone would always alarm; 0.1 (a 10-point
            gap in some quantile) is an effect size worth a look.
        ks_pvalue: the KS p-value must also be below this, so that small windows whose gap is
            sampling noise do not alarm.
        auc_threshold: cross-validated ROC AUC of a classifier telling window item vectors from
            reference item vectors. 0.5 = indistinguishable; 0.65 leaves room for CV noise on a
            few hundred items while catching a real move of the catalog in embedding space.
        min_items_for_auc: fewer distinct window (or reference) items with vectors than this:
            "not enough data" (five CV folds need a few items of each class per fold).
        unseen_share_threshold: share of window interactions on items the champion never saw
            (not in the catalog it was trained with). It cannot rank what it has not embedded
            (or can only cold-start them), so above 20% of traffic a retrain is due.
        recall_drop_threshold: relative drop of the champion's Recall@10 on the window versus its
            evaluation score ((eval - window) / eval). 0.3: offline-online gaps of 10-20% are
            usual (different period, different users); a 30% loss is the model going stale. It
            alarms only when the lower end of the bootstrap interval of the drop is above it.
        min_recall_users: evaluable users (a query and at least one new target) needed on EACH side,
            the evaluation's and the window's, before the recall drop may alarm; fewer: "not enough
            evidence", no alarm. 30: below that a mean of 0/1-like per-user recalls moves by tens of
            percent between resamples (a quiet replay's 9-user reference recall varied 2x by seed).
        recall_bootstrap_samples: resamples of the percentile bootstrap of the relative drop (users
            of each side drawn with replacement, independently: different people, unpaired).
        recall_confidence: two-sided level of that interval; the alarm uses its lower end, so 0.9
            is a one-sided 95% bound on the drop.
        min_category_support: a category is compared split into its sub-categories (the next level of
            its "A > B > C" path) only where a sub-category holds at least this many reference
            interactions AND at least this many expected in the window (reference share x window
            interactions); the rest of the parent stays one bin ("A > (other)"). Top-level categories
            are always compared. 50: PSI over sparse bins is biased up by about (bins - 1) / expected
            count, so each bin needs tens of expected interactions for a 0.2 threshold to mean a shift.
        category_level: compare categories cut at exactly this level of their path (1 = top level),
            when the data set says which level is meaningful; None: the deepest supported level,
            per branch (see min_category_support).
        min_window_interactions: below this many window interactions no signal may alarm (every
            statistic is noise on a handful of rows); the report says "window too small".
        min_alarms: how many signals must alarm for the window to count as drift.
        user_day_baskets: without basket ids, compare interactions per user-day as basket sizes.
            Off: on movielens-100k's shuffled replay (no drift by construction) that proxy alarmed in
            21 of 72 windows, because it grows with traffic; real basket ids are always compared.
        max_test_sample: KS / Wasserstein use at most this many values per side (seeded
            sub-sample); at 100k the KS critical value is ~0.007, far below ks_threshold.
        cv_folds: stratified folds of the domain classifier's cross-validation.
        seed: seeds every sub-sample and the CV split, so a report is reproducible.
    """

    psi_threshold: float = 0.2
    ks_threshold: float = 0.1
    ks_pvalue: float = 0.01
    auc_threshold: float = 0.65
    min_items_for_auc: int = 20
    unseen_share_threshold: float = 0.2
    recall_drop_threshold: float = 0.3
    min_recall_users: int = 30
    recall_bootstrap_samples: int = 2000
    recall_confidence: float = 0.9
    min_category_support: int = 50
    category_level: int | None = None
    min_window_interactions: int = 200
    min_alarms: int = 1
    user_day_baskets: bool = False
    max_test_sample: int = 100_000
    cv_folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("psi_threshold", "ks_threshold", "unseen_share_threshold", "recall_drop_threshold"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0):
                problems.append(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not 0 < self.ks_pvalue <= 1:
            problems.append(f"ks_pvalue must be in (0, 1], got {self.ks_pvalue!r}")
        if not 0.5 <= self.auc_threshold <= 1:
            problems.append(f"auc_threshold must be in [0.5, 1], got {self.auc_threshold!r}")
        if self.cv_folds < 2:
            problems.append(f"cv_folds must be >= 2, got {self.cv_folds!r}")
        if self.min_items_for_auc < self.cv_folds:
            problems.append(f"min_items_for_auc ({self.min_items_for_auc}) must be >= cv_folds ({self.cv_folds})")
        for name in ("min_window_interactions", "min_alarms", "max_test_sample", "recall_bootstrap_samples", "min_category_support"):
            if getattr(self, name) < (1 if name not in ("min_window_interactions", "min_category_support") else 0):
                problems.append(f"{name} is too small: {getattr(self, name)!r}")
        if self.min_recall_users < 2:
            problems.append(f"min_recall_users must be >= 2 (a bootstrap of one user has no spread), got {self.min_recall_users!r}")
        if not 0 < self.recall_confidence < 1:
            problems.append(f"recall_confidence must be in (0, 1), got {self.recall_confidence!r}")
        if self.category_level is not None and (isinstance(self.category_level, bool) or not isinstance(self.category_level, int) or self.category_level < 1):
            problems.append(f"category_level must be None or an int >= 1, got {self.category_level!r}")
        if problems:
            raise ValueError("invalid DriftConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftConfig:
        """A config from a dict (unknown keys are an error: a typo must not silently use a default)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DriftConfig keys: {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


# ---------------------------------------------------------------------------------------------
# statistics (PSI by hand: neither scipy nor scikit-learn has it)


def _aligned_shares(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    keys = sorted(set(reference) | set(current))
    p = np.array([float(reference.get(k, 0.0)) for k in keys], dtype=np.float64)
    q = np.array([float(current.get(k, 0.0)) for k in keys], dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("both mixes need a positive total")
    return keys, p / p.sum(), q / q.sum()


def psi(reference: Mapping[str, float], current: Mapping[str, float], eps: float = PSI_EPS) -> float:
    """Population stability index of two mixes (counts or shares per bin; each normalised to sum 1).

    PSI = Σ_bins (q - p) · ln(q / p) over the union of the bins, with p (reference) and q
    (current) clipped below at `eps` so that a bin empty on one side costs a large but finite
    amount. Symmetric, >= 0, 0 for identical mixes.
    """
    _, p, q = _aligned_shares(reference, current)
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (scipy, base 2: in [0, 1]) of two mixes over the union of their bins."""
    from scipy.spatial.distance import jensenshannon

    _, p, q = _aligned_shares(reference, current)
    return float(jensenshannon(p, q, base=2))


def category_path(path: object) -> str | None:
    """A category path with each level stripped, cut at its first empty level; None when missing or
    empty. Its first level is `recsys.model.bundles.top_category`'s answer."""
    if path is None or path is pd.NA or (isinstance(path, float) and math.isnan(path)):
        return None
    levels: list[str] = []
    for level in str(path).split(CATEGORY_SEP):
        level = level.strip()
        if not level:  # "A >  > C": what follows a broken level cannot be placed
            break
        levels.append(level)
    return CATEGORY_SEP.join(levels) or None


def cut_mix(paths: Mapping[str, int], level: int) -> dict[str, int]:
    """Counts per category path summed up to its first `level` levels (1 = top-level categories)."""
    out: dict[str, int] = {}
    for path, n in paths.items():
        key = CATEGORY_SEP.join(path.split(CATEGORY_SEP)[:level])
        out[key] = out.get(key, 0) + int(n)
    return out


def category_bins(
    reference_paths: Mapping[str, int],
    window_paths: Mapping[str, int],
    n_window: int,
    min_support: int,
    level: int | None = None,
) -> tuple[dict[str, int], dict[str, int], dict[str, Any]]:
    """(reference mix, window mix, how they were cut): both sides binned the same way.

    level None (adaptive): each path goes down its levels while the next one holds at least
    `min_support` reference interactions and at least `min_support` expected in a window of
    `n_window` interactions (its reference share x n_window); a category split this way keeps the
    rest of its interactions in "<category> > (other)". Top-level categories are always bins. A
    window path under no reference category is binned at its top level (a new category).
    level N: every path cut at its first N levels, whatever the support (the data set's choice).
    """
    if level is not None:
        ref, win = cut_mix(reference_paths, level), cut_mix(window_paths, level)
        depth = max((k.count(CATEGORY_SEP) + 1 for k in (*ref, *win)), default=0)
        return ref, win, {"mode": "fixed", "level": depth, "requested_level": level, "split": []}

    # reference interactions under every prefix of every path
    under: dict[str, int] = {}
    for path, n in reference_paths.items():
        parts = path.split(CATEGORY_SEP)
        for d in range(1, len(parts) + 1):
            key = CATEGORY_SEP.join(parts[:d])
            under[key] = under.get(key, 0) + int(n)
    total = sum(int(n) for n in reference_paths.values())
    need = max(int(min_support), 0)
    supported = {
        key for key, n in under.items()
        if CATEGORY_SEP in key and n >= need and (total > 0 and n / total * n_window >= need)
    }  # fmt: skip
    split = {key.rsplit(CATEGORY_SEP, 1)[0] for key in supported}  # categories compared by sub-category

    def bin_of(path: str) -> str:
        parts = path.split(CATEGORY_SEP)
        b = parts[0]
        for d in range(2, len(parts) + 1):
            key = CATEGORY_SEP.join(parts[:d])
            if key not in supported:
                break
            b = key
        return f"{b}{CATEGORY_SEP}{_OTHER}" if b in split else b

    def binned(paths: Mapping[str, int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for path, n in paths.items():
            b = bin_of(path)
            out[b] = out.get(b, 0) + int(n)
        return out

    ref, win = binned(reference_paths), binned(window_paths)
    depth = max((k.removesuffix(f"{CATEGORY_SEP}{_OTHER}").count(CATEGORY_SEP) + 1 for k in (*ref, *win)), default=0)
    return ref, win, {"mode": "adaptive", "level": depth, "min_support": need, "split": sorted(split)[:_MAX_MIX_BINS_REPORTED]}


def normalised_wasserstein(reference: np.ndarray, current: np.ndarray) -> tuple[float, float | None, str]:
    """(Wasserstein-1 distance, that distance / the reference's spread or None, the spread's name).

    The spread is the reference's interquartile range, or its standard deviation when the IQR is 0
    (e.g. mostly-ones counts); None when both are 0 (a constant reference).
    """
    from scipy.stats import wasserstein_distance

    ref = np.asarray(reference, dtype=np.float64)
    w = float(wasserstein_distance(ref, np.asarray(current, dtype=np.float64)))
    q25, q75 = np.percentile(ref, [25, 75])
    if q75 - q25 > 0:
        return w, w / float(q75 - q25), "IQR"
    std = float(np.std(ref))
    if std > 0:
        return w, w / std, "std"
    return w, None, "none"


# ---------------------------------------------------------------------------------------------
# profiles of a frame of interactions (shared by the reference and the window)


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """The random generator of one sampled quantity (`stream`) under `seed`."""
    # one independent stream per quantity: sampling one never shifts another's sample
    return np.random.default_rng([int(seed), stream])


def _cap(values: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    if n is None or len(values) <= n:
        return values
    return values[np.sort(rng.choice(len(values), size=n, replace=False))]


def _iso(ts: Any) -> str | None:
    return None if ts is None or pd.isna(ts) else pd.Timestamp(ts).isoformat()


def _col(df: pd.DataFrame | None, name: str) -> pd.Series | None:
    if df is None or name not in df.columns:
        return None
    s = df[name]
    return s if s.notna().any() else None


def _float_array(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _counts_per_key(*codes: np.ndarray) -> np.ndarray:
    """How many rows share each combination of the integer code arrays (order of first appearance)."""
    key = np.asarray(codes[0], dtype=np.int64)
    for c in codes[1:]:  # codes are >= 0 and small: a mixed-radix integer key, no tuples
        c = np.asarray(c, dtype=np.int64)
        key = key * (int(c.max()) + 1 if len(c) else 1) + c
    k, _ = pd.factorize(key)
    return np.bincount(k[k >= 0]) if len(k) else np.zeros(0, dtype=np.int64)


def _profile(
    interactions: pd.DataFrame,
    items: pd.DataFrame | None,
    *,
    max_sample: int | None,
    seed: int,
    period: pd.Timedelta | None = None,
) -> dict[str, Any]:
    """The statistics of one frame of interactions; see ReferenceStats / Window for the fields."""
    missing = [c for c in (USER_ID, ITEM_ID) if c not in interactions.columns]
    if missing:
        raise ValueError(f"interactions lack the column(s) {missing}")
    df = interactions
    if df[USER_ID].isna().any() or df[ITEM_ID].isna().any():
        df = df.dropna(subset=[USER_ID, ITEM_ID])
    icodes, iuniq = pd.factorize(df[ITEM_ID])
    item_counts = np.bincount(icodes, minlength=len(iuniq)).astype(np.int64)
    ucodes, uuniq = pd.factorize(df[USER_ID])

    # time: range, day keys (user-day baskets), slices of `period` (reference only)
    ts = _col(df, TIMESTAMP)
    time_min = time_max = None
    if ts is not None:
        time_min, time_max = ts.min(), ts.max()

    # event mix
    ev = _col(df, EVENT)
    event_mix = {str(k): int(v) for k, v in ev.value_counts().items()} if ev is not None else {}

    # category mix and price: looked up once per distinct item, then weighted by its count
    category_mix: dict[str, int] = {}
    category_paths: dict[str, int] = {}
    price = np.zeros(0, dtype=np.float32)
    if items is not None and ITEM_ID in items.columns and len(iuniq):
        it = items.drop_duplicates(ITEM_ID).set_index(ITEM_ID)
        if CATEGORY in it.columns:
            cat = it[CATEGORY].reindex(iuniq)
            # normalised on the distinct paths only: a few hundred calls, not one per row
            norm = {c: category_path(c) for c in cat.dropna().unique()}
            full = cat.map(norm).to_numpy(dtype=object, na_value=None)
            ok = np.array([t is not None for t in full], dtype=bool)
            if ok.any():
                sums = pd.Series(item_counts[ok]).groupby(full[ok].astype(str)).sum()
                category_paths = {str(k): int(v) for k, v in sums.items() if v > 0}
                category_mix = cut_mix(category_paths, 1)
        if PRICE in it.columns:
            p_item = _float_array(it[PRICE].reindex(iuniq))
            ok = np.isfinite(p_item)
            price = np.repeat(p_item[ok], item_counts[ok]).astype(np.float32)

    # basket size: items per basket, else interactions per user-day
    basket_unit: str | None = None
    basket_size = np.zeros(0, dtype=np.int64)
    baskets = _col(df, BASKET_ID)
    if baskets is not None:
        bcodes, _ = pd.factorize(baskets)
        basket_size = np.bincount(bcodes[bcodes >= 0])
        basket_unit = "basket"
    elif ts is not None:
        dcodes, _ = pd.factorize(ts.dt.floor("D"))
        ok = dcodes >= 0
        basket_size = _counts_per_key(ucodes[ok], dcodes[ok])
        basket_unit = "user-day"

    # user activity and item popularity: per period-long slice when asked (see module docstring)
    user_activity = np.bincount(ucodes, minlength=len(uuniq))
    item_popularity = item_counts
    sl_codes = None
    if period is not None and ts is not None:
        t0 = ts.min()
        span = ts.max() - t0
        n_slices = max(1, math.floor(span / period + 0.01))  # 1% tolerance: 28 days of data = 4 weeks
        sl = ((ts - t0) // period).to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(sl) & (sl < n_slices)  # a trailing partial period would bias counts low
        sli = sl[ok].astype(np.int64)
        user_activity = _counts_per_key(sli, ucodes[ok])
        item_popularity = _counts_per_key(sli, icodes[ok])
        sl_codes = np.where(ok, np.nan_to_num(sl, nan=-1), -1).astype(np.int64)

    return {
        "n_interactions": len(df),
        "n_users": len(uuniq),
        "n_items": len(iuniq),
        "time_min": _iso(time_min),
        "time_max": _iso(time_max),
        "category_mix": category_mix,
        "category_paths": category_paths,
        "event_mix": event_mix,
        "price": _cap(price, max_sample, stream_rng(seed, 1)),
        "basket_size": _cap(basket_size.astype(np.float32), max_sample, stream_rng(seed, 2)),
        "basket_unit": basket_unit,
        "user_activity": _cap(user_activity.astype(np.float32), max_sample, stream_rng(seed, 3)),
        "item_popularity": _cap(item_popularity.astype(np.float32), max_sample, stream_rng(seed, 4)),
        "_item_ids": iuniq,
        "_item_counts": item_counts,
        "_user_slices": _slice_counts(ucodes, sl_codes),
        # items do not turn over like users: the whole reference, brought to the window's volume
        "_item_slices": _slice_counts(icodes, None),
    }


def _slice_counts(codes: np.ndarray, slices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slice id, key, count) of every (slice, key) that occurs; one slice (0) when `slices` is None."""
    if slices is None:
        counts = np.bincount(codes) if len(codes) else np.zeros(0, dtype=np.int64)
        keys = np.flatnonzero(counts)
        return np.zeros(len(keys), dtype=np.int32), keys.astype(np.int32), counts[keys].astype(np.int64)
    ok = slices >= 0
    pairs = pd.DataFrame({"s": slices[ok], "k": codes[ok]}).value_counts(sort=False)
    return (
        pairs.index.get_level_values("s").to_numpy(dtype=np.int32),
        pairs.index.get_level_values("k").to_numpy(dtype=np.int32),
        pairs.to_numpy(dtype=np.int64),
    )


def _store_vectors(v: np.ndarray) -> np.ndarray:
    """float16 halves the stored size; kept float32 if a value would not fit float16."""
    v16 = v.astype(np.float16)
    return v16 if np.isfinite(v16).all() else v.astype(np.float32)


def _pack_strings(values: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one utf-8 byte array + offsets: exact for any text, no pickle needed to load."""
    encoded = [str(s).encode("utf-8") for s in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _unpack_strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = blob.tobytes()
    return [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def _arrays_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


MAX_TOTALS = 1_000_000  # users kept for thinning (a seeded sample above it)


# ---------------------------------------------------------------------------------------------
# the reference (stored with a model version) and the window: one profile, two uses

_NPZ = {"store": "npz"}  # field metadata: a profile array saved in reference.npz (the rest goes to reference.json)


@dataclass(eq=False, kw_only=True)
class Profile:
    """The statistics the signals compare, computed alike for the reference and for a window (`_profile`).

    A new signal that needs a new statistic adds its field here and computes it in `_profile`; saving
    and loading the reference follow the fields (arrays marked `_NPZ` go to the npz, the rest to JSON).

    Attributes:
        category_mix: interactions per top-level category of the interacted item.
        category_paths: interactions per full category path ("Movies > Drama"), so that the monitor
            can compare below the top level; empty in references saved before it was kept.
        event_mix: interactions per event type.
        price, basket_size, user_activity, item_popularity: seeded samples (at most `max_sample`
            values, float32) of the price of each interaction's item, the items per basket (or per
            user-day, see `basket_unit`), the interactions per user and per interacted item (for a
            reference: per `period_seconds`-long slice when that is set).
        basket_unit: "basket", "user-day" or None (no basket ids and no timestamps).
        vector_item_ids, vectors: a seeded sample of at most 2,000 distinct interacted items and
            their vectors (float16); vectors None when there was no embedding.
        n_interactions, n_users, n_items, time_min, time_max: size and ISO time range of the
            interactions (time None without timestamps).
    """

    category_mix: dict[str, int]
    event_mix: dict[str, int]
    price: np.ndarray = field(metadata=_NPZ)
    basket_size: np.ndarray = field(metadata=_NPZ)
    user_activity: np.ndarray = field(metadata=_NPZ)
    item_popularity: np.ndarray = field(metadata=_NPZ)
    vector_item_ids: list[str]
    vectors: np.ndarray | None
    n_interactions: int
    n_users: int
    n_items: int
    time_min: str | None
    time_max: str | None
    basket_unit: str | None = None
    category_paths: dict[str, int] = field(default_factory=dict)


# saved with their own encodings (packed strings, optional arrays), not field by field
_SPECIALLY_STORED = ("category_paths", "vector_item_ids", "vectors")
_PROFILE_ARRAYS = tuple(f.name for f in fields(Profile) if f.metadata.get("store") == "npz")
_PROFILE_JSON = tuple(f.name for f in fields(Profile) if f.name not in _PROFILE_ARRAYS + _SPECIALLY_STORED)


def _profile_fields(prof: Mapping[str, Any]) -> dict[str, Any]:
    """The `Profile` fields of `_profile`'s result (it also returns private helpers, prefixed `_`)."""
    return {f.name: prof[f.name] for f in fields(Profile) if f.name in prof}


@dataclass(eq=False, kw_only=True)
class ReferenceStats(Profile):
    """What the monitor keeps of the champion's training data (small: a few MB at most): its `Profile`
    and what only a reference has.

    Attributes:
        catalog_item_ids: every item id the champion was trained with (its catalog).
        eval_recall: the champion's evaluation Recall@10, or None.
        eval_recall_users: the evaluation Recall@10 of each evaluated user (float32; a seeded sample
            of at most MAX_RECALL_USERS), what the recall signal's bootstrap resamples; empty when
            not given (then the recall signal cannot decide with confidence and never alarms).
        eval_recall_users_total: how many users the evaluation had (before that sample).
        dataset, digest: which data this was (name and content digest).
        period_seconds: the slice length of user_activity / item_popularity; None = the whole reference.
        max_sample, seed: how the samples were drawn.
        recall_k: the k of eval_recall (the training run's `eval.k`): the monitor measures the window
            at the same k; None in references saved before it was kept.
    """

    catalog_item_ids: np.ndarray
    eval_recall: float | None
    dataset: str = ""
    digest: str = ""
    period_seconds: float | None = None
    # interactions per (slice, user) and per (slice, item), with each entry's slice (one slice without
    # `period`): redrawn at a window's volume they give the activity and popularity a window of that
    # size would show if nothing had changed (entries sampled above MAX_TOTALS)
    user_totals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), metadata=_NPZ)
    user_slices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32), metadata=_NPZ)
    user_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32), metadata=_NPZ)
    item_totals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), metadata=_NPZ)
    item_slices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32), metadata=_NPZ)
    item_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32), metadata=_NPZ)
    eval_recall_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    eval_recall_users_total: int = 0
    max_sample: int = 20_000
    seed: int = 0
    recall_k: int | None = None

    @classmethod
    def build(
        cls,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None,
        item_ids: Sequence[str],
        vectors: np.ndarray | None,
        eval_recall: float | None,
        max_sample: int = 20_000,
        seed: int = 0,
        dataset: str = "",
        digest: str = "",
        *,
        max_vectors: int = 2_000,
        period: str | pd.Timedelta | None = None,
        eval_recall_per_user: Sequence[float] | np.ndarray | None = None,
        recall_k: int | None = None,
    ) -> ReferenceStats:
        """Condense the champion's training interactions.

        Args:
            interactions, items: canonical frames (recsys.data.schema) of the training data.
            item_ids: the champion's catalog; `vectors` (n_items x dim) are aligned with it, or
                None for no embedding signal.
            eval_recall: the champion's evaluation Recall@10 (None: no recall signal).
            max_sample, seed: sample size cap and seed of the numeric samples.
            dataset, digest: recorded for lineage.
            max_vectors: distinct interacted items whose vectors are kept.
            period: the monitoring window's length ("7D", a Timedelta): user activity and item
                popularity are then counted per period-long slice of the reference, so that they
                compare like with like against a window of that length. None = whole reference.
            eval_recall_per_user: the evaluation Recall@10 of each evaluated user (NaN = a user
                without target, left out); its mean is the evaluation score when eval_recall is None.
            recall_k: the k those recalls were measured at (stored, so the monitor measures alike).
        """
        catalog = np.asarray([str(i) for i in item_ids], dtype=object)
        idx = pd.Index(catalog)
        if not idx.is_unique:
            raise ValueError("item_ids has duplicates: the champion's catalog must list each item once")
        if vectors is not None:
            vectors = np.asarray(vectors)
            if vectors.ndim != 2 or vectors.shape[0] != len(catalog):
                raise ValueError(f"vectors must be (len(item_ids), dim) = ({len(catalog)}, d), got {vectors.shape}")
        per = pd.Timedelta(period) if period is not None else None
        if per is not None and per <= pd.Timedelta(0):
            raise ValueError(f"period must be positive, got {period!r}")
        prof = _profile(interactions, items, max_sample=max_sample, seed=seed, period=per)
        users = np.zeros(0, dtype=np.float32)
        if eval_recall_per_user is not None:
            users = np.asarray(eval_recall_per_user, dtype=np.float64).ravel()
            users = users[np.isfinite(users)]
            if len(users) and (users.min() < 0 or users.max() > 1):
                raise ValueError("eval_recall_per_user holds recalls: values in [0, 1]")
            if eval_recall is None and len(users):
                eval_recall = float(users.mean())
        n_users_total = len(users)
        users = _cap(users, MAX_RECALL_USERS, stream_rng(seed, 8)).astype(np.float32)

        vec_ids: list[str] = []
        vecs = None
        if vectors is not None:
            pos = idx.get_indexer(pd.Index(prof["_item_ids"]).astype(str).astype(object))
            pos = pos[pos >= 0]
            if len(pos) > max_vectors:
                pos = np.sort(stream_rng(seed, 5).choice(pos, size=max_vectors, replace=False))
            vec_ids = [str(x) for x in catalog[pos]]
            vecs = _store_vectors(np.asarray(vectors[pos], dtype=np.float32))
        return cls(
            **_profile_fields(prof),
            vector_item_ids=vec_ids,
            vectors=vecs,
            catalog_item_ids=catalog,
            eval_recall_users=users,
            eval_recall_users_total=int(n_users_total),
            eval_recall=None if eval_recall is None else float(eval_recall),
            dataset=str(dataset),
            digest=str(digest),
            period_seconds=None if per is None else per.total_seconds(),
            max_sample=int(max_sample),
            seed=int(seed),
            recall_k=None if recall_k is None else int(recall_k),
            **_capped_slices("user", prof["_user_slices"], seed, 6),
            **_capped_slices("item", prof["_item_slices"], seed, 7),
        )

    def _meta(self) -> dict[str, Any]:
        return {
            "format": _FORMAT_VERSION,
            "dataset": self.dataset,
            "digest": self.digest,
            **{name: getattr(self, name) for name in _PROFILE_JSON},
            "eval_recall": self.eval_recall,
            "eval_recall_users": self.eval_recall_users_total,
            "period_seconds": self.period_seconds,
            "max_sample": self.max_sample,
            "seed": self.seed,
            "recall_k": self.recall_k,
        }

    def summary(self) -> dict[str, Any]:
        """The small, JSON-able facts about the reference (for reports)."""
        out = {k: v for k, v in self._meta().items() if k not in ("format", "category_mix", "event_mix", "max_sample", "seed")}
        out["catalog_items"] = len(self.catalog_item_ids)
        out["vector_items"] = len(self.vector_item_ids)
        return out

    def save(self, path_dir: str | Path) -> None:
        """Write reference.npz (arrays), then reference.json (the rest + the npz's sha256), each atomically.

        The json is written last and names the npz's hash, so an interrupted save is detected on load.
        """
        d = Path(path_dir)
        arrays: dict[str, np.ndarray] = {k: np.asarray(getattr(self, k)) for k in _ARRAY_FIELDS}
        if self.vectors is not None:
            arrays["vectors"] = np.asarray(self.vectors)
        arrays["vector_item_ids_blob"], arrays["vector_item_ids_offsets"] = _pack_strings(self.vector_item_ids)
        arrays["catalog_blob"], arrays["catalog_offsets"] = _pack_strings(self.catalog_item_ids)
        arrays["category_paths_blob"], arrays["category_paths_offsets"] = _pack_strings(list(self.category_paths))
        arrays["category_path_counts"] = np.asarray(list(self.category_paths.values()), dtype=np.int64)
        arrays["eval_recall_users"] = np.asarray(self.eval_recall_users, dtype=np.float32)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        atomic.write_bytes(d / "reference.npz", data, mkdir=True)
        meta = self._meta() | {"npz_sha256": hashlib.sha256(data).hexdigest()}
        atomic.write_bytes(d / "reference.json", (json.dumps(meta, indent=2, allow_nan=False) + "\n").encode("utf-8"), mkdir=True)

    @classmethod
    def load(cls, path_dir: str | Path) -> ReferenceStats:
        d = Path(path_dir)
        meta = json.loads((d / "reference.json").read_text(encoding="utf-8"))
        if meta.get("format") != _FORMAT_VERSION:
            raise ValueError(f"{d / 'reference.json'}: unsupported format {meta.get('format')!r} (expected {_FORMAT_VERSION})")
        data = (d / "reference.npz").read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("npz_sha256"):
            raise ValueError(f"{d / 'reference.npz'} does not match {d / 'reference.json'} (an interrupted save?)")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        # references saved before paths and per-user recalls were kept load without them (the
        # category mix is then compared at the top level, the recall signal cannot decide)
        paths: dict[str, int] = {}
        if "category_paths_blob" in arrays:
            names = _unpack_strings(arrays["category_paths_blob"], arrays["category_paths_offsets"])
            paths = {k: int(v) for k, v in zip(names, arrays["category_path_counts"].tolist())}
        return cls(
            **{name: meta.get(name) for name in _PROFILE_JSON},  # JSON keeps their types (str keys, ints)
            category_paths=paths,
            eval_recall_users=arrays.get("eval_recall_users", np.zeros(0, dtype=np.float32)).astype(np.float32),
            eval_recall_users_total=int(meta.get("eval_recall_users") or 0),
            # references saved before the totals existed load with empty ones (no thinning)
            **{k: arrays[k] if k in arrays else np.zeros(0, dtype=np.int64) for k in _ARRAY_FIELDS},
            vector_item_ids=_unpack_strings(arrays["vector_item_ids_blob"], arrays["vector_item_ids_offsets"]),
            vectors=arrays.get("vectors"),
            catalog_item_ids=np.asarray(_unpack_strings(arrays["catalog_blob"], arrays["catalog_offsets"]), dtype=object),
            eval_recall=meta["eval_recall"],
            dataset=meta["dataset"],
            digest=meta["digest"],
            period_seconds=meta["period_seconds"],
            max_sample=int(meta["max_sample"]),
            seed=int(meta["seed"]),
            recall_k=meta.get("recall_k"),  # None: saved before k was kept
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReferenceStats):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name in (*_ARRAY_FIELDS, "vectors", "catalog_item_ids", "eval_recall_users"):
                if not _arrays_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # mutable, compared by value


_ARRAY_FIELDS = tuple(f.name for f in fields(ReferenceStats) if f.metadata.get("store") == "npz")


@dataclass(eq=False, kw_only=True)
class Window(Profile):
    """The same `Profile` as the reference's, for a recent window (full, unless above `max_sample`).

    item_ids / item_counts: every distinct interacted item and its interaction count (for the
    unseen-items share); vector_item_ids / vectors: a seeded sample of distinct window items;
    category_paths: interactions per full category path (binned like the reference's).
    """

    item_ids: np.ndarray
    item_counts: np.ndarray

    def summary(self) -> dict[str, Any]:
        return {
            "n_interactions": self.n_interactions,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "time_min": self.time_min,
            "time_max": self.time_max,
        }


def window_from_frames(
    interactions: pd.DataFrame,
    items: pd.DataFrame | None,
    item_vectors: Callable[[list[str]], np.ndarray] | None = None,
    *,
    max_sample: int | None = 1_000_000,
    max_vectors: int = 2_000,
    seed: int = 0,
) -> Window:
    """The statistics of a recent window of interactions.

    Args:
        interactions, items: canonical frames of the window (items: the current catalog, for
            categories and prices; None when there is none).
        item_vectors: maps item ids to vectors (rows aligned with the ids) in the champion's
            embedding space; the caller embeds unseen items with the champion's encoder. Called
            once, on a seeded sample of at most `max_vectors` distinct window items. None = no
            embedding signal.
        max_sample: numeric samples are kept whole up to this size, then sampled (seeded).
        max_vectors, seed: as for the reference.
    """
    prof = _profile(interactions, items, max_sample=max_sample, seed=seed)
    ids = pd.Index(prof["_item_ids"]).astype(str).to_numpy(dtype=object)  # compared with the catalog's str ids
    vec_ids: list[str] = []
    vecs = None
    if item_vectors is not None and len(ids):
        pick = np.arange(len(ids))
        if len(pick) > max_vectors:
            pick = np.sort(stream_rng(seed, 5).choice(len(ids), size=max_vectors, replace=False))
        vec_ids = [str(x) for x in ids[pick]]
        v = np.asarray(item_vectors(vec_ids), dtype=np.float32)
        if v.ndim != 2 or v.shape[0] != len(vec_ids):
            raise ValueError(f"item_vectors returned shape {v.shape} for {len(vec_ids)} ids (want (n_ids, dim))")
        ok = np.isfinite(v).all(axis=1)
        vec_ids = [i for i, keep in zip(vec_ids, ok) if keep]
        vecs = _store_vectors(v[ok])
    return Window(**_profile_fields(prof), item_ids=ids, item_counts=prof["_item_counts"], vector_item_ids=vec_ids, vectors=vecs)


# ---------------------------------------------------------------------------------------------
# signals and the report


def _jsonable(x: Any) -> Any:
    """Plain JSON types only: numpy scalars/arrays unwrapped, NaN/inf -> None, tuples -> lists."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)


@dataclass(frozen=True)
class Signal:
    """One aspect of the data compared with the reference.

    value: the statistic (PSI, KS statistic, AUC, share, relative drop), None when not measured
    (or, for champion_recall, not enough evidence: `extra["status"]` says so, with the counts);
    threshold: above it the signal alarms (champion_recall: when its interval's lower end, in
    `extra["interval"]`, is above it); detail: one line on what was measured (or why not);
    extra: the other numbers (JSON-able), e.g. js for the mixes, pvalue and wasserstein for KS.
    """

    name: str
    kind: str
    value: float | None
    threshold: float | None
    alarm: bool
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.value is not None

    @property
    def ratio(self) -> float | None:
        """value / threshold (1.0 = on the line), None when not measured or the threshold is 0."""
        if self.value is None or not self.threshold:
            return None
        return self.value / self.threshold

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Signal:
        return cls(
            name=str(d["name"]),
            kind=str(d["kind"]),
            value=None if d.get("value") is None else float(d["value"]),
            threshold=None if d.get("threshold") is None else float(d["threshold"]),
            alarm=bool(d["alarm"]),
            detail=str(d.get("detail", "")),
            extra=dict(d.get("extra") or {}),
        )


@dataclass
class DriftReport:
    """The verdict: drift (at least `min_alarms` signals alarmed), every signal, one reason per alarm."""

    drift: bool
    signals: list[Signal]
    reasons: list[str]
    window: dict[str, Any]
    config: dict[str, Any]
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def alarms(self) -> list[Signal]:
        return [s for s in self.signals if s.alarm]

    def signal(self, name: str) -> Signal:
        for s in self.signals:
            if s.name == name:
                return s
        raise KeyError(f"no signal {name!r}; have {[s.name for s in self.signals]}")

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "drift": self.drift,
                "signals": [s.to_dict() for s in self.signals],
                "reasons": list(self.reasons),
                "window": self.window,
                "reference": self.reference,
                "config": self.config,
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftReport:
        return cls(
            drift=bool(d["drift"]),
            signals=[Signal.from_dict(s) for s in d.get("signals") or []],
            reasons=[str(r) for r in d.get("reasons") or []],
            window=dict(d.get("window") or {}),
            config=dict(d.get("config") or {}),
            reference=dict(d.get("reference") or {}),
        )


def _not_measured(name: str, kind: str, threshold: float | None, why: str) -> Signal:
    return Signal(name, kind, None, threshold, False, f"not measured: {why}")


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def mix_signal(name: str, ref: Mapping[str, float], cur: Mapping[str, float], cfg: DriftConfig = DriftConfig(), what: str = "value") -> Signal:
    """PSI signal of two categorical mixes (counts or shares per bin); JS distance and the shares in `extra`."""
    if not ref or sum(ref.values()) <= 0:
        return _not_measured(name, "psi", cfg.psi_threshold, f"no {what} in the reference")
    if not cur or sum(cur.values()) <= 0:
        return _not_measured(name, "psi", cfg.psi_threshold, f"no {what} in the window")
    keys, p, q = _aligned_shares(ref, cur)
    value, js = psi(ref, cur), js_distance(ref, cur)
    order = np.argsort(-np.abs(q - p), kind="stable")
    big = keys[int(order[0])]
    move = f"{big} {_pct(p[order[0]])} → {_pct(q[order[0]])}"
    keep = np.argsort(-(p + q), kind="stable")[:_MAX_MIX_BINS_REPORTED]
    extra = {
        "js": js,
        "biggest_change": {"bin": big, "reference": float(p[order[0]]), "window": float(q[order[0]])},
        "reference_shares": {keys[i]: float(p[i]) for i in keep},
        "window_shares": {keys[i]: float(q[i]) for i in keep},
        "new_bins": [k for k in keys if k not in ref],
        "vanished_bins": [k for k in keys if k not in cur],
    }
    alarm = value > cfg.psi_threshold
    detail = f"PSI {value:.3f} (threshold {cfg.psi_threshold:g}), JS distance {js:.3f}; largest change {move}"
    return Signal(name, "psi", value, cfg.psi_threshold, alarm, detail, extra)


def category_signal(reference: ReferenceStats, window: Window, cfg: DriftConfig = DriftConfig()) -> Signal:
    """The category mix's PSI at the deepest level of the category paths with enough support (or at
    `cfg.category_level`); which level, and which categories were split, go to `extra`."""
    name, what = "category_mix", "category"
    if not reference.category_paths or not window.category_paths:
        # a reference saved before full paths were kept: top-level categories only, as it was
        s = mix_signal(name, reference.category_mix, window.category_mix, cfg, what)
        if not s.measured:
            return s
        return replace(s, detail=s.detail + "; at the top level (the reference keeps no deeper levels)", extra=s.extra | {"level": 1, "mode": "top level only"})
    ref, win, how = category_bins(reference.category_paths, window.category_paths, window.n_interactions, cfg.min_category_support, cfg.category_level)
    s = mix_signal(name, ref, win, cfg, what)
    if not s.measured:
        return s
    top = psi(reference.category_mix, window.category_mix) if reference.category_mix and window.category_mix else None
    if how["mode"] == "fixed":
        where = f"categories cut at level {how['requested_level']}"
    elif how["split"]:
        where = f"level {how['level']}: {len(how['split'])} categor{'y' if len(how['split']) == 1 else 'ies'} split into sub-categories with >= {how['min_support']} reference and expected window interactions"
    else:
        where = f"top level (no sub-category has >= {how['min_support']} reference and expected window interactions)"
    top_txt = f"; top level alone PSI {top:.3f}" if top is not None and how["level"] > 1 else ""
    return replace(s, detail=f"{s.detail}; {where}{top_txt}", extra=s.extra | how | {"top_level_psi": top, "bins": len(set(ref) | set(win))})


def _span_days(tmin: str | None, tmax: str | None) -> float | None:
    if not tmin or not tmax:
        return None
    return (pd.Timestamp(tmax) - pd.Timestamp(tmin)) / pd.Timedelta(days=1)


def numeric_signal(name: str, ref: np.ndarray, cur: np.ndarray, cfg: DriftConfig = DriftConfig(), note: str = "") -> Signal:
    """Two-sample KS signal: alarms when statistic > ks_threshold AND p-value < ks_pvalue.

    Each side is sub-sampled (seeded) to `cfg.max_test_sample` values; Wasserstein-1, also
    normalised by the reference's IQR (std when the IQR is 0), and the medians go to `extra`.
    """
    from scipy.stats import ks_2samp

    what = _label(name).replace(" distribution", "")
    if len(ref) < _MIN_NUMERIC_VALUES:
        return _not_measured(name, "ks", cfg.ks_threshold, f"{len(ref)} {what} value(s) in the reference")
    if len(cur) < _MIN_NUMERIC_VALUES:
        return _not_measured(name, "ks", cfg.ks_threshold, f"{len(cur)} {what} value(s) in the window")
    r = _cap(np.asarray(ref, dtype=np.float64), cfg.max_test_sample, stream_rng(cfg.seed, 11))
    c = _cap(np.asarray(cur, dtype=np.float64), cfg.max_test_sample, stream_rng(cfg.seed, 12))
    ks = ks_2samp(r, c)
    stat, pvalue = float(ks.statistic), float(ks.pvalue)
    w, w_norm, scale = normalised_wasserstein(r, c)
    med_r, med_c = float(np.median(r)), float(np.median(c))
    alarm = stat > cfg.ks_threshold and pvalue < cfg.ks_pvalue
    extra = {
        "pvalue": pvalue,
        "wasserstein": w,
        "wasserstein_normalised": w_norm,
        "wasserstein_scale": scale,
        "reference_median": med_r,
        "window_median": med_c,
        "reference_mean": float(np.mean(r)),
        "window_mean": float(np.mean(c)),
        "n_reference": len(r),
        "n_window": len(c),
    }
    wtxt = f"Wasserstein {w_norm:.3f} {scale}s" if w_norm is not None else f"Wasserstein {w:.3g}"
    detail = f"KS {stat:.3f} (threshold {cfg.ks_threshold:g}), p={pvalue:.2g}; {wtxt}; median {med_r:.4g} → {med_c:.4g}" + note
    return Signal(name, "ks", stat, cfg.ks_threshold, alarm, detail, extra)


def _embedding_signal(reference: ReferenceStats, window: Window, cfg: DriftConfig) -> Signal:
    name, t = "text_embedding", cfg.auc_threshold
    if reference.vectors is None or not len(reference.vector_item_ids):
        return _not_measured(name, "auc", t, "no item vectors in the reference")
    if window.vectors is None or not len(window.vector_item_ids):
        return _not_measured(name, "auc", t, "no item vectors for the window")
    rv, wv = np.asarray(reference.vectors), np.asarray(window.vectors)
    if rv.shape[1] != wv.shape[1]:
        return _not_measured(name, "auc", t, f"vector sizes differ (reference {rv.shape[1]}, window {wv.shape[1]}): a different encoder?")
    n_r, n_w = len(rv), len(wv)
    if min(n_r, n_w) < cfg.min_items_for_auc:
        side = "window" if n_w < cfg.min_items_for_auc else "reference"
        return _not_measured(name, "auc", t, f"not enough data: {min(n_r, n_w)} {side} items with vectors (< {cfg.min_items_for_auc})")

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # the same precision on both sides (the reference is stored as float16): the classifier
    # must not be able to tell the sides apart by rounding alone
    prec = np.float16 if rv.dtype == np.float16 or wv.dtype == np.float16 else np.float32
    rv, wv = rv.astype(prec).astype(np.float64), wv.astype(prec).astype(np.float64)
    n = min(n_r, n_w)  # balance the classes: sample the larger side down
    rv = rv[np.sort(stream_rng(cfg.seed, 13).choice(n_r, size=n, replace=False))] if n_r > n else rv
    wv = wv[np.sort(stream_rng(cfg.seed, 14).choice(n_w, size=n, replace=False))] if n_w > n else wv
    x = np.vstack([rv, wv])
    y = np.r_[np.zeros(n, dtype=np.int8), np.ones(n, dtype=np.int8)]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    scores = cross_val_score(model, x, y, cv=cv, scoring="roc_auc")
    auc = float(np.mean(scores))
    overlap = len(set(reference.vector_item_ids) & set(window.vector_item_ids))
    extra = {"fold_auc": [float(s) for s in scores], "auc_std": float(np.std(scores)), "n_per_side": n, "dim": int(x.shape[1]), "shared_items": overlap}
    detail = f"domain-classifier ROC AUC {auc:.3f} (threshold {t:g}; {cfg.cv_folds}-fold CV, {n} items per side, 0.5 = indistinguishable)"
    return Signal(name, "auc", auc, t, auc > t, detail, extra)


def _unseen_signal(reference: ReferenceStats, window: Window, cfg: DriftConfig) -> Signal:
    name, t = "unseen_items", cfg.unseen_share_threshold
    total = int(np.sum(window.item_counts))
    if total == 0:
        return _not_measured(name, "share", t, "no window interactions")
    if not len(reference.catalog_item_ids):
        return _not_measured(name, "share", t, "the champion's catalog is empty")
    unseen = ~pd.Index(window.item_ids).isin(pd.Index(reference.catalog_item_ids))
    n_inter = int(window.item_counts[unseen].sum())
    share = n_inter / total
    top = np.argsort(-window.item_counts[unseen], kind="stable")[:5]
    extra = {
        "unseen_interactions": n_inter,
        "unseen_items": int(unseen.sum()),
        "window_items": len(window.item_ids),
        "top_unseen": [str(x) for x in window.item_ids[unseen][top]],
    }
    detail = f"{_pct(share)} of window interactions ({n_inter:,}) are on {int(unseen.sum()):,} item(s) the champion never saw (threshold {_pct(t)})"
    return Signal(name, "share", share, t, share > t, detail, extra)


def bootstrap_relative_drop(
    reference: np.ndarray, window: np.ndarray, samples: int = 2000, confidence: float = 0.9, seed: int = 0, chunk: int = 250
) -> tuple[float, float, float]:
    """(point, low, high): the relative drop 1 - mean(window) / mean(reference) and its percentile
    bootstrap interval at `confidence` (two-sided).

    Each resample draws each side's users with replacement, the two sides independently: the
    evaluation's users and the window's are different people (unpaired). A draw is taken as
    multinomial counts over a side's distinct values when they are few (per-user recalls take few:
    hits / targets), the same distribution as drawing users in time proportional to the values. A
    resample whose reference mean is 0 has no defined drop and counts as -inf (no evidence of a
    drop), so it can only lower the interval's lower end: the conservative side for an alarm.
    """
    ref, win = np.asarray(reference, dtype=np.float64), np.asarray(window, dtype=np.float64)
    if not len(ref) or not len(win):
        raise ValueError("both sides need at least one user")
    point = 1.0 - win.mean() / ref.mean() if ref.mean() > 0 else float("-inf")
    rng = stream_rng(seed, 31)
    sides = [np.unique(x, return_counts=True) for x in (ref, win)]

    def resampled_means(x: np.ndarray, vals: np.ndarray, counts: np.ndarray, size: int) -> np.ndarray:
        if len(vals) <= _MAX_MULTINOMIAL_VALUES:
            return rng.multinomial(len(x), counts / len(x), size=size) @ vals / len(x)
        return x[rng.integers(0, len(x), size=(size, len(x)))].mean(axis=1)  # many distinct values: draw users

    drops = np.empty(samples, dtype=np.float64)
    for lo in range(0, samples, chunk):  # bounded memory: chunk x users (or distinct values) at a time
        size = min(chunk, samples - lo)
        means = [resampled_means(x, vals, counts, size) for x, (vals, counts) in zip((ref, win), sides)]
        with np.errstate(divide="ignore", invalid="ignore"):
            drops[lo : lo + size] = np.where(means[0] > 0, 1.0 - means[1] / np.where(means[0] > 0, means[0], 1.0), -np.inf)
    tail = (1.0 - confidence) / 2.0
    # inverted_cdf: actual resampled values, no interpolation with a -inf neighbour
    low, high = np.quantile(drops, [tail, 1.0 - tail], method="inverted_cdf")
    return float(point), float(low), float(high)


def _finite(values: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def _recall_signal(
    reference: ReferenceStats, window_recall: float | None, window_users: Sequence[float] | np.ndarray | None, cfg: DriftConfig
) -> Signal:
    """The relative drop of the champion's Recall@k, decided on its bootstrap interval (see DriftConfig)."""
    name, t, kind = "champion_recall", cfg.recall_drop_threshold, "relative_drop"
    recall = f"Recall@{reference.recall_k or LEGACY_RECALL_K}"
    ref_users = _finite(reference.eval_recall_users)
    eval_recall = float(ref_users.mean()) if len(ref_users) else reference.eval_recall
    if eval_recall is None or not math.isfinite(eval_recall):
        return _not_measured(name, kind, t, f"no evaluation {recall} stored with the champion")
    if eval_recall <= 0:
        return _not_measured(name, kind, t, f"evaluation {recall} is {eval_recall}: no drop to measure")
    win_users = _finite(window_users)
    if win_users is not None and len(win_users):
        window_recall = float(win_users.mean())
    if win_users is None and (window_recall is None or not math.isfinite(window_recall)):
        return _not_measured(name, kind, t, f"no {recall} on the window was given")
    n_ref, n_win, need = len(ref_users), 0 if win_users is None else len(win_users), cfg.min_recall_users
    point = None if window_recall is None or not math.isfinite(window_recall) else (eval_recall - window_recall) / eval_recall
    extra: dict[str, Any] = {
        "k": reference.recall_k or LEGACY_RECALL_K,
        "eval_recall": float(eval_recall),
        "window_recall": window_recall,
        "point_drop": point,
        "n_reference_users": n_ref,
        "n_window_users": n_win,
        "min_users": need,
        "interval": None,
    }
    why = []
    if not n_ref:
        why.append("the reference keeps no per-user evaluation recalls (saved before they were kept, or none given), and a mean alone has no interval")
    elif n_ref < need:
        why.append(f"{n_ref} evaluable user(s) in the reference (< {need})")
    if win_users is None:
        why.append("only the window's mean recall was given, not per-user values")
    elif n_win < need:
        why.append(f"{n_win} evaluable user(s) in the window (< {need})")
    if why:
        # no decision either way: not an alarm, and not a 0 that reads as "no drop"
        extra["status"] = "not enough evidence"
        seen = f"{recall} {window_recall:.4f} on the window vs {eval_recall:.4f} at evaluation (point drop {_pct(point)})" if point is not None else f"evaluation {recall} {eval_recall:.4f}"
        return Signal(name, kind, None, t, False, f"not enough evidence: {seen}, but {'; '.join(why)}: no alarm", extra)
    point, low, high = bootstrap_relative_drop(ref_users, win_users, cfg.recall_bootstrap_samples, cfg.recall_confidence, cfg.seed)
    alarm = bool(low > t)  # the interval's conservative end, not the point, must be past the line
    extra["interval"] = {
        "low": low,
        "high": high,
        "confidence": cfg.recall_confidence,
        "samples": cfg.recall_bootstrap_samples,
        "n_reference_users": n_ref,
        "n_window_users": n_win,
    }
    extra["status"] = "alarm" if alarm else "no alarm"
    low_txt = _pct(low) if math.isfinite(low) else "undefined"
    detail = (
        f"{recall} {window_recall:.4f} on the window ({n_win:,} users) vs {eval_recall:.4f} at evaluation ({n_ref:,} users): "
        f"relative drop {_pct(point)}, {cfg.recall_confidence:.0%} interval [{low_txt}, {_pct(high)}] "
        f"(alarms when its lower end > {_pct(t)})"
    )
    return Signal(name, kind, point, t, alarm, detail, extra)


def _reason(s: Signal) -> str:
    label = _label(s.name).replace("Recall@k", f"Recall@{s.extra.get('k', LEGACY_RECALL_K)}")
    v, t = s.value, s.threshold
    if s.kind == "psi":
        b = s.extra.get("biggest_change") or {}
        return f"{label} shifted: PSI {v:.3f} > {t:g} (largest change: {b.get('bin')} {_pct(b.get('reference', 0))} → {_pct(b.get('window', 0))})"
    if s.kind == "ks":
        e = s.extra
        return (
            f"{label} shifted: KS {v:.3f} > {t:g} with p={e.get('pvalue', float('nan')):.1e} (median "
            f"{e.get('reference_median', float('nan')):.4g} → {e.get('window_median', float('nan')):.4g})"
        )
    if s.kind == "auc":
        return f"{label} moved: a classifier tells window items from reference items with ROC AUC {v:.3f} > {t:g}"
    if s.kind == "share":
        return f"{_pct(v)} of window interactions are on items the champion never saw (> {_pct(t)})"
    if s.kind == "relative_drop":
        e = s.extra
        ci = e.get("interval") or {}
        sure = f", {ci['confidence']:.0%} interval [{_pct(ci['low'])}, {_pct(ci['high'])}] over {ci['n_window_users']:,} / {ci['n_reference_users']:,} users" if ci else ""
        return f"{label} fell {_pct(v)} (> {_pct(t)}{sure}): {e.get('window_recall', float('nan')):.4f} on the window vs {e.get('eval_recall', float('nan')):.4f} at evaluation"
    return f"{label}: {v} > {t}"


def _span_note(name: str, reference: ReferenceStats, window: Window) -> tuple[str, dict[str, Any]]:
    """For counts that scale with time: a note when the reference's unit and the window's span differ > 2x."""
    if name not in _TIME_SCALED:
        return "", {}
    ref_days = reference.period_seconds / 86400 if reference.period_seconds else _span_days(reference.time_min, reference.time_max)
    win_days = _span_days(window.time_min, window.time_max)
    if not ref_days or not win_days:
        return "", {}
    ratio = win_days / ref_days
    extra = {"reference_days": ref_days, "window_days": win_days}
    if 0.5 <= ratio <= 2:
        return "", extra
    unit = "per period of" if reference.period_seconds else "over"
    note = (
        f" [note: reference counted {unit} {ref_days:.3g} days, window spans {win_days:.3g}: counts per user/item "
        "scale with the window length; build the reference with period=<window length>]"
    )
    return note, extra


def _capped_slices(kind: str, slices_keys_counts: tuple[np.ndarray, np.ndarray, np.ndarray], seed: int, stream: int) -> dict[str, np.ndarray]:
    slices, keys, counts = slices_keys_counts
    if len(counts) > MAX_TOTALS:
        keep = np.sort(stream_rng(seed, stream).choice(len(counts), MAX_TOTALS, replace=False))
        slices, keys, counts = slices[keep], keys[keep], counts[keep]
    return {f"{kind}_totals": counts.astype(np.int64), f"{kind}_slices": slices.astype(np.int32), f"{kind}_keys": keys.astype(np.int32)}


def _thin(totals: np.ndarray, slices: np.ndarray, n: int, rng: np.random.Generator, keys: np.ndarray | None = None) -> np.ndarray:
    """Per slice of the reference: the counts of the keys that occur when the slice is brought to `n`
    interactions (subsampled without replacement; or, for a busier window, topped up with draws from
    the whole reference's shares, so that more of its people show up; zeros dropped); all slices
    pooled. At the slice's own volume this is the slice itself, no added noise. Who is active turns over between
    slices (a slice's users are the ones active in such a period) and counts follow the volume."""
    out = []
    for s in np.unique(slices):
        c = np.asarray(totals[slices == s], dtype=np.int64)
        total = int(c.sum())
        if total <= 0:
            continue
        if n <= total:  # a smaller window: a random subset of the slice's interactions
            drawn = rng.multivariate_hypergeometric(c, int(n), method="marginals")
        elif keys is not None and len(keys) == len(totals):  # busier: plus draws from the whole reference
            pooled = np.bincount(keys, weights=totals).astype(np.float64)
            drawn = pooled * 0
            drawn[keys[slices == s]] = c
            drawn = drawn + rng.multinomial(int(n) - total, pooled / pooled.sum())
        else:
            drawn = c + rng.multinomial(int(n) - total, c / total)
        out.append(drawn[drawn > 0])
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)


def _numeric_signal(name: str, reference: ReferenceStats, window: Window, config: DriftConfig) -> Signal:
    """KS of the `Profile` distribution `name`, volume-matched for the counts that grow with traffic."""
    if name == "basket_size" and reference.basket_unit and window.basket_unit and reference.basket_unit != window.basket_unit:
        return _not_measured(name, "ks", config.ks_threshold, f"units differ (reference per {reference.basket_unit}, window per {window.basket_unit})")
    if name == "basket_size" and window.basket_unit == "user-day" and not config.user_day_baskets:
        return _not_measured(name, "ks", config.ks_threshold, "no basket ids: the user-day proxy depends on traffic volume (measured to false-alarm on shuffled replays); set user_day_baskets to use it")
    totals, slices, keys = {
        "user_activity": (reference.user_totals, reference.user_slices, reference.user_keys),
        "item_popularity": (reference.item_totals, reference.item_slices, reference.item_keys),
    }.get(name, (None, None, None))
    if totals is not None and len(totals) and len(slices) == len(totals) and window.n_interactions:
        # volume-matched: what the reference's users / items would show in a window of this many
        # interactions if nothing had changed (multinomial thinning, seeded); counts per user and
        # per item grow with traffic, so comparing raw counts alarms on volume alone
        thinned = _thin(totals, slices, window.n_interactions, stream_rng(config.seed, 21 if name == "user_activity" else 22), keys)
        s = numeric_signal(name, thinned, getattr(window, name), config, f"; reference thinned to the window's {window.n_interactions:,} interactions")
        if name == "user_activity":
            # traffic can change through how many people come (per-user activity stays) or how much
            # the same people do (it scales): alarm only when neither explains the window
            note, span_extra = _span_note(name, reference, window)
            raw = numeric_signal(name, reference.user_activity, window.user_activity, config, note + "; reference per period as it was")
            if raw.measured and (raw.value or 0) < (s.value or 0):
                s = replace(raw, extra=raw.extra | span_extra | {"thinned_ks": s.value})
            else:
                s = replace(s, extra=s.extra | {"as_was_ks": raw.value})
        return replace(s, extra=s.extra | {"volume_matched": True})
    note, span_extra = _span_note(name, reference, window)
    s = numeric_signal(name, getattr(reference, name), getattr(window, name), config, note)
    if name == "basket_size" and s.measured:
        span_extra = span_extra | {"unit": window.basket_unit}
    return replace(s, extra=s.extra | span_extra) if span_extra else s


# ---------------------------------------------------------------------------------------------
# the signals: one registry, read by detect_drift, the reasons and the report


@dataclass(frozen=True)
class WindowRecall:
    """The champion's Recall@k on the window, computed by the caller (`recsys.monitoring.monitor`)."""

    mean: float | None = None
    per_user: Sequence[float] | np.ndarray | None = None


@dataclass(frozen=True)
class SignalSpec:
    """One drift signal: its name, its label in reasons, and how it is measured.

    A new signal is one entry here (and its statistic in `Profile` / `_profile` if it needs a new one).
    `numeric`: a distribution of the `Profile` field of the same name (the report plots it).
    """

    name: str
    label: str
    measure: Callable[[ReferenceStats, Window, DriftConfig, WindowRecall], Signal]
    numeric: bool = False


def _numeric_spec(name: str, label: str) -> SignalSpec:
    return SignalSpec(name, label, lambda r, w, c, _: _numeric_signal(name, r, w, c), numeric=True)


SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec("category_mix", "category mix", lambda r, w, c, _: category_signal(r, w, c)),
    SignalSpec("event_mix", "event mix", lambda r, w, c, _: mix_signal("event_mix", r.event_mix, w.event_mix, c, "event type")),
    _numeric_spec("price", "price distribution"),
    _numeric_spec("basket_size", "basket size distribution"),
    _numeric_spec("user_activity", "user activity distribution"),
    _numeric_spec("item_popularity", "item popularity distribution"),
    SignalSpec("text_embedding", "item text embeddings", lambda r, w, c, _: _embedding_signal(r, w, c)),
    SignalSpec("unseen_items", "unseen items", lambda r, w, c, _: _unseen_signal(r, w, c)),
    SignalSpec("champion_recall", "champion Recall@k", lambda r, w, c, recall: _recall_signal(r, recall.mean, recall.per_user, c)),
)
SIGNAL_NAMES: tuple[str, ...] = tuple(spec.name for spec in SIGNALS)
NUMERIC_SIGNALS: tuple[str, ...] = tuple(spec.name for spec in SIGNALS if spec.numeric)


def _label(name: str) -> str:
    """A signal's label in reasons (looked up when used: a registry extended later is read too)."""
    return next((spec.label for spec in SIGNALS if spec.name == name), name)


def detect_drift(
    reference: ReferenceStats,
    window: Window,
    config: DriftConfig = DriftConfig(),
    window_recall: float | None = None,
    window_recall_per_user: Sequence[float] | np.ndarray | None = None,
) -> DriftReport:
    """Compare a window with the champion's reference; one Signal per aspect, drift if >= min_alarms alarm.

    window_recall_per_user: the champion's Recall@10 of each evaluable window user, computed by the
    caller (`recsys.monitoring.monitor.window_recall_per_user`); the recall signal bootstraps over them.
    window_recall: the mean alone (older callers): reported, but "not enough evidence" to alarm.
    Both None: the champion_recall signal is not measured. Below `config.min_window_interactions`
    window interactions every signal is still computed but none may alarm.
    """
    recall = WindowRecall(window_recall, window_recall_per_user)
    signals = [spec.measure(reference, window, config, recall) for spec in SIGNALS]

    reasons: list[str]
    if window.n_interactions < config.min_window_interactions:
        msg = f"window too small: {window.n_interactions:,} interactions < {config.min_window_interactions:,} required"
        signals = [replace(s, alarm=False, detail=f"{msg}, no alarm; {s.detail}") if s.measured else s for s in signals]
        reasons = [f"{msg}; no signal may alarm"]
    else:
        reasons = [_reason(s) for s in signals if s.alarm]
    n_alarms = sum(s.alarm for s in signals)
    drift = n_alarms >= config.min_alarms
    if 0 < n_alarms < config.min_alarms:
        reasons.append(f"{n_alarms} signal(s) alarmed, fewer than min_alarms={config.min_alarms}: not called drift")
    return DriftReport(
        drift=drift,
        signals=signals,
        reasons=reasons,
        window=window.summary(),
        config=asdict(config),
        reference=reference.summary(),
    )
