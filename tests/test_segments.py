"""Recall per segment of the test targets (category, popularity), candidate vs champion: hand-computed."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation import plots
from recsys.evaluation.segments import category_labels, segment_hits, segment_recall


def test_segment_recall_of_a_hand_computed_case() -> None:
    # 5 items in 2 segments: items 0, 1, 2 in "a"; 3, 4 in "b"; two users
    labels = np.array([0, 0, 0, 1, 1])
    targets = [np.array([0, 3]), np.array([1, 2, 4])]
    candidate = np.array([[0, 1], [2, 4]])  # user 0 finds 0 (a); user 1 finds 2 (a) and 4 (b)
    champion = np.array([[3, -1], [1, 0]])  # user 0 finds 3 (b); user 1 finds 1 (a)
    hits, total = segment_hits(candidate, targets, labels, 2)
    assert hits.tolist() == [2, 1] and total.tolist() == [3, 2]
    out = segment_recall({"candidate": candidate, "champion": champion}, targets, labels, ["a", "b"])
    assert out == {"a": {"targets": 3, "candidate": pytest.approx(2 / 3), "champion": pytest.approx(1 / 3)}, "b": {"targets": 2, "candidate": 0.5, "champion": 0.5}}


def test_segments_without_targets_are_left_out_and_small_categories_pooled() -> None:
    # targets' categories: y twice, (none) once (seen first), x once: the two kept are y and (none), x joins z in "other"
    labels, names = category_labels(["x", "y", None, "z", "y"], [np.array([1, 4, 2]), np.array([0])], max_categories=2)
    assert names == ["(none)", "y", "other"] and labels.tolist() == [2, 1, 0, 2, 1]
    # a segment no target falls in is left out
    out = segment_recall({"candidate": np.array([[1, 3]])}, [np.array([1, 4])], labels, names)
    assert out == {"y": {"targets": 2, "candidate": 0.5}}


def test_segment_plot_is_a_png(tmp_path) -> None:
    segments = {
        "category": {"Bags": {"targets": 30, "candidate": 0.4, "champion": 0.3}, "Kitchen": {"targets": 12, "candidate": 0.1, "champion": 0.2}},
        "popularity": {"head": {"targets": 20, "candidate": 0.5, "champion": 0.5}, "tail": {"targets": 5, "candidate": 0.0, "champion": 0.2}},
    }
    path = plots.segment_comparison(segments, "recall_at_10", tmp_path / "segments.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
