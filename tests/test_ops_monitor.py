"""The drift monitor and the scheduled retraining, wired to the real registry and warehouse: a champion
registered with reference statistics, windows of known drift in a SQLite warehouse, the real encoder
embedding unseen items. The statistics themselves are tested in test_drift.py."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.stages import ops
from recsys.data import schema as S, warehouse
from recsys import tracking
from recsys.monitoring.drift import ReferenceStats
from recsys.monitoring import monitor as monitor_module
from recsys.monitoring.monitor import MonitorConfig, recall_k, reference_for_model, recent_window, window_recall, window_recall_per_user
from recsys.paths import project_paths
from recsys.serving import ItemRecommender, save_catalog

MODEL = "monitor-test-model"
DATASET = "monitor-shop"
N_ITEMS = 60
CATEGORIES = ["Kitchen > Mugs", "Garden > Pots", "Toys > Blocks"]


def _items(n: int = N_ITEMS, prefix: str = "i") -> pd.DataFrame:
    return S.to_canonical_items(
        pd.DataFrame(
            {
                S.ITEM_ID: [f"{prefix}{j}" for j in range(n)],
                S.TITLE: [f"{['red mug', 'clay pot', 'wooden block'][j % 3]} model {j}" for j in range(n)],
                S.CATEGORY: [CATEGORIES[j % 3] for j in range(n)],
            }
        )
    )


def _interactions(items: list[str], start: str, days: int, n: int, seed: int, users: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(rng.uniform(0, days * 86400, n), unit="s")
    # a fixed popularity curve over the catalog, the same in every period
    p = 1.0 / np.arange(1, len(items) + 1) ** 0.8
    return S.to_canonical_interactions(
        pd.DataFrame(
            {
                S.USER_ID: [f"u_{u:020x}" for u in rng.integers(0, users, n)],
                S.ITEM_ID: np.array(items)[rng.choice(len(items), n, p=p / p.sum())],
                S.EVENT: "purchase",
                S.TIMESTAMP: ts,
            }
        )
    )


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> dict:
    """A registered champion (the packaged encoder, text-only) with reference statistics of 4 weeks."""
    from recsys.model.encoder import TextEncoder

    paths = project_paths()
    items = _items()
    reference = _interactions(items[S.ITEM_ID].tolist(), "2026-01-05", 28, 4000, seed=1)
    engine = warehouse.make_engine(paths.warehouse_url)
    warehouse.upsert_dataset(engine, S.Dataset(DATASET, items, reference, True, True, "test"))
    model_dir = tmp_path_factory.mktemp("model")
    encoder = TextEncoder()
    encoder.save(model_dir / "encoder")
    vectors = encoder.encode(items[S.TITLE].tolist(), progress=False)
    save_catalog(model_dir / "catalog.npz", items[S.ITEM_ID].tolist(), items[S.TITLE].tolist(), vectors)
    reference_for_model(model_dir, reference, items, items[S.ITEM_ID].tolist(), vectors, 0.30, DATASET, "digest")
    c = tracking.client(os.environ["MLFLOW_TRACKING_URI"])
    exp = tracking.ensure_experiment(c, "monitor-test", paths.mlflow_artifacts)
    run_id = tracking.get_or_create_run(c, exp, "monitor-test-run", "monitor-test-run", {})
    version = tracking.log_and_register_model(
        c, run_id, MODEL, ItemRecommender(), ItemRecommender.artifacts_of(model_dir), [str(Path(S.__file__).parent)], pd.DataFrame({"item_id": ["i0"]}), []
    )
    tracking.set_version_tags(c, MODEL, version, {"dataset": DATASET, "data.interactions": str(len(reference))})
    tracking.set_alias(c, MODEL, tracking.CHAMPION, version)
    return {"engine": engine, "items": items, "version": version, "c": c}


def test_recent_window_is_the_last_period_of_event_time() -> None:
    inter = _interactions(["a", "b"], "2026-01-01", 20, 200, seed=0)
    history, recent = recent_window(inter, "7D")
    end = inter[S.TIMESTAMP].max()
    assert (recent[S.TIMESTAMP] > end - pd.Timedelta("7D")).all() and (history[S.TIMESTAMP] <= end - pd.Timedelta("7D")).all()
    assert len(history) + len(recent) == len(inter)
    with pytest.raises(ValueError, match="needs timestamps"):
        recent_window(inter.assign(**{S.TIMESTAMP: pd.NaT}), "7D")


class _FixedRanker:
    """A champion that always ranks b, c, d, a (enough of ItemRecommender for window_recall)."""

    item_ids = ["a", "b", "c", "d"]
    index = {i: j for j, i in enumerate(item_ids)}

    def score_batch(self, queries, with_trend=False):  # the ItemRecommender interface (no prior here)
        return np.tile(np.array([0.0, 3.0, 2.0, 1.0]), (len(queries), 1))


def test_window_recall_is_kept_per_evaluable_user(tmp_path) -> None:
    t0, t1 = pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-01-10", tz="UTC")
    rows = [("u1", "a", t0), ("u1", "b", t1), ("u2", "a", t0), ("u2", "c", t1), ("u2", "d", t1), ("u3", "b", t1), ("u4", "a", t0), ("u4", "a", t1)]
    inter = S.to_canonical_interactions(pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP]).assign(**{S.EVENT: "view"}))
    history, window = inter[inter[S.TIMESTAMP] == t0], inter[inter[S.TIMESTAMP] == t1]
    # u1: b at rank 1 -> 1; u2: c, d at ranks 2, 3 -> 0 at k=1, 1/2 at k=2; u3 (no history), u4 (nothing new): not evaluable
    assert window_recall_per_user(_FixedRanker(), history, window, k=1, max_users=10).tolist() == [1.0, 0.0]
    assert window_recall_per_user(_FixedRanker(), history, window, k=2, max_users=10).tolist() == [1.0, 0.5]
    assert window_recall(_FixedRanker(), history, window, k=2, max_users=10) == (0.75, 2)
    assert window_recall(_FixedRanker(), window.iloc[:0], window, k=2, max_users=10) == (None, 0)
    # the per-user evaluation recalls travel with the reference (NaN: a user without target, left out)
    items = S.to_canonical_items(pd.DataFrame({S.ITEM_ID: list("abcd"), S.TITLE: list("abcd")}))
    out = reference_for_model(tmp_path, inter, items, list("abcd"), np.eye(4, dtype=np.float32), None, "d", "x", eval_recall_per_user=np.array([1.0, 0.0, np.nan, 0.5]))
    ref = ReferenceStats.load(out)
    assert ref.eval_recall_users.tolist() == [1.0, 0.0, 0.5] and ref.eval_recall == 0.5 and ref.eval_recall_users_total == 3


def test_a_quiet_week_raises_no_alarm_and_no_retraining_without_new_data(champion) -> None:
    c = champion["c"]
    news = ops.scheduled_retrain_check(MODEL)
    assert news["retrain"] is False and news["new_interactions"] == 0 and "no new interactions" in news["status"]
    week = _interactions(champion["items"][S.ITEM_ID].tolist(), "2026-02-02", 7, 1000, seed=2)
    warehouse.upsert_dataset(champion["engine"], S.Dataset(DATASET, champion["items"], week, True, True, "test"))
    result = ops.monitor(MODEL, "7D", run_key="quiet")
    assert result["drift"] is False, result["reasons"]
    assert result["dataset"] == DATASET and result["champion_version"] == champion["version"]
    assert "training_conf" not in result
    assert Path(result["report"]).read_text().count("NO DRIFT") >= 1
    run = c.get_run(result["mlflow_run_id"])
    assert run.data.tags["drift"] == "false" and "signal.unseen_items" in run.data.metrics
    # the week is new data: the weekly retraining would run, and says why
    news = ops.scheduled_retrain_check(MODEL)
    assert news["retrain"] is True and news["new_interactions"] == 1000
    assert news["training_conf"] == {
        "dataset": "warehouse",
        "warehouse_dataset": DATASET,
        "model_name": MODEL,
        "trigger_reason": f"scheduled: 1000 new interactions for {DATASET} since champion v{champion['version']} was trained",
    }


def test_a_flood_of_new_items_alarms_and_asks_for_training_with_the_reason(champion) -> None:
    new_items = _items(40, prefix="new")
    old = champion["items"][S.ITEM_ID].tolist()
    week_old = _interactions(old, "2026-02-09", 7, 500, seed=3)
    week_new = _interactions(new_items[S.ITEM_ID].tolist(), "2026-02-09", 7, 700, seed=4)
    catalog = pd.concat([champion["items"], new_items], ignore_index=True)
    warehouse.upsert_dataset(champion["engine"], S.Dataset(DATASET, catalog, pd.concat([week_old, week_new], ignore_index=True), True, True, "test"))
    result = ops.monitor(MODEL, "7D", run_key="flood")
    assert result["drift"] is True
    assert any("champion never saw" in r for r in result["reasons"]), result["reasons"]
    conf = result["training_conf"]
    assert conf["dataset"] == "warehouse" and conf["warehouse_dataset"] == DATASET and conf["model_name"] == MODEL
    assert conf["trigger_reason"].startswith(f"drift on {DATASET} against champion v{champion['version']}") and "champion never saw" in conf["trigger_reason"]
    assert result["window_recall"] is not None and result["window_recall"] < 0.30  # the champion cannot recommend what it never saw
    # this champion's reference keeps only its mean evaluation recall: the drop is reported, not decided
    recall = next(s for s in json.loads(Path(result["report_json"]).read_text())["signals"] if s["name"] == "champion_recall")
    assert recall["extra"]["status"] == "not enough evidence" and recall["extra"]["n_window_users"] == result["window_recall_users"] > 0
    assert champion["c"].get_run(result["mlflow_run_id"]).data.tags["drift"] == "true"


def test_no_champion_means_nothing_to_monitor() -> None:
    result = ops.monitor("no-such-model", "7D")
    assert result["drift"] is False and "no champion" in result["status"]
    assert ops.scheduled_retrain_check("no-such-model")["retrain"] is False


def test_retraining_follows_the_champions_recipe(champion) -> None:
    c = champion["c"]
    run_id = c.get_model_version(MODEL, champion["version"]).run_id
    tracking.log_params(c, run_id, {"train.max_steps": 0, "train.learning_rate": 5e-05, "sample_users": None, "eval.k": 10, "dataset": "x"})
    recipe = ops.champion_recipe(MODEL, os.environ["MLFLOW_TRACKING_URI"])
    assert recipe == {"max_train_steps": 0, "learning_rate": 5e-05, "k": 10}  # None / unrelated params are not carried
    tracking.log_params(c, run_id, {"fusion.enabled": False, "fusion.text_adaptor": True})
    recipe = ops.champion_recipe(MODEL, os.environ["MLFLOW_TRACKING_URI"])
    assert recipe["fusion"] is False and recipe["fusion_text_adaptor"] is True  # bools again, as the DAG's Params want
    conf = ops.scheduled_retrain_check(MODEL)["training_conf"]
    assert conf["max_train_steps"] == 0 and conf["dataset"] == "warehouse" and conf["model_name"] == MODEL


def test_the_recall_k_is_the_references(caplog) -> None:
    ref = ReferenceStats.build(_interactions(["a", "b"], "2026-01-01", 3, 20, seed=0), None, ["a", "b"], None, 0.2, recall_k=5)
    assert recall_k(ref, MonitorConfig("d")) == 5
    assert recall_k(ref, MonitorConfig("d", k=10)) == 5  # another k would not be comparable: the reference's wins
    with caplog.at_level("WARNING", logger="recsys.monitoring.monitor"):
        assert recall_k(dataclasses.replace(ref, recall_k=None), MonitorConfig("d")) == 10  # saved before k was kept
    assert "assuming k=10" in caplog.text


def test_a_reference_made_at_k5_is_compared_at_k5(champion, monkeypatch) -> None:
    """The champion's window recall is measured at the k its reference recall was measured at."""
    load, measure, seen = ReferenceStats.load, monitor_module.window_recall_per_user, []
    monkeypatch.setattr(monitor_module.ReferenceStats, "load", classmethod(lambda cls, d: dataclasses.replace(load(d), recall_k=5)))

    def spy(recommender, history, window, k, *args, **kwargs):
        seen.append(k)
        return measure(recommender, history, window, k, *args, **kwargs)

    monkeypatch.setattr(monitor_module, "window_recall_per_user", spy)
    result = ops.monitor(MODEL, "7D", run_key="k5")
    assert seen == [5] and result["k"] == 5
    assert champion["c"].get_run(result["mlflow_run_id"]).data.params["k"] == "5"
    assert "Champion Recall@5" in Path(result["report"]).read_text() and "Recall@10" not in Path(result["report"]).read_text()
