"""Item documents: the text the encoder reads for each item.

Built from every text field the item has; missing fields are skipped (never printed as "nan").
An item with no text at all gets its id, so it still has a (weak) vector.
"""

from __future__ import annotations

import pandas as pd

from recsys import schema as S


def _present(value: object) -> bool:
    return value is not None and not pd.isna(value) and str(value).strip() != ""


def item_document(row: dict) -> str:
    """One item's document: "title. description. Category: a > b. Tags: x, y." """
    parts: list[str] = []
    for col in (S.TITLE, S.DESCRIPTION):
        if _present(row.get(col)):
            text = str(row[col]).strip().rstrip(".").strip()
            if text:  # a field that is only punctuation says nothing
                parts.append(text)
    if _present(row.get(S.CATEGORY)):
        parts.append("Category: " + str(row[S.CATEGORY]).strip())
    if _present(row.get(S.TAGS)):
        tags = [t.strip() for t in str(row[S.TAGS]).split(S.TAG_SEP) if t.strip()]
        if tags:
            parts.append("Tags: " + ", ".join(tags))
    if not parts:
        parts.append(f"item {row[S.ITEM_ID]}")
    return ". ".join(parts) + "."


def item_documents(items: pd.DataFrame) -> list[str]:
    """Documents for every item, in the frame's row order."""
    return [item_document(r) for r in items.to_dict("records")]
