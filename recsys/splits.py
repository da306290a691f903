"""Evaluation splits: the basket-completion protocol for set data, a global time split for data with time.

A split is one frame of distinct (user_id, item_id, part) rows, where part is one of:
  train - what the model may fit on
  val   - validation targets (query: the user's train items)
  held  - observed items kept out of training because they are cold (they are part of the test query)
  test  - test targets (query: the user's train + val + held items)
plus the set of cold-start items (never seen in training).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys import schema as S
from recsys.config import SplitConfig

TRAIN, VAL, HELD, TEST = "train", "val", "held", "test"
PART = "part"


@dataclass(frozen=True)
class Split:
    pairs: pd.DataFrame  # columns: user_id, item_id, part (+ timestamp for the time split)
    cold_items: frozenset[str]
    protocol: str  # "basket" or "time"

    def part(self, name: str) -> pd.DataFrame:
        return self.pairs[self.pairs[PART] == name]

    def queries_and_targets(self, stage: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Per-user query items and target items for stage "val" or "test".

        Users without any target or without any query item are left out (nothing to ask or to find).
        """
        query_parts = {VAL: (TRAIN,), TEST: (TRAIN, VAL, HELD)}[stage]
        q = self.pairs[self.pairs[PART].isin(query_parts)]
        t = self.pairs[self.pairs[PART] == stage]
        queries = q.groupby(S.USER_ID, sort=True)[S.ITEM_ID].agg(list).to_dict()
        targets = t.groupby(S.USER_ID, sort=True)[S.ITEM_ID].agg(list).to_dict()
        users = sorted(set(queries) & set(targets))
        return {u: queries[u] for u in users}, {u: targets[u] for u in users}

    def summary(self) -> dict[str, int]:
        counts = self.pairs[PART].value_counts().to_dict()
        return {
            "protocol": self.protocol,
            "users": int(self.pairs[S.USER_ID].nunique()),
            "cold_items": len(self.cold_items),
            **{f"pairs_{p}": int(counts.get(p, 0)) for p in (TRAIN, VAL, HELD, TEST)},
        }


def _holdout_mask(users: pd.Series, share: float, rng: np.random.Generator) -> np.ndarray:
    """Per user, mark round(share * n) of the rows (at least 1) as held out, chosen at random."""
    keys = rng.random(len(users))
    order = pd.DataFrame({"u": users.to_numpy(), "k": keys}).sort_values(["u", "k"], kind="stable")
    rank = order.groupby("u", sort=False).cumcount().to_numpy()
    size = order.groupby("u", sort=False)["u"].transform("size").to_numpy()
    n_out = np.maximum(1, np.rint(share * size)).astype(int)
    mask = np.zeros(len(users), dtype=bool)
    mask[order.index.to_numpy()] = rank < n_out
    return mask


def basket_split(interactions: pd.DataFrame, items: pd.Series, config: SplitConfig) -> Split:
    """The basket-completion protocol for data without time (e.g. online-retail).

    Drop users with fewer than `min_items_per_user` distinct items; mark `cold_item_share` of the
    catalog (seeded) as cold; hold out `holdout_share` of each user's items (at least 1, cold items
    included) as test targets. The rest is the observed basket (the test query); training sees it
    minus every cold item, and validation is carved out of training the same way.
    """
    rng = np.random.default_rng(config.seed)
    pairs = interactions[[S.USER_ID, S.ITEM_ID]].drop_duplicates().sort_values([S.USER_ID, S.ITEM_ID], kind="stable")
    sizes = pairs.groupby(S.USER_ID)[S.ITEM_ID].transform("size")
    pairs = pairs[sizes >= config.min_items_per_user].reset_index(drop=True)

    catalog = np.array(sorted(set(items.astype(str))))
    n_cold = int(round(config.cold_item_share * len(catalog)))
    cold = frozenset(rng.choice(catalog, size=n_cold, replace=False).tolist()) if n_cold else frozenset()

    part = np.full(len(pairs), TRAIN, dtype=object)
    is_test = _holdout_mask(pairs[S.USER_ID], config.holdout_share, rng)
    part[is_test] = TEST
    is_cold = pairs[S.ITEM_ID].isin(cold).to_numpy()
    part[~is_test & is_cold] = HELD

    # validation: the same holdout, inside what training sees
    train_idx = np.flatnonzero(part == TRAIN)
    if len(train_idx):
        is_val = _holdout_mask(pairs[S.USER_ID].iloc[train_idx].reset_index(drop=True), config.holdout_share, rng)
        part[train_idx[is_val]] = VAL
    return Split(pairs=pairs.assign(**{PART: part}), cold_items=cold, protocol="basket")


def time_split(interactions: pd.DataFrame, items: pd.Series, config: SplitConfig) -> Split:
    """A global time split (e.g. movielens-100k): the last `time_test_share` of interactions by time
    are test, the `time_val_share` before them validation, the rest train. Targets are items new to
    the user; cold items are those with no training interaction."""
    ev = interactions[[S.USER_ID, S.ITEM_ID, S.TIMESTAMP]].sort_values([S.TIMESTAMP, S.USER_ID, S.ITEM_ID], kind="stable")
    n = len(ev)
    n_test = int(round(config.time_test_share * n))
    n_val = int(round(config.time_val_share * n))
    part = np.full(n, TRAIN, dtype=object)
    part[n - n_test - n_val : n - n_test] = VAL
    part[n - n_test :] = TEST
    ev = ev.assign(**{PART: part})
    # one row per (user, item): its first occurrence decides its part, so a target is always new to the user
    # (the timestamp stays: training uses the order of each user's history)
    first = ev.drop_duplicates([S.USER_ID, S.ITEM_ID], keep="first")[[S.USER_ID, S.ITEM_ID, PART, S.TIMESTAMP]].reset_index(drop=True)
    trained = set(first.loc[first[PART] == TRAIN, S.ITEM_ID])
    cold = frozenset(set(items.astype(str)) - trained)
    return Split(pairs=first, cold_items=cold, protocol="time")


def make_split(dataset: S.Dataset, config: SplitConfig) -> Split:
    """The protocol that fits the data set: time split where time is meaningful, baskets otherwise."""
    fn = time_split if dataset.has_time else basket_split
    return fn(dataset.interactions, dataset.items[S.ITEM_ID], config)
