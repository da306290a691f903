"""The review panel: chosen by rule, answered by both versions side by side, changes labelled."""

from __future__ import annotations

import numpy as np

from recsys.evaluation.panel import changes, choose_panel, keep_known, panel_html, side_by_side
from test_serving_hybrid import model  # noqa: F401  (the fixture: a real ItemRecommender on six items)

IDS = [f"i{n}" for n in range(12)]
# sold: i0..i8 (popularity 90..10), unsold: i9, i10, i11
POPULARITY = np.array([90, 80, 70, 60, 50, 40, 30, 20, 10, 0, 0, 0])


def test_the_panel_is_chosen_by_rule() -> None:
    panel = choose_panel(IDS, POPULARITY, salt="m", per_group=2, carts=1)
    groups: dict[str, list[str]] = {}
    for e in panel["items"]:
        groups.setdefault(e["group"], []).append(e["item_id"])
    assert groups["best sellers"] == ["i0", "i1"]
    # median of the sold popularity = 50 (i4); next closest: i3 (60) and i5 (40) tie at 10, broken by the keyed hash
    assert groups["mid-range"][0] == "i4" and groups["mid-range"][1] in ("i3", "i5")
    assert groups["long tail"] == ["i8", "i7"]
    assert set(groups["new items"]) <= {"i9", "i10", "i11"} and len(groups["new items"]) == 2
    # carts: two sold items not shown above
    shown = {e["item_id"] for e in panel["items"]}
    assert len(panel["carts"]) == 1 and not set(panel["carts"][0]) & shown and all(POPULARITY[IDS.index(i)] > 0 for i in panel["carts"][0])
    # the same inputs give the same panel; another model name another sample of ties
    assert choose_panel(IDS, POPULARITY, salt="m", per_group=2, carts=1) == panel


def test_a_stored_panel_keeps_the_items_still_in_the_catalog() -> None:
    panel = {"items": [{"group": "best sellers", "item_id": "a"}, {"group": "long tail", "item_id": "gone"}], "carts": [["a", "b"], ["a", "gone"]]}
    kept = keep_known(panel, ["a", "b"])
    assert kept == {"items": [{"group": "best sellers", "item_id": "a"}], "carts": [["a", "b"]], "dropped": ["gone", "a,gone"]}


def test_changes_label_new_moved_and_dropped() -> None:
    champion = [{"item_id": x} for x in ("a", "b", "c", "d")]
    candidate = [{"item_id": x} for x in ("b", "a", "e", "d")]
    assert changes(candidate, champion) == (["up 1", "down 1", "new", "same"], ["c"])


def test_side_by_side_with_real_models(model) -> None:  # noqa: F811
    m, _ = model
    panel = {"items": [{"group": "best sellers", "item_id": "saucer"}, {"group": "new items", "item_id": "new_mug"}], "carts": [["mug_r", "spoon"]]}
    view = side_by_side(panel, m, m, k=3, bundle_k=2)
    kinds = [r["kind"] for r in view["requests"]]
    assert kinds == ["related items", "related items", "complete the cart", "bundle"]
    for r in view["requests"]:  # the same model on both sides: nothing changes
        assert r["changes"] == ["same"] * len(r["candidate"]) and r["dropped"] == [] and r["candidate"] == r["champion"]
    first = view["requests"][0]
    assert first["query_titles"] == ["Saucer"] and len(first["candidate"]) == 3
    assert {"item_id", "title", "price", "category", "reasons"} <= set(first["candidate"][0]) and first["candidate"][0]["price"] is not None
    # a first model has no champion column
    alone = side_by_side(panel, m, None, k=3)
    assert all(r["champion"] is None for r in alone["requests"])
    html = panel_html(alone)
    assert "(no champion)" in html and "Saucer" in html


def test_the_panel_html_escapes_titles() -> None:
    view = {"requests": [{"kind": "related items", "group": "g", "query": "x", "query_titles": ["<b>x</b>"], "candidate": [{"item_id": "y", "title": "<script>", "price": 1.0, "category": None, "reasons": "r"}], "champion": [], "changes": ["new"], "dropped": []}]}
    html = panel_html(view)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;x&lt;/b&gt;" in html
