"""Evaluation splits: the basket-completion protocol for set data, a global time split for data with time.

A split is one frame of distinct (user_id, item_id, part) rows, where part is one of:
  train - what the model may fit on
  val   - validation targets (query: the user's train items)
  held  - observed items kept out of training because they are cold (they are part of the test query)
  test  - test targets (query: the user's train + val + held items)
plus the set of cold-start items (never seen in training) and the tuning fold (warm items that tuning
treats as new: kept out of fine-tuning so cold-start choices are judged on items the vectors never learned).

Stable assignment (basket protocol): which part a (user, item) pair falls in, which items are cold and
which are in the tuning fold are pure functions of the ids and the data set's split salt, through a keyed
hash (BLAKE2b keyed with the salt). Adding users or interactions, sampling users or changing the training
seed never moves an existing pair between training and test; only a new salt does (and the gate sees it:
`recsys.evaluation.lineage`). Time-split data keeps its time rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data import schema as S
from recsys.config import SplitConfig

TRAIN, VAL, HELD, TEST = "train", "val", "held", "test"
PART = "part"


@dataclass(frozen=True)
class Split:
    pairs: pd.DataFrame  # columns: user_id, item_id, part (+ timestamp for the time split)
    cold_items: frozenset[str]
    protocol: str  # "basket" or "time"
    salt: str = ""  # the split salt the basket assignment was drawn with ("" for the time split)
    # warm items the tuning steps treat as new (pseudo-cold): kept out of the fine-tuning pairs
    tuning_items: frozenset[str] = frozenset()
    # at most this many evaluated users per stage (a seeded sample, `eval_sample`); 0 = every user
    max_eval_users: int = 0

    def part(self, name: str) -> pd.DataFrame:
        return self.pairs[self.pairs[PART] == name]

    def queries_and_targets(self, stage: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Per-user query items and target items for stage "val" or "test".

        Users without any target or without any query item are left out (nothing to ask or to find).
        With `max_eval_users` set, only the sampled users (`eval_sample`) are returned.
        """
        query_parts = {VAL: (TRAIN,), TEST: (TRAIN, VAL, HELD)}[stage]
        q = self.pairs[self.pairs[PART].isin(query_parts)]
        t = self.pairs[self.pairs[PART] == stage]
        queries = q.groupby(S.USER_ID, sort=True)[S.ITEM_ID].agg(list).to_dict()
        targets = t.groupby(S.USER_ID, sort=True)[S.ITEM_ID].agg(list).to_dict()
        users = eval_sample(sorted(set(queries) & set(targets)), self.max_eval_users, self.salt or self.protocol)
        return {u: queries[u] for u in users}, {u: targets[u] for u in users}

    def summary(self) -> dict[str, int]:
        counts = self.pairs[PART].value_counts().to_dict()
        return {
            "protocol": self.protocol,
            "users": int(self.pairs[S.USER_ID].nunique()),
            "cold_items": len(self.cold_items),
            **{f"pairs_{p}": int(counts.get(p, 0)) for p in (TRAIN, VAL, HELD, TEST)},
            # only when sampled: the report names the sample beside the metrics
            **({"eval_sample": self.max_eval_users} if self.max_eval_users else {}),
        }


def eval_sample(users: list[str], max_users: int, salt: str) -> list[str]:
    """At most `max_users` of the sorted `users`: those with the smallest keyed hash of their id (a seeded
    sample that does not depend on which other users are present, so a stage and the gate's fair split,
    which drops pairs, keep the same users). 0, or no more users than that: all of them."""
    if not max_users or len(users) <= max_users:
        return users
    hashes = keyed_hash64(f"eval-sample:{salt}".encode(), users)
    keep = np.sort(np.argsort(hashes, kind="stable")[:max_users])
    return [users[i] for i in keep]


def keyed_hash64(key: bytes, keys: Iterable[str]) -> np.ndarray:
    """One uint64 per key: BLAKE2b (8-byte digest) keyed with `key`, little-endian. Shared by the split
    assignment and the lineage fingerprints (`recsys.evaluation.lineage`)."""
    digests = (hashlib.blake2b(k.encode(), key=key, digest_size=8).digest() for k in keys)
    return np.fromiter((int.from_bytes(d, "little") for d in digests), dtype=np.uint64)


def salted_hash64(salt: str, purpose: str, keys: Iterable[str]) -> np.ndarray:
    """`keyed_hash64` keyed with (salt, purpose) of any length: a fixed order of the keys that no
    catalog order or seed changes (samples, tie-breaks)."""
    return keyed_hash64(hashlib.blake2b(f"{salt}\x1f{purpose}".encode(), digest_size=32).digest(), keys)


def stable_unit(salt: str, purpose: str, keys: Iterable[str]) -> np.ndarray:
    """A uniform number in [0, 1) per key: BLAKE2b keyed with (salt, purpose), so the same key always
    gets the same number under the same salt, and an unrelated one under another salt or purpose."""
    return salted_hash64(salt, purpose, keys).astype(np.float64) / float(2**64)


def pair_keys(users: pd.Series, items: pd.Series) -> list[str]:
    """One string per (user, item) pair, unambiguous whatever the ids hold: the user id's length prefixes it."""
    u = users.astype(str)
    return (u.str.len().astype(str) + ":" + u + items.astype(str)).tolist()


def basket_split(interactions: pd.DataFrame, items: pd.Series, config: SplitConfig, salt: str | None = None) -> Split:
    """The basket-completion protocol for data without time (e.g. online-retail), with stable assignment.

    Drop users with fewer than `min_items_per_user` distinct items. An item is cold when its keyed hash
    falls below `cold_item_share`; a (user, item) pair is a test target when its keyed hash falls below
    `holdout_share`, a validation target when it falls in the next `holdout_share` of the rest. Observed
    cold items are held (in the test query, never in training). A user may have no test target (about
    (1 - holdout_share)^n of users with n items): no quota per user, because a quota would let a new
    purchase move an old pair between parts. `tuning_share` of the warm items form the tuning fold.
    """
    salt = config.salt if salt is None else salt
    pairs = interactions[[S.USER_ID, S.ITEM_ID]].drop_duplicates().sort_values([S.USER_ID, S.ITEM_ID], kind="stable")
    sizes = pairs.groupby(S.USER_ID)[S.ITEM_ID].transform("size")
    pairs = pairs[sizes >= config.min_items_per_user].reset_index(drop=True)

    catalog = np.array(sorted(set(items.astype(str))))
    cold = frozenset(catalog[stable_unit(salt, "cold", catalog) < config.cold_item_share].tolist())
    tuning = frozenset(catalog[stable_unit(salt, "tuning", catalog) < config.tuning_share].tolist()) - cold

    u = stable_unit(salt, "part", pair_keys(pairs[S.USER_ID], pairs[S.ITEM_ID]))
    share = config.holdout_share
    part = np.full(len(pairs), TRAIN, dtype=object)
    is_test = u < share
    is_cold = pairs[S.ITEM_ID].isin(cold).to_numpy()
    part[is_test] = TEST
    part[~is_test & is_cold] = HELD
    # validation: the same share of what training sees (u is uniform on [share, 1) there)
    part[~is_test & ~is_cold & (u < share + share * (1 - share))] = VAL
    return Split(pairs=pairs.assign(**{PART: part}), cold_items=cold, protocol="basket", salt=salt, tuning_items=tuning, max_eval_users=config.max_eval_users)


def time_split(interactions: pd.DataFrame, items: pd.Series, config: SplitConfig) -> Split:
    """A global time split (e.g. movielens-100k): the last `time_test_share` of interactions by time
    are test, the `time_val_share` before them validation, the rest train — or, with `time_val_start` and
    `time_test_start`, by calendar: from each date on. Targets are items new to the user; cold items are
    those with no training interaction (with dates: products first sold in the validation or test window)."""
    ev = interactions[[S.USER_ID, S.ITEM_ID, S.TIMESTAMP]].sort_values([S.TIMESTAMP, S.USER_ID, S.ITEM_ID], kind="stable")
    n = len(ev)
    part = np.full(n, TRAIN, dtype=object)
    if config.time_val_start is not None:
        times = ev[S.TIMESTAMP]
        part[(times >= _utc(config.time_val_start)).to_numpy()] = VAL
        part[(times >= _utc(config.time_test_start)).to_numpy()] = TEST
    else:
        n_test = int(round(config.time_test_share * n))
        n_val = int(round(config.time_val_share * n))
        part[n - n_test - n_val : n - n_test] = VAL
        part[n - n_test :] = TEST
    ev = ev.assign(**{PART: part})
    # one row per (user, item): its first occurrence decides its part, so a target is always new to the user
    # (the timestamp stays: training uses the order of each user's history)
    first = ev.drop_duplicates([S.USER_ID, S.ITEM_ID], keep="first")[[S.USER_ID, S.ITEM_ID, PART, S.TIMESTAMP]].reset_index(drop=True)
    trained = set(first.loc[first[PART] == TRAIN, S.ITEM_ID])
    cold = frozenset(set(items.astype(str)) - trained)
    # the tuning fold: trained items whose keyed hash falls below tuning_share (stable across runs)
    warm = np.array(sorted(trained))
    tuning = frozenset(warm[stable_unit(config.salt, "tuning", warm) < config.tuning_share].tolist()) if len(warm) else frozenset()
    return Split(pairs=first, cold_items=cold, protocol="time", salt=config.salt, tuning_items=tuning, max_eval_users=config.max_eval_users)


def _utc(when: str | None) -> pd.Timestamp:
    stamp = pd.Timestamp(when)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def make_split(dataset: S.Dataset, config: SplitConfig) -> Split:
    """The protocol that fits the data set: time split where time is meaningful, baskets otherwise."""
    fn = time_split if dataset.has_time else basket_split
    return fn(dataset.interactions, dataset.items[S.ITEM_ID], config)


def default_salt(dataset_name: str) -> str:
    """The salt a data set gets when none was chosen: fixed per data set, so every machine draws the same split."""
    return f"recsys-split-v1:{dataset_name}"


def tuning_fold(split: Split, catalog: pd.DataFrame) -> np.ndarray:
    """Catalog indices (sorted) of the split's tuning-fold items that have training interactions: the
    warm items the tuning steps hide and treat as new (an item nobody trained on is cold already)."""
    trained = set(split.part(TRAIN)[S.ITEM_ID])
    return np.flatnonzero(catalog[S.ITEM_ID].map(lambda i: i in split.tuning_items and i in trained).to_numpy(dtype=bool))


def fine_tuning_part(split: Split) -> pd.DataFrame:
    """The training pairs the encoder and the fusion projection learn from: the training part without the
    tuning fold's items, so cold-start choices (`cold_weight`, the fusion variant) are judged on items the
    vectors have never learned, as real new items will be."""
    train = split.part(TRAIN)
    return train[~train[S.ITEM_ID].isin(split.tuning_items)]


def validation_candidates(split: Split, item_ids: list[str], max_items: int) -> np.ndarray:
    """Catalog indices (sorted) that fine-tuning's validation ranks over: the whole catalog when it has at
    most `max_items` items (or `max_items` is 0); otherwise every item of a validation query or target plus
    the other items with the smallest keyed hash of their id, up to `max_items` in all (more when the
    queries and targets alone hold more). Each validation re-embeds these items, so this bounds its cost
    on a large catalog; the final evaluation still ranks the whole catalog."""
    if not max_items or len(item_ids) <= max_items:
        return np.arange(len(item_ids))
    queries, targets = split.queries_and_targets(VAL)
    needed = {i for items in (*queries.values(), *targets.values()) for i in items}
    index = {item: i for i, item in enumerate(item_ids)}
    keep = np.zeros(len(item_ids), dtype=bool)
    keep[[index[i] for i in needed if i in index]] = True
    rest = np.flatnonzero(~keep)
    room = max(max_items - int(keep.sum()), 0)
    if room:
        hashes = keyed_hash64(f"validation-candidates:{split.salt or split.protocol}".encode(), [item_ids[i] for i in rest])
        keep[rest[np.argsort(hashes, kind="stable")[:room]]] = True
    return np.flatnonzero(keep)


def train_popularity(split: Split, item_ids: list[str]) -> np.ndarray:
    """Training interactions per item, in `item_ids` order."""
    return split.part(TRAIN)[S.ITEM_ID].value_counts().reindex(item_ids, fill_value=0).to_numpy()
