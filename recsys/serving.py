"""The registered model: an MLflow pyfunc that recommends items with the hybrid recommender.

Input: a DataFrame with one request per row, any of
  `item_id` — a catalog item: related items;
  `cart`    — comma-separated catalog item ids: items that complete the basket;
  `text`    — any product text, e.g. a new item not in the catalog: it is embedded by the packaged
              (fine-tuned) encoder and scored through its nearest catalog items, so new items have no
              cold-start hole.
Output: one row per (request, rank) with the item, its title and score. `params={"k": 10}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

CATALOG_ARTIFACT = "catalog"
HYBRID_ARTIFACT = "hybrid"
HYBRID_CONFIG_ARTIFACT = "hybrid_config"
ENCODER_ARTIFACT = "encoder"


def save_catalog(path: Path, item_ids: list[str], titles: list[str], vectors: np.ndarray) -> Path:
    """Write the item ids, titles and text vectors as one .npz file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, item_ids=np.array(item_ids, dtype=str), titles=np.array(titles, dtype=str), vectors=vectors.astype(np.float32))
    return path


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and str(value).strip() != ""


class ItemRecommender(mlflow.pyfunc.PythonModel):
    """Related items / basket completion from the hybrid model; new items scored from their text."""

    def load_context(self, context: Any) -> None:
        from recsys.hybrid import HybridConfig, HybridModel

        data = np.load(context.artifacts[CATALOG_ARTIFACT])
        self.item_ids = data["item_ids"].tolist()
        self.titles = data["titles"].tolist()
        self.vectors = data["vectors"]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.model = None
        if HYBRID_ARTIFACT in context.artifacts:
            hybrid = np.load(context.artifacts[HYBRID_ARTIFACT])
            info = json.loads(Path(context.artifacts[HYBRID_CONFIG_ARTIFACT]).read_text())
            cfg = HybridConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["config"].items()})
            self.model = HybridModel(weights=hybrid["weights"], vectors=hybrid["vectors"], is_cold=hybrid["is_cold"], config=cfg)
        self._encoder_path = context.artifacts.get(ENCODER_ARTIFACT)
        self._encoder = None  # loaded on the first text request only: id requests need no torch

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            from recsys.encoder import TextEncoder

            self._encoder = TextEncoder(self._encoder_path)
        return self._encoder.encode(texts, progress=False)

    def _query(self, row: int, item_id: Any, cart: Any, text: Any) -> tuple[np.ndarray | None, np.ndarray | None, list[int]]:
        """(catalog item indices, or a text vector) and the items to exclude, for one request."""
        ids: list[str] = []
        if _present(item_id):
            ids.append(str(item_id).strip())
        if _present(cart):
            ids += [i.strip() for i in str(cart).split(",") if i.strip()]
        unknown = [i for i in ids if i not in self.index]
        if ids and not unknown:
            idx = np.array([self.index[i] for i in ids], dtype=np.int64)
            return idx, None, idx.tolist()
        if _present(text):
            return None, self._embed_text([str(text)])[0], []
        missing = f"item ids {unknown} are not in the catalog" if unknown else "no item_id, cart or text"
        raise ValueError(f"request row {row}: {missing}, and no `text` was given to embed")

    def _scores(self, idx: np.ndarray | None, vec: np.ndarray | None) -> np.ndarray:
        if self.model is None:  # text-only model: cosine to the basket's mean vector
            q = self.vectors[idx].mean(axis=0) if idx is not None else vec
            return self.vectors @ (q / max(np.linalg.norm(q), 1e-12))
        if idx is not None:
            return self.model.scores([idx])[0]
        # a new item: a soft query over its nearest catalog items in text space
        sims = self.vectors @ vec
        m = min(self.model.config.cold_neighbours, len(sims))
        top = np.argpartition(-sims, m - 1)[:m]
        w = np.exp((sims[top] - sims[top].max()) / self.model.config.cold_temperature)
        q = np.zeros(len(sims), dtype=np.float32)
        q[top] = w / w.sum()
        return self.model.scores_from_dense(q[None, :])[0]

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        frame = pd.DataFrame(model_input).reset_index(drop=True)
        col = lambda name: frame[name] if name in frame else pd.Series([None] * len(frame))  # noqa: E731
        rows = []
        for row, (item_id, cart, text) in enumerate(zip(col("item_id"), col("cart"), col("text"), strict=True)):
            idx, vec, exclude = self._query(row, item_id, cart, text)
            scores = np.array(self._scores(idx, vec), dtype=np.float64)
            scores[exclude] = -np.inf
            top = np.argsort(-scores, kind="stable")[:k]
            top = top[np.isfinite(scores[top])]  # never a query item, even when k >= catalog size
            for rank, j in enumerate(top, start=1):
                rows.append({"request": row, "rank": rank, "item_id": self.item_ids[j], "title": self.titles[j], "score": float(scores[j])})
        return pd.DataFrame(rows, columns=["request", "rank", "item_id", "title", "score"])
