"""Lineage: what a model trained on, and excluding it from today's test data (hand-built splits)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data import schema as S
from recsys.evaluation.comparison import compare_with_champion
from recsys.config import GateConfig
from recsys.evaluation.lineage import Lineage, exclude_seen, lineage_of, pair_fingerprints
from recsys.data.splits import HELD, PART, TEST, TRAIN, VAL, Split


def _split(rows: list[tuple[str, str, str]], cold: set[str], salt: str = "s") -> Split:
    return Split(pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, PART]), frozenset(cold), "basket", salt)


# the champion's split: u1 trained on a, b; validated on c; u2 trained on a, d; x was cold for it
CHAMPION_SPLIT = _split([("u1", "a", TRAIN), ("u1", "b", TRAIN), ("u1", "c", VAL), ("u1", "x", HELD), ("u2", "a", TRAIN), ("u2", "d", TRAIN), ("u2", "e", TEST)], {"x"})
# today's split, drawn with another salt: u1's b and c moved to test (seen by the champion), e stayed test
TODAY = _split(
    [("u1", "a", TRAIN), ("u1", "b", TEST), ("u1", "c", TEST), ("u1", "x", TRAIN), ("u2", "a", TRAIN), ("u2", "d", HELD), ("u2", "e", TEST), ("u3", "a", TRAIN), ("u3", "b", TEST)],
    {"d", "y"},
    salt="t",
)


def test_lineage_records_train_and_validation_pairs_and_trained_items(tmp_path) -> None:
    lin = lineage_of(CHAMPION_SPLIT, "digest-1")
    seen = pd.DataFrame([("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "d")], columns=[S.USER_ID, S.ITEM_ID])
    assert np.array_equal(lin.seen_pairs, np.unique(pair_fingerprints(seen)))
    assert len(lin.trained_items) == 3  # a, b, d (c only in validation, x held, e test)
    again = Lineage.load(lin.save(tmp_path / "lineage"))
    assert (again.salt, again.data_digest, again.protocol) == ("s", "digest-1", "basket")
    assert np.array_equal(again.seen_pairs, lin.seen_pairs) and np.array_equal(again.trained_items, lin.trained_items)


def test_exclude_seen_drops_the_champions_pairs_and_trained_cold_items() -> None:
    fair, overlap = exclude_seen(TODAY, lineage_of(CHAMPION_SPLIT, "digest-1"))
    # u1's b (train) and c (validation) were seen by the champion; u2's e and u3's b were not
    assert overlap.to_dict() == {"test_pairs": 4, "excluded_pairs": 2, "cold_items": 2, "excluded_cold_items": 1, "salt_changed": True, "lineage_known": True}
    assert sorted(map(tuple, fair.part(TEST)[[S.USER_ID, S.ITEM_ID]].to_numpy().tolist())) == [("u2", "e"), ("u3", "b")]
    assert fair.cold_items == frozenset({"y"})  # d was trained on by the champion: not cold for it
    assert len(fair.pairs) == len(TODAY.pairs) - 2  # the query parts are left alone
    # no lineage recorded: nothing can be excluded, and the overlap says so
    same, unknown = exclude_seen(TODAY, None)
    assert same is TODAY and not unknown.lineage_known and unknown.excluded_pairs == 0


def test_comparison_scores_both_models_on_the_same_unseen_users() -> None:
    items = ["a", "b", "c", "d", "e", "x", "y"]

    def fixed(ranking: list[str]):
        scores = np.array([len(items) - ranking.index(i) if i in ranking else 0.0 for i in items], dtype=np.float64)
        return lambda queries: np.repeat(scores[None, :], len(queries), axis=0)

    good, bad = fixed(["e", "b", "c", "y", "d", "x", "a"]), fixed(["y", "d", "x", "a", "c", "b", "e"])
    gate = GateConfig(bootstrap_samples=200)
    result = compare_with_champion(items, good, bad, TODAY, lineage_of(CHAMPION_SPLIT, "digest-1"), gate, k=2, seed=1)
    # test users left: u2 (target e) and u3 (target b); u1's targets were all seen by the champion
    assert result["test_users"] == 2 and result["overlap"]["excluded_pairs"] == 2
    assert result["candidate_metrics"]["recall_at_2"] == 1.0 and result["metrics"]["recall_at_2"] == 0.0
    assert result["intervals"]["recall_at_2"] is None  # the champion's mean is 0: a relative change is not defined
