"""The promotion review's body (Airflow Required Actions): what a reviewer reads before answering."""

from __future__ import annotations

import airflow  # noqa: F401  (puts the plugins folder on sys.path, as in every Airflow component)

from recsys_review import review_body  # noqa: E402

DECISION = {
    "model_name": "recsys-item-encoder",
    "version": "4",
    "status": "promoted",
    "review_summary": [
        "**PROMOTED**: ndcg_at_10 0.2600 vs champion 0.2500 (+4.0% [+1.0%, +7.0%] n=400; rule >= +1.0% relative)",
        "Guardrails: all 3 within their rules",
        "Shelves: 55% of the top-10 related-item slots change vs the champion, 12% of the lists entirely",
    ],
    "summary_markdown": "**Gate: promoted** (primary metric `ndcg_at_10`, against champion)\n\n- reason\n\nChurn vs the champion over 3868 related-item lists: 55% ...",
    "report_path": "/shared/runs/r1/evaluation/report.html",
    "mlflow_run_id": "abc",
}


def test_the_body_leads_with_three_lines_then_the_checks_churn_and_links() -> None:
    links = {"MLflow version": "http://mlflow:5000/#/models/recsys-item-encoder/versions/4", "report.html": "http://mlflow:5000/get-artifact?path=evaluation/report.html&run_uuid=abc"}
    body = review_body(DECISION, links)
    lines = body.splitlines()
    assert lines[:3] == [f"{line}  " for line in DECISION["review_summary"]]  # Markdown line breaks
    assert body.index("**Gate: promoted**") > body.index("Shelves:") and "Churn vs the champion" in body
    assert "Open: [MLflow version](http://mlflow:5000/#/models/recsys-item-encoder/versions/4) · [report.html](http://mlflow:5000/get-artifact?path=evaluation/report.html&run_uuid=abc)" in body
    assert lines[-1] == "Report file on the workers' shared storage: `/shared/runs/r1/evaluation/report.html`"


def test_without_an_mlflow_ui_the_body_names_the_report_file() -> None:
    body = review_body(DECISION, {"MLflow version": None, "report.html": None})
    assert "Open:" not in body and "/shared/runs/r1/evaluation/report.html" in body
    # a decision from an older run (no summary lines) still shows the gate's summary
    assert review_body({"summary_markdown": "**Gate: promoted**"}, {}) == "**Gate: promoted**"
