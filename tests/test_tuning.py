"""Golden tests of recsys.model.tuning: bracketed 1-D grid search and the coordinate-wise search.

Score functions with known optima; every expected grid extension is written out by hand.
"""

from __future__ import annotations

import json
import math

import pytest

from recsys.model.tuning import CoordinateResult, Grid, bracketed_search, coordinate_search, format_value, judged_result


def _counting(fn):
    calls: list[float] = []

    def score(v):
        calls.append(v)
        return fn(v)

    return score, calls


def _values(result) -> list[float]:
    return [v for v, _ in result.tried]


# --- bracketed_search ----------------------------------------------------------------------------------


def test_peak_past_the_top_edge_is_extended_and_bracketed():
    # peak at 1000; initial grid (1, 10, 100): best 100 is the top edge -> 1000 (x10) -> still the top -> 10^4 -> bracketed
    score, calls = _counting(lambda v: -((math.log10(v) - 3.0) ** 2))
    r = bracketed_search(score, Grid(values=(1.0, 10.0, 100.0), lower=0.01, upper=1e6), "l2")
    assert (r.name, r.chosen, r.score, r.edge, r.edge_hit, r.extended) == ("l2", 1000.0, 0.0, None, False, 2)
    assert _values(r) == [1.0, 10.0, 100.0, 1000.0, 10000.0]
    assert calls == [1.0, 10.0, 100.0, 1000.0, 10000.0]  # every value scored once, in this order
    assert dict(r.tried)[10000.0] == -1.0


def test_peak_past_the_bottom_edge_is_extended_in_the_edge_ratio():
    # grid (1, 3, 10): the bottom ratio is 3 -> 1/3 = 0.3333 (4 significant digits), then 0.1111
    peak = math.log10(0.3333)
    r = bracketed_search(lambda v: -abs(math.log10(v) - peak), Grid(values=(1.0, 3.0, 10.0), lower=0.01, upper=100.0))
    assert r.chosen == 0.3333 and not r.edge_hit and r.extended == 2
    assert _values(r) == [0.1111, 0.3333, 1.0, 3.0, 10.0]


def test_monotone_score_runs_to_the_bound_and_reports_the_edge():
    r = bracketed_search(lambda v: v, Grid(values=(1.0, 10.0), lower=0.1, upper=1e6))
    assert r.chosen == 1e6 and r.edge == "upper" and r.edge_hit
    assert _values(r) == [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]
    r = bracketed_search(lambda v: -v, Grid(values=(1.0, 10.0), lower=0.1, upper=1e6))
    assert r.chosen == 0.1 and r.edge == "lower"
    assert _values(r) == [0.1, 1.0, 10.0]


def test_the_last_step_is_clipped_to_the_bound():
    r = bracketed_search(lambda v: v, Grid(values=(1.0, 10.0), lower=1.0, upper=50.0))
    assert _values(r) == [1.0, 10.0, 50.0]  # 100 clipped to 50
    assert r.chosen == 50.0 and r.edge == "upper"


def test_natural_lower_bound_is_a_real_answer():
    grid = Grid(values=(0.0, 50.0, 200.0, 800.0), lower=0.0, upper=1e5, natural_lower=True)
    r = bracketed_search(lambda v: -v, grid)
    assert r.chosen == 0.0 and not r.edge_hit and r.extended == 0
    # the same grid where 0 is only a search limit: an edge hit (and nothing below 0 to try)
    r = bracketed_search(lambda v: -v, Grid(values=(0.0, 50.0, 200.0, 800.0), lower=0.0, upper=1e5))
    assert r.chosen == 0.0 and r.edge == "lower" and r.extended == 0
    # the top of a log grid starting at 0 extends by the ratio of its two largest values: 800 * 4
    r = bracketed_search(lambda v: -abs(v - 3200.0), grid)
    assert r.chosen == 3200.0 and not r.edge_hit and _values(r)[-2:] == [3200.0, 12800.0]


def test_natural_upper_bound():
    r = bracketed_search(lambda v: v, Grid(values=(1.0, 2.0), lower=1.0, upper=4.0, natural_upper=True))
    assert r.chosen == 4.0 and not r.edge_hit and _values(r) == [1.0, 2.0, 4.0]


def test_linear_grid_extends_by_its_edge_difference():
    # (0.2, 0.4, 0.6) step 0.2, peak 0.85: 0.8 then 1.0 (the bound)
    r = bracketed_search(lambda v: -abs(v - 0.85), Grid(values=(0.2, 0.4, 0.6), lower=0.0, upper=1.0, log=False))
    assert r.chosen == 0.8 and not r.edge_hit
    assert _values(r) == [0.2, 0.4, 0.6, 0.8, 1.0]


def test_integer_grid():
    seen: list = []

    def score(v):
        seen.append(v)
        return -abs(v - 16)

    grid = Grid(values=(2, 4, 8), lower=1, upper=20, integer=True, natural_lower=True, natural_upper=True)
    r = bracketed_search(score, grid)
    assert r.chosen == 16 and not r.edge_hit
    assert _values(r) == [2, 4, 8, 16, 20]  # 32 clipped to 20
    assert all(type(v) is int for v in seen)  # the score function gets ints
    assert r.to_dict()["chosen"] == 16 and type(r.to_dict()["chosen"]) is int
    r = bracketed_search(lambda v: -v, grid)
    assert r.chosen == 1 and not r.edge_hit and _values(r) == [1, 2, 4, 8]  # 2 / 2 = 1, the natural bound
    # a small ratio on small integers still moves by at least 1: (10, 11) goes down 10 -> 9 -> 8
    r = bracketed_search(lambda v: -abs(v - 9), Grid(values=(10, 11), lower=1, upper=20, integer=True))
    assert r.chosen == 9 and _values(r) == [8, 9, 10, 11]


def test_one_value_grid_cannot_extend_unless_given_a_step():
    r = bracketed_search(lambda v: v, Grid(values=(5.0,), lower=0.1, upper=1e3))
    assert r.chosen == 5.0 and r.edge_hit and _values(r) == [5.0]
    r = bracketed_search(lambda v: -abs(v - 20.0), Grid(values=(5.0,), lower=0.1, upper=1e3, step=2.0))
    assert r.chosen == 20.0 and not r.edge_hit and _values(r) == [2.5, 5.0, 10.0, 20.0, 40.0]


def test_ties_go_to_the_smaller_value_and_nan_never_wins():
    r = bracketed_search(lambda v: {1.0: 0.5, 2.0: 1.0, 4.0: 1.0, 8.0: 0.0}[v], Grid(values=(1.0, 2.0, 4.0, 8.0), lower=1.0, upper=8.0))
    assert r.chosen == 2.0 and not r.edge_hit
    r = bracketed_search(lambda v: {1.0: math.nan, 2.0: 1.0, 4.0: 0.0}[v], Grid(values=(1.0, 2.0, 4.0), lower=1.0, upper=4.0))
    assert r.chosen == 2.0


@pytest.mark.parametrize(
    "kw",
    [
        dict(values=()),
        dict(values=(2.0, 1.0)),
        dict(values=(1.0, 1.0)),
        dict(values=(0.5, 1.0)),  # below the lower bound
        dict(values=(1.0, 200.0)),  # above the upper bound
        dict(values=(1.5, 2.0), integer=True),
        dict(values=(1.0, 2.0), step=1.0),  # a log step must be a ratio > 1
    ],
)
def test_grid_rejects_bad_definitions(kw):
    with pytest.raises(ValueError):
        Grid(**{"lower": 1.0, "upper": 100.0, **kw})


def test_judged_result_edges():
    grid = Grid(values=(0.0, 0.5, 1.0), lower=0.0, upper=1.0, log=False, natural_lower=True)
    scores = {0.0: 0.1, 0.5: 0.3, 1.0: 0.2}
    assert judged_result("w", scores, 1.0, grid).edge == "upper"
    assert judged_result("w", scores, 0.5, grid).edge is None
    r = judged_result("w", scores, 0.0, grid)
    assert r.edge is None and r.score == 0.1 and r.tried == ((0.0, 0.1), (0.5, 0.3), (1.0, 0.2))


def test_records_are_json_and_mlflow_safe():
    r = bracketed_search(lambda v: v, Grid(values=(1.0, 10.0), lower=0.1, upper=1e6), "l2")
    rec = r.to_record()
    assert json.loads(json.dumps(rec)) == rec
    assert rec["chosen"] == {"l2": 1e6} and rec["edge_hit"] == {"l2": True} and rec["converged"] is True
    assert set(rec["tried"]) == {"l2_1", "l2_10", "l2_100", "l2_1000", "l2_10000", "l2_100000", "l2_1000000"}
    assert rec["searches"]["l2"]["tried"][-1] == [1e6, 1e6]
    assert [format_value(v) for v in (1e6, 0.25, 1.0, 0.3333, 1e-5)] == ["1000000", "0.25", "1", "0.3333", "0.00001"]


# --- coordinate_search -------------------------------------------------------------------------------


def _separable(p):
    return -abs(math.log10(p["a"]) - 1.0) - abs(p["b"] - 3.0)


GRIDS = {
    "a": Grid(values=(1.0, 10.0, 100.0), lower=0.1, upper=1e4),
    "b": Grid(values=(0.0, 1.0, 2.0), lower=0.0, upper=10.0, log=False, natural_lower=True),
}


def test_coordinate_search_separable():
    calls: list[dict] = []
    r = coordinate_search(lambda p: calls.append(dict(p)) or _separable(p), GRIDS, start={"a": 1.0, "b": 0.0})
    # round 1: a at b=0 -> 10 (inside); b at a=10: (0, 1, 2) -> 2 is the top -> 3 -> 4 -> b = 3
    # round 2: a at b=3 -> 10 again (3 new points); b's context a=10 unchanged -> skipped; converged
    assert r.chosen == {"a": 10.0, "b": 3.0} and r.score == 0.0
    assert (r.converged, r.rounds) == (True, 2)
    assert r.edge_hit == {"a": False, "b": False}
    points = [(c["a"], c["b"]) for c in calls]
    assert points == [(1.0, 0.0), (10.0, 0.0), (100.0, 0.0), (10.0, 1.0), (10.0, 2.0), (10.0, 3.0), (10.0, 4.0), (1.0, 3.0), (100.0, 3.0)]
    assert len(set(points)) == len(points)  # every point scored once: (10, 0) and (10, 3) came from the cache
    assert [p for p, _ in r.tried] == points
    assert r.searches["b"].extended == 2


def test_coordinate_search_record():
    r = coordinate_search(_separable, GRIDS, start={"a": 1.0, "b": 0.0})
    rec = r.to_record()
    assert json.loads(json.dumps(rec)) == rec
    assert rec["chosen"] == {"a": 10.0, "b": 3.0} and rec["edge_hit"] == {"a": False, "b": False}
    assert rec["tried"]["a_10.b_3"] == 0.0 and rec["tried"]["a_100.b_0"] == -4.0
    assert set(rec["searches"]) == {"a", "b"} and rec["searches"]["b"]["chosen"] == 3.0


def test_coordinate_search_reports_an_unconverged_stop():
    # a ridge each search climbs one step along: with x = log10(a), f = min(x, b + 1) + min(b, x);
    # for a fixed b the best x is b + 1, for a fixed x the best b is x (ties go to the smaller value)
    def ridge(p):
        x = round(math.log10(p["a"]))
        return min(x, p["b"] + 1) + min(p["b"], x)

    grids = {
        "a": Grid(values=(1.0, 10.0, 100.0), lower=1.0, upper=1e3),
        "b": Grid(values=(0.0, 1.0, 2.0), lower=0.0, upper=3.0, log=False, natural_lower=True, natural_upper=True),
    }
    r = coordinate_search(ridge, grids, start={"a": 1.0, "b": 0.0}, max_rounds=1)
    # a at b=0: x = 0, 1, 2 score 0, 1, 1 -> a = 10; b at a=10: 1, 2, 2 -> b = 1. a's search was at b=0: not converged
    assert r.chosen == {"a": 10.0, "b": 1.0} and (r.rounds, r.converged) == (1, False)
    r = coordinate_search(ridge, grids, start={"a": 1.0, "b": 0.0}, max_rounds=10)
    # round 2 -> (100, 2); round 3 -> (1000, 3), both bounds; round 4 re-searches a at b=3 (same) and stops
    assert r.chosen == {"a": 1000.0, "b": 3.0} and r.score == 6.0
    assert (r.rounds, r.converged) == (4, True)
    assert r.edge_hit == {"a": True, "b": False}  # a = 1000 is a search limit; b = 3 the natural top
    assert r.searches["a"].edge == "upper"


def test_coordinate_search_rejects_zero_rounds():
    with pytest.raises(ValueError):
        coordinate_search(_separable, GRIDS, start={"a": 1.0, "b": 0.0}, max_rounds=0)


def test_coordinate_result_point_key():
    r = CoordinateResult(names=("a", "b"), chosen={"a": 1.0, "b": 2.0}, score=0.0, searches={})
    assert r.point_key((1e6, 0.5)) == "a_1000000.b_0.5"
