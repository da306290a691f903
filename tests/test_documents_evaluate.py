"""Golden tests of recsys.data.documents (item text) and recsys.evaluation.evaluate (full-ranking evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys.data import schema as S
from recsys.data.documents import item_document, item_documents
from recsys.evaluation.evaluate import embedding_top_k, evaluate_models, popularity_top_k, query_vectors
from recsys.data.splits import HELD, PART, TEST, TRAIN, VAL, Split

# --- documents ---------------------------------------------------------------------------------


def test_document_with_every_field():
    row = {
        S.ITEM_ID: "a",
        S.TITLE: " Red mug. ",
        S.DESCRIPTION: "A big mug.",
        S.CATEGORY: "Home > Kitchen",
        S.PRICE: 3.5,
        S.TAGS: "red| mug||ceramic ",
    }
    # title and description lose their trailing "."; tags split on "|", blanks dropped, joined with ", "
    assert item_document(row) == "Red mug. A big mug. Category: Home > Kitchen. Tags: red, mug, ceramic."


@pytest.mark.parametrize("missing", [None, float("nan"), pd.NA, np.nan, "", "   "])
def test_missing_fields_are_skipped(missing):
    row = {S.ITEM_ID: "a", S.TITLE: "Red mug", S.DESCRIPTION: missing, S.CATEGORY: missing, S.TAGS: missing}
    assert item_document(row) == "Red mug."
    row = {S.ITEM_ID: "a", S.TITLE: missing, S.DESCRIPTION: "Blue plate", S.CATEGORY: missing, S.TAGS: "x|y"}
    assert item_document(row) == "Blue plate. Tags: x, y."


def test_item_without_text_gets_its_id():
    assert item_document({S.ITEM_ID: "85123A", S.TITLE: None, S.DESCRIPTION: float("nan"), S.TAGS: pd.NA}) == "item 85123A."
    # the text columns may be absent altogether
    assert item_document({S.ITEM_ID: 7}) == "item 7."


def test_item_documents_of_a_canonical_frame_in_row_order():
    items = S.to_canonical_items(
        pd.DataFrame(
            {
                S.ITEM_ID: ["b", "a", "c"],
                S.TITLE: ["Blue plate", None, None],
                S.CATEGORY: [None, "Toys", None],
                S.TAGS: [None, None, "|"],
                S.PRICE: [1.0, None, None],
            }
        )
    )
    docs = item_documents(items)
    # row order kept, missing values skipped
    assert len(docs) == 3
    assert docs[0] == "Blue plate."
    assert docs[1] == "Category: Toys."
    for doc in docs:
        for bad in ("nan", "None", "<NA>", "NaN"):
            assert bad not in doc


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({S.ITEM_ID: "c", S.TITLE: None, S.TAGS: "|"}, "item c."),  # tags with no tag in them
        ({S.ITEM_ID: "c", S.TITLE: "Mug", S.TAGS: " | "}, "Mug."),
        ({S.ITEM_ID: "c", S.TITLE: "."}, "item c."),  # a title that is only punctuation stripped away
    ],
)
def test_fields_that_are_empty_after_cleaning_are_skipped(row, expected):
    assert item_document(row) == expected


# --- evaluate: ranking primitives ------------------------------------------------------------------
# four unit vectors in 2-d: v0 at 0 deg, v1 at 30 deg, v2 at 90 deg, v3 at 180 deg
C30, S30 = math.cos(math.radians(30)), math.sin(math.radians(30))
V4 = np.array([[1.0, 0.0], [C30, S30], [0.0, 1.0], [-1.0, 0.0]])


def test_query_vectors_are_normalized_means():
    q = query_vectors(V4, [np.array([0, 2]), np.array([3])])
    # mean(v0, v2) = (0.5, 0.5) -> (1/sqrt2, 1/sqrt2); a single item is its own vector
    np.testing.assert_allclose(q, [[1 / math.sqrt(2), 1 / math.sqrt(2)], [-1.0, 0.0]], atol=1e-12)


def test_embedding_top_k_exact_and_query_items_excluded():
    queries = [np.array([0]), np.array([0, 2]), np.array([3])]
    top = embedding_top_k(V4, queries, k=2)
    # q=[0]: scores v1 = cos30 = .866, v2 = 0, v3 = -1 (v0 excluded)                 -> [1, 2]
    # q=[0,2]: q = (1,1)/sqrt2: v1 = (.866 + .5)/sqrt2 = .966, v3 = -.707 (v0, v2 excluded) -> [1, 3]
    # q=[3]: q = (-1, 0): v2 = 0, v1 = -.866, v0 = -1 (v3 excluded)                  -> [2, 1]
    assert top.tolist() == [[1, 2], [1, 3], [2, 1]]
    top3 = embedding_top_k(V4, queries[:1] + queries[2:], k=3)
    assert top3.tolist() == [[1, 2, 3], [2, 1, 0]]


def test_embedding_top_k_batches_give_the_same_answer():
    queries = [np.array([0]), np.array([0, 2]), np.array([3]), np.array([1])]
    assert embedding_top_k(V4, queries, 2, batch_size=1).tolist() == embedding_top_k(V4, queries, 2, batch_size=1024).tolist()


def test_embedding_top_k_no_queries():
    assert embedding_top_k(V4, [], k=2).shape == (0, 2)


def test_popularity_top_k_excludes_query_items():
    popularity = np.array([5, 9, 1, 7])  # order by popularity: 1 (9), 3 (7), 0 (5), 2 (1)
    top = popularity_top_k(popularity, [np.array([1]), np.array([3, 0]), np.array([2])], k=2)
    # q=[1] -> [3, 0]; q=[3,0] -> [1, 2]; q=[2] -> [1, 3]
    assert top.tolist() == [[3, 0], [1, 2], [1, 3]]


# --- evaluate_models on a hand-built split -------------------------------------------------------------
# items a b c d e; vectors chosen so that each user's targets are the nearest items to its query
ITEM_IDS = ["a", "b", "c", "d", "e"]
PERFECT = np.array(
    [
        [1.0, 0.0],  # a
        [0.96, 0.28],  # b: close to a
        [0.0, 1.0],  # c
        [0.28, 0.96],  # d: close to c
        [0.8, 0.6],  # e: cold, second closest to a
    ]
)
POPULARITY = np.array([5, 1, 4, 3, 0])  # a, b, c, d, e (e is cold: no training interactions)


def _split() -> Split:
    rows = [
        ("u1", "a", TRAIN),
        ("u1", "b", TEST),
        ("u1", "e", TEST),  # a cold target
        ("u2", "c", TRAIN),
        ("u2", "e", HELD),  # an observed cold item: part of u2's test query
        ("u2", "d", TEST),
        ("u3", "b", TEST),  # no query item -> not scored
        ("u4", "a", TRAIN),
        ("u4", "zz", TEST),  # target outside the catalog -> nothing to find -> not scored
    ]
    pairs = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, PART])
    return Split(pairs=pairs, cold_items=frozenset({"e"}), protocol="basket")


def test_evaluate_models_exact_values():
    report = evaluate_models(ITEM_IDS, {"perfect": PERFECT}, POPULARITY, _split(), TEST, k=2)
    assert set(report) == {"perfect", "popularity"}
    # perfect model:
    #   u1 query {a}: b .96, e .80, d .28, c 0      -> top2 [b, e]: both targets -> recall 2/2
    #   u2 query {c, e} -> (0.8, 1.6)/|.| = (.447, .894): d .984, b .679, a .447 (c, e excluded) -> [d, b]: recall 1/1
    #   ndcg 1 for both; hit rate 1; cold recall over u1's cold target e: 1/1
    perfect = report["perfect"]
    assert perfect["recall_at_2"] == pytest.approx(1.0)
    assert perfect["ndcg_at_2"] == pytest.approx(1.0)
    assert perfect["hit_rate_at_2"] == pytest.approx(1.0)
    assert perfect["cold_recall_at_2"] == pytest.approx(1.0)
    assert perfect["n_queries"] == 2.0  # u3 (no query) and u4 (no target in the catalog) left out
    # popularity [a5 b1 c4 d3 e0]:
    #   u1 query {a}: c4, d3 -> top2 [c, d]: 0 of {b, e}        -> recall 0, ndcg 0, no hit, cold recall 0 (e missed)
    #   u2 query {c, e}: a5, d3 -> top2 [a, d]: d at rank 2      -> recall 1, ndcg (1/log2 3)/1 = .6309, hit
    #   recall (0 + 1)/2 = .5; ndcg .6309/2 = .3155; hit rate .5; cold recall: only u1 has a cold target -> 0
    pop = report["popularity"]
    assert pop["recall_at_2"] == pytest.approx(0.5)
    assert pop["ndcg_at_2"] == pytest.approx((1 / math.log2(3)) / 2)
    assert pop["hit_rate_at_2"] == pytest.approx(0.5)
    assert pop["cold_recall_at_2"] == pytest.approx(0.0)
    assert pop["n_queries"] == 2.0


def test_cold_recall_counts_cold_targets_only():
    # a model that finds u1's warm target b but ranks cold e low:
    #   u1 query {a}: b 1.0 (b = a), d .28, c 0, e 0 -> top2 [b, d]: recall 1/2, cold recall 0/1 (e missed)
    #   u2 query {c, e} = (0, 1): d .96, then a, b at 0 -> d first: recall 1/1
    #   recall (1/2 + 1)/2 = .75
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.28, 0.96], [0.0, 1.0]])
    report = evaluate_models(ITEM_IDS, {"m": vectors}, POPULARITY, _split(), TEST, k=2)
    assert report["m"]["recall_at_2"] == pytest.approx((0.5 + 1.0) / 2)
    assert report["m"]["cold_recall_at_2"] == pytest.approx(0.0)
    # and a model that finds only the cold target: u1 top2 must hold e but not b
    #   u1 query {a}: e 1.0, d .28, c 0, b -1 -> top2 [e, d]: recall 1/2, cold recall 1/1
    #   u2 query {c, e} = (1, 1)/sqrt2: d .877, a .707, b -.707 -> [d, a]: recall 1/1 (no cold target)
    vectors = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.28, 0.96], [1.0, 0.0]])
    report = evaluate_models(ITEM_IDS, {"m": vectors}, POPULARITY, _split(), TEST, k=2)
    assert report["m"]["recall_at_2"] == pytest.approx(0.75)
    assert report["m"]["cold_recall_at_2"] == pytest.approx(1.0)


def test_evaluate_models_stage_without_targets():
    # the split has no val rows: nothing is scored, and every metric is missing (NaN), never a 0 a gate could pass
    report = evaluate_models(ITEM_IDS, {"perfect": PERFECT}, POPULARITY, _split(), VAL, k=2)
    for name in ("perfect", "popularity"):
        assert report[name]["n_queries"] == 0.0
        assert set(report[name]) == {"recall_at_2", "ndcg_at_2", "hit_rate_at_2", "n_queries", "cold_recall_at_2"}
        assert all(math.isnan(v) for m, v in report[name].items() if m != "n_queries")


def test_evaluate_scorers_with_context_reports_every_metric_and_slice():
    from recsys.evaluation.evaluate import EvaluationContext, evaluate_scorers
    from recsys.data.splits import Split

    # two users; u1 queries [a] and wants [b]; u2 queries [c] and wants [d]
    pairs = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2"],
            "item_id": ["a", "b", "c", "d"],
            "part": ["train", "test", "train", "test"],
        }
    )
    split = Split(pairs=pairs, cold_items=frozenset({"d"}), protocol="basket")
    ids = ["a", "b", "c", "d"]
    perfect = {"a": 1, "c": 3}  # query item -> its target

    def scorer(queries):
        out = np.zeros((len(queries), 4))
        for r, q in enumerate(queries):
            out[r, perfect[ids[q[0]]]] = 1.0
        return out

    ctx = EvaluationContext(ks=(2,), popularity=np.array([5, 4, 1, 0]), n_users=2, categories=["Home > A", "Home", "Toys & Games", None], vectors=np.eye(4))
    row = evaluate_scorers(ids, {"m": scorer}, split, "test", 1, context=ctx)["m"]
    assert row["recall_at_1"] == 1.0 and row["ndcg_at_1"] == 1.0 and row["mrr_at_2"] == 1.0
    assert row["precision_at_2"] == 0.5  # one hit in two slots per query
    assert row["cold_recall_at_1"] == 1.0  # d is cold and found
    assert row["coverage_at_1"] == 0.5  # b and d of four items
    # head = the top 20% of 4 items = 0 items (floor): every target is in the tail
    assert row["tail_recall_at_1"] == 1.0 and row["head_recall_at_1"] == 0.0
    assert row["category_Home_recall_at_1"] == 1.0 and row["category_Toys___Games_recall_at_1"] == 0.0
