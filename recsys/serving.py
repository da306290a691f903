"""The registered model: an MLflow pyfunc that recommends related items.

Input: a DataFrame with an `item_id` column (items of the catalog) and/or a `text` column (any
product text, e.g. a new item not in the catalog: it is embedded by the packaged encoder, so new
items have no cold-start hole). Output: one row per (query, rank) with the recommended item, its
title and score. `params={"k": 10}` sets how many.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

CATALOG_ARTIFACT = "catalog"
ENCODER_ARTIFACT = "encoder"


def save_catalog(path: Path, item_ids: list[str], titles: list[str], vectors: np.ndarray) -> Path:
    """Write the item vectors with their ids and titles as one .npz file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, item_ids=np.array(item_ids, dtype=str), titles=np.array(titles, dtype=str), vectors=vectors.astype(np.float32))
    return path


class ItemRecommender(mlflow.pyfunc.PythonModel):
    """Related items by cosine similarity of fine-tuned item vectors; new items embedded from text."""

    def load_context(self, context: Any) -> None:
        data = np.load(context.artifacts[CATALOG_ARTIFACT])
        self.item_ids = data["item_ids"].tolist()
        self.titles = data["titles"].tolist()
        self.vectors = data["vectors"]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self._encoder_path = context.artifacts.get(ENCODER_ARTIFACT)
        self._encoder = None  # loaded on the first text query only: id queries need no torch

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            from recsys.encoder import TextEncoder

            self._encoder = TextEncoder(self._encoder_path)
        return self._encoder.encode(texts, progress=False)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        frame = pd.DataFrame(model_input)
        ids = frame["item_id"] if "item_id" in frame else pd.Series([None] * len(frame))
        texts = frame["text"] if "text" in frame else pd.Series([None] * len(frame))
        query_vecs = np.zeros((len(frame), self.vectors.shape[1]), dtype=np.float32)
        exclude: list[int | None] = []
        need_text = []
        for row, (item_id, text) in enumerate(zip(ids, texts, strict=True)):
            if item_id is not None and not pd.isna(item_id) and str(item_id) in self.index:
                query_vecs[row] = self.vectors[self.index[str(item_id)]]
                exclude.append(self.index[str(item_id)])
            elif text is not None and not pd.isna(text) and str(text).strip():
                need_text.append(row)
                exclude.append(None)
            else:
                raise ValueError(f"row {row}: item_id {item_id!r} is not in the catalog and no `text` was given to embed")
        if need_text:
            query_vecs[need_text] = self._embed_text([str(texts.iloc[r]) for r in need_text])
        scores = query_vecs @ self.vectors.T
        rows = []
        for row in range(len(frame)):
            if exclude[row] is not None:
                scores[row, exclude[row]] = -np.inf
            top = np.argsort(-scores[row], kind="stable")[:k]
            top = top[np.isfinite(scores[row, top])]  # never the query item, even when k >= catalog size
            for rank, j in enumerate(top, start=1):
                rows.append(
                    {
                        "query": row,
                        "query_item_id": None if exclude[row] is None else self.item_ids[exclude[row]],
                        "rank": rank,
                        "item_id": self.item_ids[j],
                        "title": self.titles[j],
                        "score": float(scores[row, j]),
                    }
                )
        return pd.DataFrame(rows)
