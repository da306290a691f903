"""The registered model: an MLflow pyfunc that recommends items with the hybrid recommender.

Input: a DataFrame with one request per row, any of
  `item_id` — a catalog item: related items;
  `cart`    — comma-separated catalog item ids: items that complete the basket;
  `history` — a user's comma-separated item ids, oldest first: weighted by recency and count
              (`recsys.model.recommend.history_weights`) and ranked with the trend prior where the model has one;
  `text`    — any product text, e.g. a new item not in the catalog: it is embedded by the packaged
              (fine-tuned) encoder and scored through its nearest catalog items, so new items have no
              cold-start hole.
A request with none of these (a new user) gets the most popular items.
Output: one row per (request, rank) with the item, its title, score and reasons (the evidence of the
signals that scored it). `params`: `k` (default 10); `mode` = "recommend" (default) or "bundle" (compose a
complete-the-basket bundle of k items); `budget` (bundles only; 0 = none); `diversity` (0 = pure
relevance; 0.1-0.5 lifts less popular items, see `recsys.model.recommend.diversify`); `explain` (bundles:
adds a `breakdown` column, the JSON of each pick's objective terms — relevance, complementarity,
preference, diversity, redundancy, total).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from recsys.run import (  # the model directory's entries: named once, by the run store
    ANN_ARTIFACT,
    BEHAVIOUR_ARTIFACT,
    CATALOG_ARTIFACT,
    CONFIG_ARTIFACT,
    ENCODER_ARTIFACT,
    FUSION_ARTIFACT,
    HYBRID_ARTIFACT,
    HYBRID_CONFIG_ARTIFACT,
    MODEL_DIR_FILES,
    REFERENCE_ARTIFACT,
)

# with an ANN index, a vector query takes this many candidates (plus the excluded items) from the index
# and ranks only those: enough room for the diversity re-ranking to lift less popular items
ANN_CANDIDATES = 200
REASON_SEP = " | "
TREND_REASON_TOP = 0.05  # the trend prior is cited for items among this share of the catalog's recent sellers
TEXT_REASON_NEIGHBOURS = 5  # a text request's co-purchase reasons cite its 5 nearest catalog items
# a text's warm neighbours are looked for among this many ANN candidates at most, then by an exact scan
TEXT_NEIGHBOUR_FETCH = 5_000
OUTPUT_COLUMNS = ["request", "rank", "item_id", "title", "score", "reasons"]
BREAKDOWN_TERMS = ("relevance", "complementarity", "preference", "diversity", "redundancy", "total")


def save_catalog(path: Path, item_ids: list[str], titles: list[str], vectors: np.ndarray) -> Path:
    """Write the item ids, titles and text vectors as one .npz file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, item_ids=np.array(item_ids, dtype=str), titles=np.array(titles, dtype=str), vectors=vectors.astype(np.float32))
    return path


def save_behaviour(path: Path, catalog: "Any") -> Path:
    """Write what bundles and reasons read (a `recsys.model.bundles.BundleCatalog` minus ids, titles, vectors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cooc = catalog.cooc.tocsr()
    # customer counts: whole numbers, stored as such (half the bytes of the float64 kept in memory)
    data = cooc.data.astype(np.uint32) if len(cooc.data) and cooc.data.max() < 2**32 and np.all(cooc.data == np.round(cooc.data)) else cooc.data
    np.savez(
        path,
        categories=np.array(["" if c is None else c for c in catalog.categories], dtype=str),
        prices=catalog.prices,
        cooc_data=data,
        cooc_min_count=np.array(catalog.cooc_min_count),
        cooc_indices=cooc.indices,
        cooc_indptr=cooc.indptr,
        item_counts=catalog.item_counts,
        n_customers=np.array(catalog.n_customers),
        is_new=catalog.is_new,
    )
    return path


def _load_behaviour(path: str, item_ids: list[str], titles: list[str], vectors: np.ndarray):
    import scipy.sparse as sp

    from recsys.model.bundles import BundleCatalog

    d = np.load(path)
    n = len(item_ids)
    return BundleCatalog(
        item_ids=item_ids,
        titles=titles,
        vectors=vectors,
        categories=[c or None for c in d["categories"].tolist()],
        prices=d["prices"],
        cooc=sp.csr_matrix((d["cooc_data"], d["cooc_indices"], d["cooc_indptr"]), shape=(n, n)),
        item_counts=d["item_counts"],
        n_customers=int(d["n_customers"]),
        is_new=d["is_new"],
        cooc_min_count=int(d["cooc_min_count"]) if "cooc_min_count" in d else 1,  # versions before pruning kept every pair
    )


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and str(value).strip() != ""




def _is_history(idx: Any) -> bool:
    """Whether a parsed query is a customer's weighted history (a float weight per catalog item, `_query`), not
    item indices: the query kind ranked with the trend prior."""
    return isinstance(idx, np.ndarray) and idx.dtype != np.int64


class ItemRecommender(mlflow.pyfunc.PythonModel):
    """Related items / basket completion from the hybrid model; new items scored from their text.

    The model is one self-contained directory (`runs/<run>/model/`): the encoder's weights and
    tokenizer (`encoder/`), the item ids, titles and vectors (`catalog.npz`), the item-item weights and
    cold-start state (`hybrid.npz`, `hybrid.json`), the co-purchase statistics, prices and categories
    (`behaviour.npz`), the fusion adaptor when the run kept one (`fusion/`), a FAISS index over the item
    vectors for large catalogs (`ann/`) and the run's configuration (`config.json`). `ItemRecommender.load(path)` loads it
    in one call; MLflow logs the same files as the pyfunc's artifacts.
    """

    @classmethod
    def load(cls, model_dir: str | Path) -> "ItemRecommender":
        """Load a model directory without MLflow."""
        from types import SimpleNamespace

        root = Path(model_dir)
        artifacts = {key: str(root / name) for key, name in MODEL_DIR_FILES.items() if (root / name).exists()}
        model = cls()
        model.load_context(SimpleNamespace(artifacts=artifacts))
        return model

    @classmethod
    def artifacts_of(cls, model_dir: str | Path) -> dict[str, str]:
        """The MLflow artifacts dict of a model directory."""
        root = Path(model_dir)
        return {key: str(root / name) for key, name in MODEL_DIR_FILES.items() if (root / name).exists()}

    def load_context(self, context: Any) -> None:
        from recsys.model.hybrid import HybridConfig, model_from_arrays

        data = np.load(context.artifacts[CATALOG_ARTIFACT])
        self.item_ids = data["item_ids"].tolist()
        self.titles = data["titles"].tolist()
        self.vectors = data["vectors"]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.model = None
        if HYBRID_ARTIFACT in context.artifacts:
            hybrid = np.load(context.artifacts[HYBRID_ARTIFACT])
            info = json.loads(Path(context.artifacts[HYBRID_CONFIG_ARTIFACT]).read_text())
            cfg = HybridConfig.from_dict(info["config"])
            self.model = model_from_arrays(hybrid, cfg)
        self.behaviour = None
        if BEHAVIOUR_ARTIFACT in context.artifacts:
            self.behaviour = _load_behaviour(context.artifacts[BEHAVIOUR_ARTIFACT], self.item_ids, self.titles, self.vectors)
        self.reference_dir = context.artifacts.get(REFERENCE_ARTIFACT)
        self.document_template = None
        if CONFIG_ARTIFACT in context.artifacts:
            run_config = json.loads(Path(context.artifacts[CONFIG_ARTIFACT]).read_text())
            template = run_config.get("pipeline", {}).get("documents.template")
            self.document_template = tuple(template) if template else None
        self._encoder_path = context.artifacts.get(ENCODER_ARTIFACT)
        self._fusion_path = context.artifacts.get(FUSION_ARTIFACT)
        self._encoder = None  # loaded on the first text request only: id requests need no torch
        self._fusion = None
        self._ann_path = context.artifacts.get(ANN_ARTIFACT)
        self._ann = None  # loaded on the first vector search
        self._trend_sorted: tuple[np.ndarray, np.ndarray] | None = None  # (the prior, sorted): the trend reason's ranks

    def _embed_text(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            from recsys.model.encoder import TextEncoder

            self._encoder = TextEncoder(self._encoder_path)
            if self._fusion_path is not None:
                from recsys.model.fusion import FusedEncoder

                self._fusion = FusedEncoder.load(self._fusion_path)
        vectors = self._encoder.encode(texts, progress=False)
        # catalog vectors are fused with the items' numeric signals: a text known only by its words
        # enters the same space as a new item (unknown price and rating, no sales yet)
        return self._fusion.fuse_new(vectors) if self._fusion is not None else vectors

    def _nearest(self, query: np.ndarray, m: int, exclude: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The m catalog items closest to a unit query vector (scores, indices), `exclude` left out:
        through the FAISS index where the model has one (large catalogs), else an exact matrix product."""
        m = min(m, len(self.item_ids) - len(set(exclude)))
        if m <= 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        if self._ann_path is not None:
            if self._ann is None:
                from recsys.model.ann import VectorIndex

                self._ann = VectorIndex.load(self._ann_path)
            scores, ids = self._ann.search(query[None, :].astype(np.float32), m, [np.asarray(exclude, dtype=np.int64)])
            keep = ids[0] >= 0
            return scores[0][keep].astype(np.float64), ids[0][keep]
        sims = self.vectors @ query
        sims[exclude] = -np.inf
        top = np.argpartition(-sims, m - 1)[:m]
        return sims[top].astype(np.float64), top

    def _ids(self, value: Any) -> list[str]:
        return [i.strip() for i in str(value).split(",") if i.strip()] if _present(value) else []

    def _query(self, row: int, item_id: Any, cart: Any, text: Any, history: Any = None) -> tuple[Any, np.ndarray | None, list[int]]:
        """(catalog item indices or a dense history query, or a text vector) and the items to exclude."""
        ids = self._ids(item_id) + self._ids(cart)
        past = self._ids(history)
        unknown = [i for i in ids + past if i not in self.index]
        if (ids or past) and not unknown:
            if past and not ids:
                from recsys.model.recommend import history_weights

                idx = [self.index[i] for i in past]
                return history_weights(idx, len(self.item_ids)), None, sorted(set(idx))
            idx = np.array([self.index[i] for i in ids + past], dtype=np.int64)
            return idx, None, sorted(set(idx.tolist()))
        if _present(text):
            return None, self._embed_text([str(text)])[0], []
        if unknown:
            raise ValueError(f"request row {row}: item ids {unknown} are not in the catalog, and no `text` was given to embed")
        return None, None, []  # a new user: nothing to go on

    def _popularity(self) -> np.ndarray:
        return self.behaviour.item_counts if self.behaviour is not None else np.zeros(len(self.item_ids))

    def _scores(self, idx: Any, vec: np.ndarray | None, k: int = 10, exclude: list[int] | None = None, text_near: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Scores over the catalog; with an ANN index, vector queries score only the index's candidates
        (everything else -inf). `text_near`: a text's `_text_neighbours`, when the caller has them."""
        if idx is None and vec is None:  # a new user: the most popular items
            return np.array(self._popularity(), dtype=np.float64)
        dense = _is_history(idx)
        if self.model is None:  # text-only model: cosine to the (weighted) mean vector
            q = (idx @ self.vectors if dense else self.vectors[idx].mean(axis=0)) if idx is not None else vec
            q = (q / max(np.linalg.norm(q), 1e-12)).astype(np.float32)
            if self._ann_path is None:
                return self.vectors @ q
            out = np.full(len(self.item_ids), -np.inf)
            scores, top = self._nearest(q, max(k, ANN_CANDIDATES), exclude or [])
            out[top] = scores
            return out
        if dense:  # a customer's history: the query kind the trend prior was validated on
            return self.model.scores_from_dense(idx[None, :], with_trend=True)[0]
        if idx is not None:  # an item or a cart: no trend prior (`HybridModel.scores`)
            return self.model.scores([idx])[0]
        # a new item: a soft query over its nearest catalog items in text space
        sims, top = text_near if text_near is not None else self._text_neighbours(vec)
        w = np.exp((sims - sims.max()) / self.model.config.cold_temperature)
        q = np.zeros(len(self.item_ids), dtype=np.float32)
        q[top] = w / w.sum()
        return self.model.scores_from_dense(q[None, :])[0]

    def _text_neighbours(self, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, indices) of the catalog items a text is scored through (the hybrid's cold query):
        the nearest items with training behaviour, as the model propagates its own cold items from warm
        neighbours (`recsys.model.hybrid.cold_neighbours`). A never-sold neighbour carries no behaviour: a
        text scored through never-sold items only would get no co-purchase signal (or reason) at all. The ANN
        candidates are over-fetched until enough of them are warm; past that, an exact scan of the warm items."""
        query = vec.astype(np.float32)
        warm = ~np.asarray(self.model.is_cold, dtype=bool)
        m = min(int(self.model.config.cold_neighbours), int(warm.sum()))
        if m == 0:  # nothing has behaviour: the nearest items are all there is
            return self._nearest(query, self.model.config.cold_neighbours, [])
        fetch = 4 * m
        while self._ann_path is not None and fetch <= TEXT_NEIGHBOUR_FETCH:  # exact search: one scan below
            sims, top = self._nearest(query, fetch, [])
            keep = warm[top]
            if keep.sum() >= m or len(top) == len(self.item_ids):
                order = np.argsort(-sims[keep], kind="stable")[:m]
                return sims[keep][order], top[keep][order]
            fetch *= 8
        idx = np.flatnonzero(warm)
        sims = (self.vectors[idx] @ query).astype(np.float64)
        top = np.argpartition(-sims, m - 1)[:m]
        return sims[top], idx[top]

    def score_batch(self, queries: "list[np.ndarray]", with_trend: bool = False) -> np.ndarray:
        """Dense [n_queries, n_items] scores for baskets given as arrays of catalog indices (empty = a
        new user: popularity); for offline evaluation. `with_trend`: rank with the trend prior, for queries that
        are customers' histories (`HybridModel.scores`)."""
        out = np.empty((len(queries), len(self.item_ids)), dtype=np.float64)
        filled = [j for j, q in enumerate(queries) if len(q)]
        if filled and self.model is not None:
            out[filled] = self.model.scores([np.asarray(queries[j], dtype=np.int64) for j in filled], with_trend=with_trend)
        elif filled:
            from recsys.evaluation.evaluate import vector_scorer

            out[filled] = vector_scorer(self.vectors)([np.asarray(queries[j], dtype=np.int64) for j in filled])
        empty = [j for j, q in enumerate(queries) if not len(q)]
        if empty:
            out[empty] = np.asarray(self._popularity(), dtype=np.float64)[None, :]
        return out

    def _reasons(self, j: int, cart: list[int], text_vec: np.ndarray | None, pair_weight: float | None = None, text_neighbours: list[int] | None = None, trend: bool = False) -> str:
        """Reasons for a recommended item, each true of that item, from the signals that scored it
        (`pair_weight`: the model's `pair_weight(cart, j)` when the caller already has it;
        `text_neighbours`: for a text request, the catalog items closest to the text, through which
        the behaviour part scored it)."""
        if self.behaviour is None:
            return ""
        from recsys.model.bundles import NEW_ITEM_REASON, explain_item

        if not cart and text_vec is None:
            return f"popular: bought by {int(self.behaviour.item_counts[j])} customers"
        if not cart:  # a text request: the new item's nearest catalog item is the evidence
            sim = float(self.vectors[j] @ text_vec)
            reasons = [f"close in meaning to the given description (similarity {sim:.2f})"]
            near = [n for n in (text_neighbours or []) if n != j]
            if near and self.model is not None and not self.behaviour.is_new[j]:
                # the behaviour part scored j through the text's nearest items: cite their co-purchases
                cf = self.model.pair_weight(near, j)
                if cf > 0:
                    reasons += explain_item(self.behaviour, j, near, {"complementarity": cf})
            if self.behaviour.is_new[j]:
                reasons.append(NEW_ITEM_REASON)
            return REASON_SEP.join(reasons)
        # co-purchase evidence counts only where the behaviour weights actually favour the item
        if self.model is None:
            cf = 0.0
        else:
            cf = self.model.pair_weight(cart, j) if pair_weight is None else pair_weight
        rel = float(self.model.config.text_score_weight) if self.model is not None else 1.0
        breakdown = {"complementarity": max(cf, 0.0), "relevance": rel}
        return REASON_SEP.join(explain_item(self.behaviour, j, cart, breakdown) + (self._trend_reason(j) if trend else []))

    def _trend_reason(self, j: int) -> list[str]:
        """The trend prior's reason (`recsys.model.trend`), where the model ranks with one and item j is among the
        `TREND_REASON_TOP` share of the catalog the most customers bought in the prior's window."""
        model = self.model
        if model is None or model.trend is None or not model.config.trend_weight:
            return []
        cached = self._trend_sorted
        if cached is None or cached[0] is not model.trend:  # sorted once per prior (the gate attaches another)
            cached = self._trend_sorted = (model.trend, np.sort(model.trend))
        ordered = cached[1]
        above = len(ordered) - int(np.searchsorted(ordered, model.trend[j], side="right"))
        top = 100.0 * (above + 1) / len(ordered)
        if top > 100.0 * TREND_REASON_TOP:
            return []
        share = f"{top:.1g}" if top < 1 else f"{top:.0f}"
        return [f"selling now: in the top {share}% of the catalog by customers in the last {model.config.trend_days:g} days"]

    def _bundle_rows(self, row: int, cart: list[int], k: int, budget: float | None) -> list[dict]:
        from recsys.model.bundles import BundleConfig, cart_preference, compose_bundle

        if self.behaviour is None:
            raise ValueError("this model version carries no behaviour statistics: bundles need a newer version")
        if not cart:
            raise ValueError(f"request row {row}: a bundle needs an item_id or a cart from the catalog")
        if budget is not None and np.isnan(self.behaviour.prices).all():
            raise ValueError(
                "this model's catalog has no prices, so a budget cannot be applied: ask without one (drop --budget, "
                "or params.budget = 0), or train on items with a `price` column (e.g. the completejourney data set)"
            )
        bundle = compose_bundle(self.behaviour, cart, BundleConfig(k=k, budget=budget), preference=cart_preference(self.model, cart))
        rows = []
        for rank, item in enumerate(bundle.items, start=1):
            rows.append(
                {
                    "request": row,
                    "rank": rank,
                    "item_id": item.item_id,
                    "title": item.title,
                    "score": float(item.breakdown["total"]),
                    "reasons": REASON_SEP.join(item.reasons),
                    "breakdown": json.dumps({term: round(float(item.breakdown.get(term, 0.0)), 4) for term in BREAKDOWN_TERMS}),
                }
            )
        if not rows and bundle.note:
            rows.append({"request": row, "rank": 0, "item_id": None, "title": None, "score": float("nan"), "reasons": bundle.note})
        return rows

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        k = int(params.get("k", 10))
        mode = str(params.get("mode", "recommend"))
        budget = float(params.get("budget", 0.0) or 0.0) or None  # 0 = no budget
        diversity = float(params.get("diversity", 0.0) or 0.0)
        explain = str(params.get("explain", False)).lower() in ("1", "true", "yes")
        if mode not in ("recommend", "bundle"):
            raise ValueError(f"params.mode must be 'recommend' or 'bundle', got {mode!r}")
        frame = pd.DataFrame(model_input).reset_index(drop=True)
        col = lambda name: frame[name] if name in frame else pd.Series([None] * len(frame))  # noqa: E731
        rows = []
        for row, (item_id, cart, text, history) in enumerate(zip(col("item_id"), col("cart"), col("text"), col("history"), strict=True)):
            idx, vec, exclude = self._query(row, item_id, cart, text, history)
            # a text is scored through its nearest items: found once, for the scores and the reasons
            text_near = self._text_neighbours(vec) if vec is not None and self.model is not None and mode != "bundle" else None
            near = text_near[1][np.argsort(-text_near[0], kind="stable")][:TEXT_REASON_NEIGHBOURS].tolist() if text_near is not None else None
            if mode == "bundle":
                rows += self._bundle_rows(row, exclude, k, budget)
                continue
            scores = np.array(self._scores(idx, vec, k, exclude, text_near), dtype=np.float64)
            scores[exclude] = -np.inf
            if diversity and self.behaviour is not None:
                from recsys.model.recommend import diversify

                scores = diversify(scores, self._popularity(), diversity)
            top = np.argsort(-scores, kind="stable")[:k]
            top = top[np.isfinite(scores[top])]  # never a query item, even when k >= catalog size
            for rank, j in enumerate(top, start=1):
                rows.append(
                    {
                        "request": row,
                        "rank": rank,
                        "item_id": self.item_ids[j],
                        "title": self.titles[j],
                        "score": float(scores[j]),
                        "reasons": self._reasons(int(j), exclude, vec, text_neighbours=near, trend=_is_history(idx)),
                    }
                )
        columns = OUTPUT_COLUMNS + (["breakdown"] if explain else [])
        return pd.DataFrame(rows, columns=columns)
