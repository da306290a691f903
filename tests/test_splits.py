"""Golden tests of recsys.data.splits: the basket-completion protocol and the global time split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data import schema as S
from recsys.config import SplitConfig
from recsys.data.splits import HELD, PART, TEST, TRAIN, VAL, basket_split, make_split, pair_keys, stable_unit, time_split

# --- basket data: 6 users with 3..8 distinct items over a 20-item catalog -----------------------
CATALOG = [f"i{j:02d}" for j in range(20)]
BASKET_SIZES = {"u1": 3, "u2": 4, "u3": 5, "u4": 6, "u5": 7, "u6": 8}


def _basket_interactions() -> pd.DataFrame:
    rows = []
    for n, (user, size) in enumerate(BASKET_SIZES.items()):
        # user n buys items 3n .. 3n+size-1 (mod 20): overlapping baskets
        rows += [(user, CATALOG[(3 * n + j) % 20]) for j in range(size)]
    rows.append(("u6", rows[-1][1]))  # one repeated purchase: the split works on distinct (user, item) pairs
    return pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID])


INTER = _basket_interactions()
ITEMS = pd.Series(CATALOG)


def _user_items(split, user: str, parts: tuple[str, ...]) -> set[str]:
    p = split.pairs
    return set(p.loc[(p[S.USER_ID] == user) & p[PART].isin(parts), S.ITEM_ID])


@pytest.fixture(scope="module")
def split42():
    return basket_split(INTER, ITEMS, SplitConfig(salt="golden"))


def test_basket_drops_users_below_min_items(split42):
    # u1 has 3 distinct items < min_items_per_user = 4 -> dropped; u2..u6 (4..8 items) kept
    assert sorted(split42.pairs[S.USER_ID].unique()) == ["u2", "u3", "u4", "u5", "u6"]
    assert split42.protocol == "basket"


def test_basket_keeps_every_distinct_pair_once(split42):
    # 4 + 5 + 6 + 7 + 8 = 30 distinct pairs (u6's repeated purchase counted once), each in exactly one part
    assert len(split42.pairs) == 30
    assert not split42.pairs.duplicated([S.USER_ID, S.ITEM_ID]).any()
    for n, (user, size) in enumerate(BASKET_SIZES.items()):
        if size < 4:
            continue
        expected = {CATALOG[(3 * n + j) % 20] for j in range(size)}
        assert _user_items(split42, user, (TRAIN, VAL, HELD, TEST)) == expected
    assert set(split42.pairs[PART]) <= {TRAIN, VAL, HELD, TEST}


def test_keyed_hash_is_fixed_forever():
    # the assignment of every existing user of every shop hangs on these numbers: a change to the hash,
    # its key or the pair encoding re-draws all splits, so it must be a deliberate change of this test
    assert stable_unit("salt-1", "part", ["1:ai1", "u1x"]).tolist() == pytest.approx([0.55932729, 0.9835311], abs=1e-8)
    # the pair key is unambiguous: ("u1", "i2") and ("u", "1i2") differ
    assert pair_keys(pd.Series(["u1", "u"]), pd.Series(["i2", "1i2"])) == ["2:u1i2", "1:u1i2"]


def test_basket_parts_are_a_pure_function_of_the_ids_and_the_salt(split42):
    p = split42.pairs
    u = stable_unit(split42.salt, "part", pair_keys(p[S.USER_ID], p[S.ITEM_ID]))
    is_cold = p[S.ITEM_ID].isin(split42.cold_items).to_numpy()
    expected = np.where(u < 0.2, TEST, np.where(is_cold, HELD, np.where(u < 0.2 + 0.2 * 0.8, VAL, TRAIN)))
    assert p[PART].tolist() == expected.tolist()
    cold = stable_unit(split42.salt, "cold", CATALOG) < 0.1
    assert split42.cold_items == frozenset(np.array(CATALOG)[cold].tolist())


def _shop(n_users: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(f"user{u:04d}", f"item{i:03d}") for u in range(n_users) for i in rng.choice(300, size=rng.integers(4, 15), replace=False)]
    return pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID])


SHOP_ITEMS = pd.Series([f"item{i:03d}" for i in range(300)])


def _parts(split) -> dict[tuple[str, str], str]:
    p = split.pairs
    return dict(zip(zip(p[S.USER_ID], p[S.ITEM_ID]), p[PART]))


def test_basket_shares_match_the_config_on_average():
    split = basket_split(_shop(2000), SHOP_ITEMS, SplitConfig(salt="s"))
    share = split.pairs[PART].value_counts(normalize=True)
    assert share[TEST] == pytest.approx(0.2, abs=0.01)
    # validation: 20% of what is neither test nor cold
    rest = split.pairs[(split.pairs[PART] != TEST) & ~split.pairs[S.ITEM_ID].isin(split.cold_items)]
    assert (rest[PART] == VAL).mean() == pytest.approx(0.2, abs=0.01)
    assert len(split.cold_items) == pytest.approx(30, abs=12)
    assert split.tuning_items and not (split.tuning_items & split.cold_items)


def test_growing_sampling_and_reseeding_never_move_a_pair_between_parts():
    small = _shop(400)
    grown = pd.concat([small, _shop(900, seed=1).assign(**{S.USER_ID: lambda d: "new-" + d[S.USER_ID]})])
    # returning users buy more too
    grown = pd.concat([grown, pd.DataFrame({S.USER_ID: ["user0001", "user0002"], S.ITEM_ID: ["item299", "item298"]})])
    base = basket_split(small, SHOP_ITEMS, SplitConfig(salt="s", seed=42))
    for other in (
        basket_split(grown, SHOP_ITEMS, SplitConfig(salt="s", seed=42)),  # users and interactions added
        basket_split(small, SHOP_ITEMS, SplitConfig(salt="s", seed=7)),  # another training seed
        basket_split(small[small[S.USER_ID] < "user0200"], SHOP_ITEMS, SplitConfig(salt="s")),  # a sample of users
        basket_split(small, pd.concat([SHOP_ITEMS, pd.Series(["item-new"])]), SplitConfig(salt="s")),  # a new catalog item
    ):
        a, b = _parts(base), _parts(other)
        shared = set(a) & set(b)
        assert shared and all(a[key] == b[key] for key in shared)
        assert other.cold_items - {"item-new"} == base.cold_items
        assert other.tuning_items - {"item-new"} == base.tuning_items
    # a new salt re-draws: on purpose only
    other = basket_split(small, SHOP_ITEMS, SplitConfig(salt="t"))
    before = _parts(base)
    assert sum(before[key] != part for key, part in _parts(other).items()) > 0.2 * len(small)


@pytest.mark.parametrize("salt", ["a", "b", "c"])
def test_basket_cold_items(salt):
    split = basket_split(INTER, ITEMS, SplitConfig(salt=salt))
    assert split.cold_items <= set(CATALOG)
    p = split.pairs
    is_cold = p[S.ITEM_ID].isin(split.cold_items)
    # never seen by training or validation
    assert not (is_cold & p[PART].isin([TRAIN, VAL])).any()
    # an observed (not test) cold item is held: part of the test query, not of training
    assert set(p.loc[is_cold, PART]) <= {HELD, TEST}
    # and held holds only cold items
    assert p.loc[p[PART] == HELD, S.ITEM_ID].isin(split.cold_items).all()


def test_basket_queries_and_targets(split42):
    q_test, t_test = split42.queries_and_targets(TEST)
    q_val, t_val = split42.queries_and_targets(VAL)
    with_targets = sorted(set(split42.part(TEST)[S.USER_ID]))
    assert with_targets  # a user may have no test target (no quota per user), but some have
    for user in ["u2", "u3", "u4", "u5", "u6"]:
        # test: query = train + val + held, targets = test
        if user in with_targets:
            assert set(q_test[user]) == _user_items(split42, user, (TRAIN, VAL, HELD))
            assert set(t_test[user]) == _user_items(split42, user, (TEST,))
        # val: query = train only, targets = val
        if user in q_val:
            assert set(q_val[user]) == _user_items(split42, user, (TRAIN,))
            assert set(t_val[user]) == _user_items(split42, user, (VAL,))
    assert sorted(q_test) == sorted(t_test) == with_targets


def test_queries_and_targets_leave_out_users_without_query_or_target():
    from recsys.data.splits import Split

    pairs = pd.DataFrame(
        {
            S.USER_ID: ["a", "a", "b", "c", "c"],
            S.ITEM_ID: ["x", "y", "x", "y", "z"],
            PART: [TRAIN, TEST, TEST, TRAIN, VAL],
        }
    )
    split = Split(pairs=pairs, cold_items=frozenset(), protocol="basket")
    # test: a has query [x] and target [y]; b has a target but no query -> out; c has a query but no target -> out
    assert split.queries_and_targets(TEST) == ({"a": ["x"]}, {"a": ["y"]})
    # val: only c has a val target; its query is its train item
    assert split.queries_and_targets(VAL) == ({"c": ["y"]}, {"c": ["z"]})


# --- time data: 20 events at hours 0..19 (given shuffled) ----------------------------------------
T0 = pd.Timestamp("2024-01-01", tz="UTC")
TIME_EVENTS = [
    # hour, user, item
    (0, "u1", "i1"),
    (1, "u1", "i2"),
    (2, "u1", "i1"),  # a repeat inside train
    (3, "u2", "i2"),
    (4, "u2", "i3"),
    (5, "u2", "i7"),
    (6, "u3", "i1"),
    (7, "u3", "i4"),
    (8, "u3", "i5"),
    (9, "u1", "i3"),
    (10, "u2", "i4"),
    (11, "u3", "i6"),
    (12, "u1", "i5"),
    (13, "u2", "i6"),
    (14, "u3", "i2"),
    (15, "u1", "i6"),
    (16, "u3", "i8"),  # val window (hours 16, 17): item i8 is new to everyone
    (17, "u1", "i7"),  # val: i7 is new to u1 but u2 trained on it
    (18, "u1", "i1"),  # test window (hours 18, 19): u1 bought i1 in train -> never a target
    (19, "u2", "i9"),  # test: new to u2, never trained
]
TIME_CATALOG = pd.Series([f"i{j}" for j in range(1, 11)])  # i10 has no interaction at all


def _time_interactions() -> pd.DataFrame:
    df = pd.DataFrame(TIME_EVENTS, columns=["hour", S.USER_ID, S.ITEM_ID])
    df[S.TIMESTAMP] = T0 + pd.to_timedelta(df["hour"], unit="h")
    return df.drop(columns="hour").sample(frac=1.0, random_state=0).reset_index(drop=True)


def _pairs_of(split, part: str) -> set[tuple[str, str]]:
    p = split.part(part)
    return set(zip(p[S.USER_ID], p[S.ITEM_ID], strict=True))


def test_time_split_exact_parts():
    split = time_split(_time_interactions(), TIME_CATALOG, SplitConfig())
    # 20 events: test = last round(0.1 * 20) = 2 (hours 18, 19), val = the 2 before (hours 16, 17).
    # Hour 18 (u1, i1) first occurred at hour 0 -> stays train; one row per distinct (user, item).
    assert _pairs_of(split, TEST) == {("u2", "i9")}
    assert _pairs_of(split, VAL) == {("u3", "i8"), ("u1", "i7")}
    assert _pairs_of(split, TRAIN) == {
        ("u1", "i1"), ("u1", "i2"), ("u1", "i3"), ("u1", "i5"), ("u1", "i6"),
        ("u2", "i2"), ("u2", "i3"), ("u2", "i7"), ("u2", "i4"), ("u2", "i6"),
        ("u3", "i1"), ("u3", "i4"), ("u3", "i5"), ("u3", "i6"), ("u3", "i2"),
    }  # fmt: skip
    assert len(split.pairs) == 15 + 2 + 1
    assert _pairs_of(split, HELD) == set()
    assert split.protocol == "time"


def test_time_split_by_calendar_dates():
    """completejourney's protocol (months 1-10 train, 11 val, 12 test) is this rule with two dates."""
    cfg = SplitConfig(time_val_start=str(T0 + pd.Timedelta(hours=14)), time_test_start=(T0 + pd.Timedelta(hours=17)).isoformat())
    split = time_split(_time_interactions(), TIME_CATALOG, cfg)
    # hours 14-16 are validation, 17-19 test; (u1, i1) at hour 18 first occurred at hour 0: stays train
    assert _pairs_of(split, TEST) == {("u1", "i7"), ("u2", "i9")}
    assert _pairs_of(split, VAL) == {("u3", "i2"), ("u1", "i6"), ("u3", "i8")}
    assert _pairs_of(split, TRAIN) == {
        ("u1", "i1"), ("u1", "i2"), ("u1", "i3"), ("u1", "i5"),
        ("u2", "i2"), ("u2", "i3"), ("u2", "i7"), ("u2", "i4"), ("u2", "i6"),
        ("u3", "i1"), ("u3", "i4"), ("u3", "i5"), ("u3", "i6"),
    }  # fmt: skip
    # cold: items without a training row (first sold in the validation or test window, or never sold)
    assert split.cold_items == frozenset({"i8", "i9", "i10"})


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"time_val_start": "2024-01-02"}, "set together"),
        ({"time_val_start": "2024-01-02", "time_test_start": "2024-01-01"}, "must come before"),
        ({"time_val_start": "next week", "time_test_start": "2024-01-01"}, "time_val_start must be an ISO date"),
    ],
)
def test_calendar_split_settings_are_checked(fields: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SplitConfig(**fields)


def test_time_split_a_pair_first_seen_in_train_is_never_a_target():
    split = time_split(_time_interactions(), TIME_CATALOG, SplitConfig())
    targets = _pairs_of(split, TEST) | _pairs_of(split, VAL)
    assert ("u1", "i1") not in targets
    assert not (targets & _pairs_of(split, TRAIN))


def test_time_split_cold_items_are_those_without_train_rows():
    split = time_split(_time_interactions(), TIME_CATALOG, SplitConfig())
    # trained items: i1..i7; catalog i1..i10 -> cold = {i8 (val only), i9 (test only), i10 (never seen)}
    assert split.cold_items == frozenset({"i8", "i9", "i10"})


def test_time_split_queries_and_targets():
    split = time_split(_time_interactions(), TIME_CATALOG, SplitConfig())
    q, t = split.queries_and_targets(TEST)
    # only u2 has a test target; its query = its train (+ val + held: none) items
    assert list(q) == ["u2"] and t == {"u2": ["i9"]}
    assert sorted(q["u2"]) == ["i2", "i3", "i4", "i6", "i7"]
    q, t = split.queries_and_targets(VAL)
    assert {u: sorted(v) for u, v in t.items()} == {"u1": ["i7"], "u3": ["i8"]}
    assert sorted(q["u1"]) == ["i1", "i2", "i3", "i5", "i6"]
    assert sorted(q["u3"]) == ["i1", "i2", "i4", "i5", "i6"]


def test_time_split_does_not_depend_on_row_order():
    a = time_split(_time_interactions(), TIME_CATALOG, SplitConfig())
    shuffled = _time_interactions().sample(frac=1.0, random_state=5)
    b = time_split(shuffled, TIME_CATALOG, SplitConfig())
    pd.testing.assert_frame_equal(a.pairs, b.pairs)


def _dataset(interactions: pd.DataFrame, items: pd.Series, has_time: bool) -> S.Dataset:
    return S.Dataset(
        name="t",
        items=S.to_canonical_items(pd.DataFrame({S.ITEM_ID: items, S.TITLE: items})),
        interactions=S.to_canonical_interactions(interactions.assign(**{S.EVENT: "purchase"})),
        has_time=has_time,
        has_text=True,
        source="test",
    )


def test_make_split_picks_the_protocol_by_has_time():
    timed = make_split(_dataset(_time_interactions(), TIME_CATALOG, has_time=True), SplitConfig())
    assert timed.protocol == "time"
    assert timed.cold_items == frozenset({"i8", "i9", "i10"})
    untimed = make_split(_dataset(INTER, ITEMS, has_time=False), SplitConfig(seed=42))
    assert untimed.protocol == "basket"
    expected = basket_split(INTER, ITEMS, SplitConfig(seed=42))
    assert untimed.cold_items == expected.cold_items
    assert (untimed.pairs[PART].to_numpy() == expected.pairs[PART].to_numpy()).all()


def _many_users_split(max_eval_users: int, drop: int = 0):
    """40 users with 2 train and 1 val and 1 test item each; `drop`: remove the test pairs of the first users."""
    from recsys.data.splits import Split

    rows = []
    for u in range(40):
        rows += [(f"u{u:02d}", f"i{u}a", TRAIN), (f"u{u:02d}", f"i{u}b", TRAIN), (f"u{u:02d}", f"i{u}c", VAL), (f"u{u:02d}", f"i{u}d", TEST)]
    pairs = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, PART])
    pairs = pairs[~((pairs[PART] == TEST) & (pairs[S.USER_ID] < f"u{drop:02d}"))]
    return Split(pairs=pairs.reset_index(drop=True), cold_items=frozenset(), protocol="basket", salt="s", max_eval_users=max_eval_users)


def test_a_sampled_evaluation_keeps_the_same_users_for_every_stage_and_every_subset():
    from recsys.data.splits import eval_sample

    everyone = _many_users_split(0)
    assert len(everyone.queries_and_targets(TEST)[0]) == len(everyone.queries_and_targets(VAL)[0]) == 40
    sampled = _many_users_split(10)
    val, test = sampled.queries_and_targets(VAL)[0], sampled.queries_and_targets(TEST)[0]
    assert len(val) == len(test) == 10 and sorted(val) == sorted(test)  # the same users in both stages
    assert sorted(test) == eval_sample(sorted(test) + sorted(set(everyone.queries_and_targets(TEST)[0]) - set(test)), 10, "s")
    # the same call is deterministic, another salt draws other users
    assert sorted(test) == sorted(_many_users_split(10).queries_and_targets(TEST)[0])
    assert eval_sample([f"u{u:02d}" for u in range(40)], 10, "another") != sorted(test)
    # the gate's fair split drops pairs: the sampled users that still have targets stay sampled
    fair = _many_users_split(10, drop=20)
    kept = set(fair.queries_and_targets(TEST)[0])
    assert len(kept) == 10 and kept >= {u for u in test if u >= "u20"}
    assert sampled.summary()["eval_sample"] == 10 and "eval_sample" not in everyone.summary()
    with pytest.raises(ValueError, match="max_eval_users"):
        SplitConfig(max_eval_users=-1)


def test_validation_candidates_keep_every_validation_item_and_fill_with_a_seeded_sample():
    from recsys.data.splits import validation_candidates

    split = _many_users_split(0)  # 40 users: i{u}a, i{u}b train, i{u}c val, i{u}d test
    catalog = sorted({f"i{u}{s}" for u in range(40) for s in "abcd"}) + [f"x{j}" for j in range(20)]
    assert (validation_candidates(split, catalog, 0) == np.arange(len(catalog))).all()
    assert (validation_candidates(split, catalog, len(catalog)) == np.arange(len(catalog))).all()
    needed = {f"i{u}{s}" for u in range(40) for s in "abc"}  # validation queries (train items) and targets
    picked = validation_candidates(split, catalog, 130)
    names = {catalog[i] for i in picked}
    assert len(picked) == 130 and needed <= names and (np.diff(picked) > 0).all()
    assert picked.tolist() == validation_candidates(split, catalog, 130).tolist()  # seeded
    # the queries and targets alone exceed the cap: all of them, nothing else
    assert {catalog[i] for i in validation_candidates(split, catalog, 50)} == needed
    # the sample is drawn from the other items only: with room for 10, 10 of the 60 others
    assert len(names - needed) == 10
