"""End to end: the real training DAG, run by Airflow on a small real subset of online-retail.

Real everything: the PyPI data-set wheel, GX, the SQLite warehouse, the packaged MiniLM on the
CPU, an MLflow SQLite store and registry, and `airflow dags test` in a fresh Airflow home.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys import tracking
from recsys.data import warehouse
from recsys.paths import project_paths
from recsys.stages.publish import published_version
from published_rows import published_rows

pytestmark = [pytest.mark.slow, pytest.mark.network]

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
MODEL = "recsys-item-encoder"
# fusion_steps bounds the fusion stage (600 by default, three variants): the DAG's wiring is under test, not the optimum
# publish_shard_size: the catalog is published in several mapped shards, then swapped in at once
CONF = {"dataset": "online-retail", "sample_users": 250, "max_train_steps": 6, "train_batch_size": 16, "fusion_steps": 150, "publish_shard_size": 700}


def _airflow(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def _trigger(conf: dict) -> tuple[str, str, str]:
    """Run the DAG with `airflow dags test`; returns (final state, dag run id, output)."""
    proc = _airflow("dags", "test", "recsys_training", "--conf", json.dumps(conf))
    out = proc.stdout + proc.stderr
    states = re.findall(r"DagRun Finished: .*?run_id=([^,]+),.*?state=(\w+)", out)
    assert states, f"no DagRun Finished line (rc {proc.returncode}):\n{out[-4000:]}"
    run_id, state = states[-1]
    return state, run_id, out


def _task_rows(run_id: str) -> list[dict]:
    proc = _airflow("tasks", "states-for-dag-run", "recsys_training", run_id, "-o", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout[proc.stdout.index("[") :])


def _task_states(run_id: str) -> dict[str, str]:
    return {r["task_id"]: r["state"] for r in _task_rows(run_id)}


@pytest.fixture(scope="module")
def airflow_db() -> None:
    proc = _airflow("db", "migrate", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def first_run(airflow_db: None) -> dict:
    state, run_id, out = _trigger(CONF)
    assert state == "success", out[-6000:]
    return {"run_id": run_id}


def test_training_dag_trains_registers_and_serves(first_run: dict) -> None:
    c = tracking.client(os.environ["MLFLOW_TRACKING_URI"])
    exp = c.get_experiment_by_name("recsys-training")
    run = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.RUN_KEY_TAG}` = 'recsys_training__{first_run['run_id']}'")[0]
    m = run.data.metrics
    # the three models were scored on the same test queries, in the same run
    for model in ("hybrid", "ease", "itemknn", "fused", "finetuned", "frozen", "popularity"):
        assert 0.0 <= m[f"test.{model}.recall_at_10"] <= 1.0
        assert m[f"test.{model}.n_queries"] == m["test.popularity.n_queries"] > 100
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset"] == "online-retail"
    assert run.data.tags["validation"] == "passed"
    assert "validation/validation.json" in [a.path for a in c.list_artifacts(run.info.run_id, "validation")]
    # the first model ever: champion because it beats every baseline; then published
    version = run.data.tags["registered_version"]
    assert run.data.tags["decision"] == "promoted"
    assert tracking.champion_version(c, MODEL) == version
    states = _task_states(first_run["run_id"])
    assert states["promote"] == states["publish"] == "success"
    assert states["reject"] == states["review"] == "skipped"
    assert published_version(project_paths().warehouse_url, MODEL) == version
    shards = [r["state"] for r in _task_rows(first_run["run_id"]) if r["task_id"] == "publish_shard"]
    assert len(shards) >= 2 and set(shards) == {"success"}, shards  # published in shards of 700 items
    published = published_rows(project_paths().warehouse_url, MODEL)
    mv = c.get_model_version(MODEL, version)
    assert mv.tags["published.rows"] == str(len(published))
    assert mv.tags["gate.decision"] == "promoted" and "beats every baseline" in mv.tags["gate.reasons"]
    assert "evaluation/report.html" in [a.path for a in c.list_artifacts(run.info.run_id, "evaluation")]

    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    catalog = model.unwrap_python_model().item_ids
    related = published[published["kind"] == "related"]
    assert set(related["item_id"]) == {str(i) for i in catalog} and related.groupby("item_id").size().eq(10).all()  # every item once, whole
    query = catalog[0]
    recs = model.predict(pd.DataFrame({"item_id": [query]}), params={"k": 10})
    assert len(recs) == 10 and query not in set(recs["item_id"])
    assert list(recs["rank"]) == list(range(1, 11))
    assert recs["score"].is_monotonic_decreasing
    # a new product, known only by its text, is recommendable at once (no cold-start hole)
    cold = model.predict(pd.DataFrame({"text": ["red retrospot lunch bag"]}), params={"k": 5})
    assert len(cold) == 5 and cold["item_id"].isin(catalog).all()
    # a cart: items that complete the basket, none of the cart's own
    cart = model.predict(pd.DataFrame({"cart": [f"{catalog[0]},{catalog[1]}"]}), params={"k": 10})
    assert len(cart) == 10 and not set(cart["item_id"]) & {catalog[0], catalog[1]}
    # every recommendation carries reasons backed by evidence from the catalog's own numbers
    titles = model.unwrap_python_model().titles
    assert all(r for r in recs["reasons"])
    assert any(f"close in meaning to {titles[0]} (similarity" in r or "bought together with" in r for r in recs["reasons"])
    # a complete-the-basket bundle of 4 items, none from the cart, each with its reasons
    bundle = model.predict(pd.DataFrame({"cart": [f"{catalog[0]},{catalog[1]}"]}), params={"k": 4, "mode": "bundle"})
    assert 1 <= len(bundle) <= 4 and not set(bundle["item_id"]) & {catalog[0], catalog[1]}
    assert all(r for r in bundle["reasons"])


def test_weakened_second_run_is_refused_and_the_champion_stays(first_run: dict, tmp_path: Path) -> None:
    """Grown data (more users) and another seed, and a deliberately weaker model (no fine-tuning, text
    only): the gate scores the champion on the test pairs it never trained on (there are none to
    exclude: the split is stable), refuses, says why; nothing users see changes."""
    engine = warehouse.make_engine(project_paths().warehouse_url)
    before = warehouse.table_counts(engine, "online-retail")
    c = tracking.client(os.environ["MLFLOW_TRACKING_URI"])
    champion = tracking.champion_version(c, MODEL)
    state, run_id, out = _trigger(CONF | {"max_train_steps": 0, "candidate": "text", "sample_users": 300, "seed": 7})
    assert state == "success", out[-6000:]
    after = warehouse.table_counts(engine, "online-retail")
    # the reload was an upsert: the 250 users already there were not added again, only the 50 new ones' rows
    assert after["interactions"] > before["interactions"] and after["interactions"] - before["interactions"] < before["interactions"]
    exp = c.get_experiment_by_name("recsys-training")
    run = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.RUN_KEY_TAG}` = 'recsys_training__{run_id}'")[0]
    gate = json.loads(Path(c.download_artifacts(run.info.run_id, "evaluation/gate.json", str(tmp_path))).read_text())
    assert gate["overlap"]["lineage_known"] and not gate["overlap"]["salt_changed"]
    assert gate["overlap"]["excluded_pairs"] == 0 < gate["overlap"]["test_pairs"]  # grown data, another seed: no leak
    assert gate["test_users"] > 100 and run.data.metrics["split.users"] > c.get_run(c.get_model_version(MODEL, champion).run_id).data.metrics["split.users"]
    versions = sorted(int(v.version) for v in c.search_model_versions(f"name = '{MODEL}'"))
    assert versions == [1, 2]
    assert tracking.champion_version(c, MODEL) == champion == "1"
    assert tracking.alias_version(c, MODEL, tracking.CHALLENGER) == "2"
    tags = c.get_model_version(MODEL, "2").tags
    assert tags["gate.decision"] == "rejected" and tags["gate.compared_with"] == "version 1"
    assert "does not improve enough on champion" in tags["gate.reasons"]
    states = _task_states(run_id)
    assert states["reject"] == "success" and states["promote"] == states["publish"] == "skipped"
    assert published_version(project_paths().warehouse_url, MODEL) == "1"  # still one consistent version


def test_bad_file_stops_the_dag_at_validation(first_run: dict, tmp_path: Path) -> None:
    c = tracking.client(os.environ["MLFLOW_TRACKING_URI"])
    champion = tracking.champion_version(c, MODEL)
    n_versions = len(c.search_model_versions(f"name = '{MODEL}'"))
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,price\nA1,Red mug,3.5\nA1,Blue plate,4\n")
    inter = tmp_path / "interactions.csv"
    inter.write_text("user_id,item_id,event\nalice,A1,purchase\n")

    state, run_id, out = _trigger({"dataset": "files", "items_path": str(items), "interactions_path": str(inter)})

    assert state == "failed"
    assert "Validation failed for table 'items'" in out and "expect_column_values_to_be_unique(item_id)" in out
    states = _task_states(run_id)
    assert states["validate"] == "failed"  # no retry either: bad data is not a transient error
    assert all(states[t] == "upstream_failed" for t in ("load_and_split", "merge_embeddings", "finetune", "fuse_signals", "fit_model", "evaluate", "package", "decide", "promote"))
    assert tracking.champion_version(c, MODEL) == champion
    assert len(c.search_model_versions(f"name = '{MODEL}'")) == n_versions
    assert items.read_text().startswith("item_id,title,price\nA1")  # the raw file is kept as it was


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_ping(port: int, server: subprocess.Popen, timeout: float = 120) -> None:
    """Until the scoring server answers /ping; its output in the failure when it died or never answered."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                out = server.stdout.read().decode() if server.poll() is not None else ""
                raise AssertionError(f"model server did not come up:\n{out[-3000:]}") from None
            time.sleep(1)


def test_champion_serves_over_http_with_reasons(first_run: dict) -> None:
    """`mlflow models serve` on loopback answers a real request with ranked items and reasons."""
    import urllib.request

    port = _free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    server = subprocess.Popen(
        [mlflow_bin, "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        start_new_session=True,
    )
    try:
        c = tracking.client(os.environ["MLFLOW_TRACKING_URI"])
        import mlflow.pyfunc

        catalog = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").unwrap_python_model().item_ids
        body = json.dumps({"dataframe_split": {"columns": ["item_id"], "data": [[catalog[0]]]}, "params": {"k": 5}}).encode()
        _wait_for_ping(port, server)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
        assert [p["rank"] for p in predictions] == [1, 2, 3, 4, 5]
        assert catalog[0] not in {p["item_id"] for p in predictions}
        assert all(p["reasons"] for p in predictions)
        assert c is not None
    finally:
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _readme_examples() -> list[list[str]]:
    """The `recsys recommend` / `recsys bundle` commands of the README's "Try it" block, as argv."""
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("### Try it", 1)[1].split("\n#", 1)[0]
    commands = []
    for line in block.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith(".venv/bin/recsys ") and line.split()[1] in ("recommend", "bundle"):
            commands.append(shlex.split(line)[1:])
    return commands


def _rows(out: str) -> list[tuple[str, str, list[str]]]:
    """(item id, title, reasons) of each printed item: `  1    0.1234  TITLE  [ID]` then `       - reason` lines."""
    rows: list[tuple[str, str, list[str]]] = []
    for line in out.splitlines():
        m = re.match(r"^\s*\d+\s+-?[\d.]+\s+(.*)\s+\[([^\]]+)\]$", line)
        if m:
            rows.append((m.group(2), m.group(1).strip(), []))
        elif line.startswith("       - ") and rows:
            rows[-1][2].append(line[len("       - ") :])
    return rows


def test_every_readme_example_works_and_says_true_things(first_run: dict) -> None:
    """Each command of the README's "Try it" block, run as written (the first) and through a running
    `recsys serve` (the rest), returns items whose reasons are true of them: "bought together" only with
    that many real co-purchases, "new item" only without training history."""
    import signal

    import mlflow.pyfunc

    from recsys.model.bundles import NEW_ITEM_REASON

    examples = _readme_examples()
    assert len(examples) >= 4 and {e[0] for e in examples} == {"recommend", "bundle"}, examples
    assert not any("--budget" in e for e in examples)  # the demo's data has no prices: a budget cannot work there
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").unwrap_python_model()
    behaviour, index = model.behaviour, model.index
    by_title: dict[str, list[int]] = {}
    for i, title in enumerate(model.titles):
        by_title.setdefault(title, []).append(i)
    recsys_bin = str(Path(sys.executable).with_name("recsys"))

    def run(argv: list[str]) -> str:
        proc = subprocess.run([recsys_bin, *argv], capture_output=True, text=True, timeout=300, env=os.environ.copy())
        assert proc.returncode == 0, f"recsys {' '.join(argv)}: {proc.stderr[-2000:]}"
        return proc.stdout

    def check(argv: list[str], out: str) -> list[str]:
        rows = _rows(out)
        assert rows, f"recsys {' '.join(argv)} printed no items:\n{out}"
        reasons_seen = []
        for item, _title, reasons in rows:
            assert reasons, f"{item} has no reason:\n{out}"
            j = index[item]
            for reason in reasons:
                reasons_seen.append(reason)
                if reason == NEW_ITEM_REASON:
                    assert behaviour.item_counts[j] == 0, f"{item} is called new but was bought by {behaviour.item_counts[j]} customers"
                m = re.match(r"bought together with (.*) by (\d+) customers", reason)
                if m:
                    counts = [int(round(behaviour.cooc[c, j])) for c in by_title[m.group(1)]]
                    assert int(m.group(2)) in counts and int(m.group(2)) >= 1, (reason, counts)
            if NEW_ITEM_REASON not in reasons:
                assert behaviour.item_counts[j] > 0 or "--text" in argv, item
        if "--text" in argv:  # true of the request, said once above the list, not on every row
            assert out.count("treated as a new item") == 1
        return reasons_seen

    check(examples[0], run(examples[0]))
    port = _free_port()
    server = subprocess.Popen([recsys_bin, "serve", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True)
    try:
        _wait_for_ping(port, server)
        url = f"http://127.0.0.1:{port}"
        for argv in examples[1:]:
            out = run(["--server", url, *argv])
            check(argv, out)
            if "--explain" in argv:
                assert "share of the objective:" in out and "complementarity" in out
        # a budget on a catalog without prices: one clear line, exit 2
        cart = next(a for a in examples if a[0] == "bundle")
        proc = subprocess.run([recsys_bin, "--server", url, *cart, "--budget", "40"], capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert proc.returncode == 2 and "no prices, so a budget cannot be applied" in proc.stderr, proc.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
