"""`recsys summary` reads a run's k from its params, not from metric names."""

from __future__ import annotations

import os

from recsys import cli, tracking
from recsys.paths import project_paths


def test_summary_shows_the_runs_own_k(capsys) -> None:
    c = tracking.client(os.environ["MLFLOW_TRACKING_URI"])
    exp = tracking.ensure_experiment(c, "cli-summary-k50", project_paths().mlflow_artifacts)
    run = c.create_run(exp, run_name="k50")
    # a run evaluated at k=50 that also logs a metric at another cut-off (what parsing names got wrong)
    tracking.log_params(c, run.info.run_id, {"eval.k": 50})
    tracking.log_metrics(c, run.info.run_id, {"test.hybrid.recall_at_50": 0.5, "test.hybrid.recall_at_20": 0.3, "test.hybrid.ndcg_at_50": 0.25})
    assert cli.summary("cli-summary-k50", "no-such-model") == 0
    out = capsys.readouterr().out
    assert "recall_at_50" in out and "ndcg_at_50" in out and "recall_at_20" not in out and "0.5000" in out
