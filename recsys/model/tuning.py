"""Bracketed grid search: a tuned value is only trusted when it is not at the edge of what was tried.

A grid whose best value is its first or last one says nothing about whether a better value lies
beyond it, so a baseline tuned that way can be silently under-tuned. `bracketed_search` scores a 1-D
grid, and while the best value is the smallest (largest) one tried it adds the next value below
(above) in the grid's own edge step - geometric for log grids, arithmetic otherwise - up to a hard
bound. The result says whether the optimum ended up bracketed or still sits on an edge.

Rule for bounds: a bound is *natural* when the parameter cannot go past it at all - a weight of 0
(the term switched off), or "all neighbours" for a neighbourhood size. An optimum on a natural bound
is a real answer and counts as bracketed on that side. An optimum on an artificial bound (the search
limit, e.g. l2 = 10^6) or on the edge of a grid that cannot be extended is an edge hit.

`coordinate_search` tunes several parameters one at a time with the same 1-D search (cheap where
every evaluation is an n x n fit; a full cross product is not). Every score is cached by point, so
repeating a search whose context did not change costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_SIGNIFICANT = 4  # extended values are rounded so that the logs and the record keys stay readable


def format_value(value: float) -> str:
    """Positional, trimmed text of a value ('1000000', '0.25'): never '1e+06', whose '+' MLflow
    metric names do not allow."""
    return np.format_float_positional(float(value), trim="-")


@dataclass(frozen=True)
class Grid:
    """A 1-D search grid and the hard bounds it may be extended to.

    `step` overrides the extension step (a ratio > 1 for log grids, a difference > 0 otherwise); by
    default it is the grid's own step at the edge being extended (the ratio of its two outermost
    positive values on a log grid). A grid with no step on a side cannot be extended on that side.
    """

    values: tuple[float, ...]
    lower: float
    upper: float
    log: bool = True
    integer: bool = False
    natural_lower: bool = False  # see the module docstring: an optimum on a natural bound is bracketed
    natural_upper: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in self.values)
        object.__setattr__(self, "values", values)
        if not values:
            raise ValueError("a grid needs at least one value")
        if any(b <= a for a, b in zip(values, values[1:])):
            raise ValueError(f"grid values must be strictly increasing: {values}")
        if not self.lower <= values[0] or not values[-1] <= self.upper:
            raise ValueError(f"grid values {values} outside the bounds [{self.lower}, {self.upper}]")
        if self.log and self.lower < 0:
            raise ValueError("a log grid cannot reach below 0")
        if self.integer and not all(float(v).is_integer() for v in (*values, self.lower, self.upper)):
            raise ValueError("an integer grid needs integer values and bounds")
        if self.step is not None and (self.step <= 1 if self.log else self.step <= 0):
            raise ValueError(f"step {self.step} does not move outward")

    def edge_step(self, direction: int) -> float | None:
        """The extension step below (direction -1) or above (+1) the grid; None where there is none."""
        if self.step is not None:
            return self.step
        vals = [v for v in self.values if v > 0] if self.log else list(self.values)
        if len(vals) < 2:
            return None
        a, b = (vals[0], vals[1]) if direction < 0 else (vals[-2], vals[-1])
        return b / a if self.log else b - a

    def next_value(self, edge: float, direction: int) -> float | None:
        """The value after `edge` going down (-1) or up (+1), clipped to the bound; None at the bound
        or where the grid has no step on that side."""
        bound = self.lower if direction < 0 else self.upper
        step = self.edge_step(direction)
        if edge == bound or step is None or (self.log and edge <= 0):
            return None
        if self.log:
            new = edge * step if direction > 0 else edge / step
        else:
            new = edge + direction * step
        if self.integer:
            new = float(round(new))
            if (new - edge) * direction < 1:  # a small ratio on small integers must still move
                new = edge + direction
        else:
            new = float(f"{new:.{_SIGNIFICANT}g}")
        return max(new, self.lower) if direction < 0 else min(new, self.upper)

    def edge_of(self, chosen: float, tried: list[float] | tuple[float, ...]) -> str | None:
        """'lower' / 'upper' when `chosen` has no tried value beyond it on that side and does not sit
        on a natural bound there; None when it is bracketed."""
        if not any(v < chosen for v in tried) and not (self.natural_lower and chosen == self.lower):
            return "lower"
        if not any(v > chosen for v in tried) and not (self.natural_upper and chosen == self.upper):
            return "upper"
        return None


def _number(value: float, integer: bool) -> float | int:
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class SearchResult:
    """One parameter's search: the chosen value, its score, every value tried and whether the
    optimum is on an edge (see the module docstring)."""

    name: str
    chosen: float
    score: float
    tried: tuple[tuple[float, float], ...]  # (value, score), ascending value
    edge: str | None  # "lower" / "upper": not bracketed on that side; None: bracketed
    extended: int = 0  # values added beyond the initial grid
    integer: bool = False

    @property
    def edge_hit(self) -> bool:
        return self.edge is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (plain Python numbers)."""
        return {
            "chosen": _number(self.chosen, self.integer),
            "score": float(self.score),
            "edge_hit": self.edge_hit,
            "edge": self.edge,
            "extended": int(self.extended),
            "tried": [[_number(v, self.integer), float(s)] for v, s in self.tried],
        }

    def to_record(self) -> dict[str, Any]:
        """The same record shape as `CoordinateResult.to_record`, for a single parameter."""
        return {
            "chosen": {self.name: _number(self.chosen, self.integer)},
            "score": float(self.score),
            "edge_hit": {self.name: self.edge_hit},
            "converged": True,
            "rounds": 1,
            "tried": {f"{self.name}_{format_value(v)}": float(s) for v, s in self.tried},
            "searches": {self.name: self.to_dict()},
        }


def _best(scores: Mapping[float, float]) -> float:
    """Argmax; a NaN score never wins and ties go to the smaller value (deterministic)."""
    best_value, best_score = None, -math.inf
    for value in sorted(scores):
        s = scores[value]
        if best_value is None or (not math.isnan(s) and s > best_score):
            best_value, best_score = value, (s if not math.isnan(s) else -math.inf)
    assert best_value is not None
    return best_value


def bracketed_search(score_fn: Callable[[float], float], grid: Grid, name: str = "value") -> SearchResult:
    """Score every grid value (higher is better), then extend past whichever edge holds the best
    value until it is bracketed or the bound is reached. Each value is scored once."""
    scores: dict[float, float] = {}

    def score(value: float) -> None:
        if value not in scores:
            scores[value] = float(score_fn(_number(value, grid.integer)))

    for value in grid.values:
        score(value)
    extended = 0
    while True:
        best, tried = _best(scores), sorted(scores)
        nxt = grid.next_value(best, -1) if best == tried[0] else None
        if nxt is None and best == tried[-1]:
            nxt = grid.next_value(best, +1)
        if nxt is None or nxt in scores:
            break
        score(nxt)
        extended += 1
    tried = sorted(scores)
    return SearchResult(
        name=name,
        chosen=best,
        score=scores[best],
        tried=tuple((v, scores[v]) for v in tried),
        edge=grid.edge_of(best, tried),
        extended=extended,
        integer=grid.integer,
    )


def judged_result(name: str, scores: Mapping[float, float], chosen: float, grid: Grid) -> SearchResult:
    """A fixed-grid choice made by another rule (e.g. the largest value within a tolerance of the
    best), judged for edges the same way as a bracketed search."""
    tried = sorted(float(v) for v in scores)
    return SearchResult(
        name=name,
        chosen=float(chosen),
        score=float(scores[chosen]),
        tried=tuple((v, float(scores[v])) for v in tried),
        edge=grid.edge_of(float(chosen), tried),
        integer=grid.integer,
    )


@dataclass(frozen=True)
class CoordinateResult:
    """Several parameters tuned one at a time: the chosen point, its score, each parameter's last
    1-D search and every point scored."""

    names: tuple[str, ...]
    chosen: dict[str, float]
    score: float
    searches: dict[str, SearchResult]  # each parameter's last search (at the others' final values when converged)
    tried: tuple[tuple[tuple[float, ...], float], ...] = field(default=())  # (point in `names` order, score), evaluation order
    rounds: int = 1
    converged: bool = True  # every parameter's last search was made at the others' final values

    @property
    def edge_hit(self) -> dict[str, bool]:
        return {n: self.searches[n].edge_hit for n in self.names}

    def point_key(self, point: tuple[float, ...]) -> str:
        return ".".join(f"{n}_{format_value(v)}" for n, v in zip(self.names, point))

    def to_record(self) -> dict[str, Any]:
        """JSON-able record: chosen, score, edge_hit per parameter, converged, rounds, `tried` as flat
        {"a_1.b_30": score} (valid MLflow metric names) and each parameter's search."""
        return {
            "chosen": {n: _number(self.chosen[n], self.searches[n].integer) for n in self.names},
            "score": float(self.score),
            "edge_hit": self.edge_hit,
            "converged": bool(self.converged),
            "rounds": int(self.rounds),
            "tried": {self.point_key(p): float(s) for p, s in self.tried},
            "searches": {n: self.searches[n].to_dict() for n in self.names},
        }


def coordinate_search(
    score_fn: Callable[[dict[str, float]], float],
    grids: Mapping[str, Grid],
    start: Mapping[str, float],
    max_rounds: int = 2,
) -> CoordinateResult:
    """Tune the parameters in `grids` order, each with `bracketed_search` while the others stay at
    their current values (from `start` in the first round), for up to `max_rounds` rounds or until
    every parameter's search was made at the others' final values.

    `score_fn` gets {name: value} for every parameter (integer grids give ints). Scores are cached by
    point, so a round in which nothing moved costs no evaluation.
    """
    if max_rounds < 1:
        raise ValueError("max_rounds must be at least 1")
    names = tuple(grids)
    point = {n: float(start[n]) for n in names}
    cache: dict[tuple[float, ...], float] = {}
    order: list[tuple[float, ...]] = []
    searches: dict[str, SearchResult] = {}
    contexts: dict[str, tuple[float, ...]] = {}

    def score(candidate: dict[str, float]) -> float:
        key = tuple(float(candidate[n]) for n in names)
        if key not in cache:
            cache[key] = float(score_fn({n: _number(candidate[n], grids[n].integer) for n in names}))
            order.append(key)
        return cache[key]

    def others(name: str) -> tuple[float, ...]:
        return tuple(point[n] for n in names if n != name)

    rounds, converged = 0, False
    while rounds < max_rounds and not converged:
        rounds += 1
        for name, grid in grids.items():
            if contexts.get(name) == others(name):
                continue  # searched at exactly these values already: it would choose the same
            contexts[name] = others(name)
            searches[name] = bracketed_search(lambda v, n=name: score({**point, n: v}), grid, name)
            point[name] = searches[name].chosen
        converged = all(contexts[n] == others(n) for n in names)
    final = tuple(point[n] for n in names)
    return CoordinateResult(
        names=names,
        chosen=dict(point),
        score=cache[final],
        searches=searches,
        tried=tuple((p, cache[p]) for p in order),
        rounds=rounds,
        converged=converged,
    )
