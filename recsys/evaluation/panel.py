"""What the candidate would show shoppers, next to the champion: a fixed panel of requests, side by side.

The panel is chosen by rule from the catalog and its training popularity: the best sellers, items around
the median popularity (mid-range), the least sold (long tail), new items (no sales), and a few carts of
two sold items. Ties and samples are broken by a keyed hash of the item id (no seed, no order
dependence). The first version of a model that is reviewed fixes the panel (the promotion stage stores it
on the registered model), so every later version is shown the same requests.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

GROUPS = ("best sellers", "mid-range", "long tail", "new items")
PER_GROUP = 3
CARTS = 3
PANEL_K = 5
BUNDLE_K = 3


def choose_panel(item_ids: Sequence[str], popularity: np.ndarray, salt: str = "panel", per_group: int = PER_GROUP, carts: int = CARTS) -> dict[str, Any]:
    """{"items": [{"group", "item_id"}], "carts": [[id, id], ...]} chosen by the rules above."""
    popularity = np.asarray(popularity, dtype=np.float64)
    from recsys.data.splits import salted_hash64

    h = salted_hash64(salt, "review-panel", item_ids)
    sold = np.flatnonzero(popularity > 0)
    unsold = np.flatnonzero(popularity <= 0)
    taken: set[int] = set()

    def pick(candidates: np.ndarray, key: np.ndarray) -> list[int]:
        order = candidates[np.lexsort((h[candidates], key))]  # by key, then by hash
        out = [int(i) for i in order if int(i) not in taken][:per_group]
        taken.update(out)
        return out

    groups: dict[str, list[int]] = {}
    groups["best sellers"] = pick(sold, -popularity[sold])
    median = float(np.median(popularity[sold])) if len(sold) else 0.0
    groups["mid-range"] = pick(sold, np.abs(popularity[sold] - median))
    groups["long tail"] = pick(sold, popularity[sold])
    groups["new items"] = pick(unsold, np.zeros(len(unsold)))
    rest = [int(i) for i in sold[np.argsort(h[sold], kind="stable")] if int(i) not in taken]
    cart_rows = [[item_ids[rest[2 * c]], item_ids[rest[2 * c + 1]]] for c in range(min(carts, len(rest) // 2))]
    return {"items": [{"group": g, "item_id": item_ids[i]} for g in GROUPS for i in groups[g]], "carts": cart_rows}


def keep_known(panel: dict[str, Any], item_ids: Sequence[str]) -> dict[str, Any]:
    """The stored panel, minus the items a later catalog no longer has (said in the view, not replaced)."""
    known = set(item_ids)
    return {
        "items": [e for e in panel.get("items", []) if e["item_id"] in known],
        "carts": [c for c in panel.get("carts", []) if all(i in known for i in c)],
        "dropped": [e["item_id"] for e in panel.get("items", []) if e["item_id"] not in known] + [",".join(c) for c in panel.get("carts", []) if not all(i in known for i in c)],
    }


def _entries(model: Any, frame: pd.DataFrame, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Per request row, the model's items with title, price, category and reasons."""
    out = model.predict(None, frame, params=params)
    rows: list[list[dict[str, Any]]] = [[] for _ in range(len(frame))]
    behaviour = getattr(model, "behaviour", None)
    for r in out.itertuples(index=False):
        if r.item_id is None or (isinstance(r.item_id, float) and np.isnan(r.item_id)):
            continue
        j = model.index.get(r.item_id)
        price = float(behaviour.prices[j]) if behaviour is not None and j is not None else float("nan")
        category = behaviour.categories[j] if behaviour is not None and j is not None else None
        rows[int(r.request)].append(
            {"item_id": r.item_id, "title": r.title, "price": None if np.isnan(price) else round(price, 2), "category": category, "reasons": r.reasons}
        )
    return rows


def changes(candidate: list[dict[str, Any]], champion: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Per candidate item: "new", "same" or "up 2" / "down 1" (rank moved); and the champion's items dropped."""
    before = {e["item_id"]: r for r, e in enumerate(champion)}
    labels = []
    for r, e in enumerate(candidate):
        if e["item_id"] not in before:
            labels.append("new")
        elif before[e["item_id"]] == r:
            labels.append("same")
        else:
            moved = before[e["item_id"]] - r
            labels.append(f"up {moved}" if moved > 0 else f"down {-moved}")
    now = {e["item_id"] for e in candidate}
    return labels, [e["item_id"] for e in champion if e["item_id"] not in now]


def side_by_side(panel: dict[str, Any], candidate: Any, champion: Any | None, k: int = PANEL_K, bundle_k: int = BUNDLE_K) -> dict[str, Any]:
    """Both versions' answers to every panel request (related items, cart completion, cart bundles)."""
    requests: list[dict[str, Any]] = []
    items = panel.get("items", [])
    carts = panel.get("carts", [])
    kinds = [
        ("related items", pd.DataFrame({"item_id": [e["item_id"] for e in items]}), {"k": k}, [e["group"] for e in items], [e["item_id"] for e in items]),
        ("complete the cart", pd.DataFrame({"cart": [",".join(c) for c in carts]}), {"k": k}, ["cart"] * len(carts), [",".join(c) for c in carts]),
        ("bundle", pd.DataFrame({"cart": [",".join(c) for c in carts]}), {"k": bundle_k, "mode": "bundle"}, ["cart"] * len(carts), [",".join(c) for c in carts]),
    ]
    for kind, frame, params, groups, keys in kinds:
        if not len(frame):
            continue
        cand = _entries(candidate, frame, params)
        champ = _entries(champion, frame, params) if champion is not None else [None] * len(frame)
        for n in range(len(frame)):
            labels, dropped = changes(cand[n], champ[n]) if champ[n] is not None else ([""] * len(cand[n]), [])
            query_titles = [candidate.titles[candidate.index[i]] for i in keys[n].split(",") if i in candidate.index]
            requests.append(
                {"kind": kind, "group": groups[n], "query": keys[n], "query_titles": query_titles, "candidate": cand[n], "champion": champ[n], "changes": labels, "dropped": dropped}
            )
    return {"requests": requests, "dropped_from_panel": panel.get("dropped", []), "k": k}


def _list_html(entries: list[dict[str, Any]] | None, labels: list[str] | None = None, dropped: Sequence[str] = ()) -> str:
    if entries is None:
        return "<td class='name'>(no champion)</td>"
    cells = []
    for r, e in enumerate(entries):
        label = labels[r] if labels else ""
        cls = {"new": "new", "same": ""}.get(label, "moved" if label else "")
        extra = ", ".join(x for x in (f"{e['price']:.2f}" if e.get("price") is not None else "", e.get("category") or "") if x)
        badge = f" <span class='chg {cls}'>{html.escape(label)}</span>" if label and label != "same" else ""
        cells.append(
            f"<li class='{cls}'><b>{html.escape(str(e['title']))}</b>{badge}<br><small>{html.escape(extra)}</small>"
            f"<br><small class='why'>{html.escape(str(e['reasons'] or ''))}</small></li>"
        )
    if dropped:
        cells.append(f"<li class='dropped'><small>dropped: {html.escape(', '.join(dropped))}</small></li>")
    return "<td class='name'><ol>" + "".join(cells) + "</ol></td>"


def panel_html(view: dict[str, Any]) -> str:
    """The side-by-side section (a fragment: the report embeds it, `panel_page` wraps it)."""
    rows = []
    for req in view["requests"]:
        titles = ", ".join(req["query_titles"]) or req["query"]
        rows.append(
            f"<tr><td class='name'><b>{html.escape(req['kind'])}</b><br><small>{html.escape(req['group'])}</small><br>{html.escape(titles)}</td>"
            + _list_html(req["champion"])
            + _list_html(req["candidate"], req["changes"], req["dropped"] if req["champion"] is not None else ())
            + "</tr>"
        )
    note = f"<p>Panel items no longer in the catalog: {html.escape(', '.join(view['dropped_from_panel']))}</p>" if view.get("dropped_from_panel") else ""
    return (
        "<table class='panel'><tr><th class='name'>request</th><th class='name'>champion</th><th class='name'>candidate (changes highlighted)</th></tr>"
        + "".join(rows)
        + "</table>"
        + note
    )


PANEL_CSS = (
    "table.panel td { vertical-align: top; } table.panel ol { margin: 0; padding-left: 1.2em; } "
    "li.new { background: #ebfbee; } li.moved { background: #fff9db; } li.dropped { color: #c92a2a; list-style: none; } "
    ".chg { font-size: .75em; padding: 0 .3em; border-radius: .3em; background: #dee2e6; } .chg.new { background: #b2f2bb; } "
    ".chg.moved { background: #ffec99; } small.why { color: #495057; }"
)


def panel_page(view: dict[str, Any], title: str) -> str:
    """A self-contained HTML page of the panel (the artifact the registry version links to)."""
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; } "
        "table { border-collapse: collapse; } th, td { border: 1px solid #dee2e6; padding: .3em .6em; text-align: left; } th { background: #f1f3f5; } "
        f"{PANEL_CSS}</style></head><body><h1>{html.escape(title)}</h1>{panel_html(view)}</body></html>"
    )
