"""Airflow glue for the human review of a promotion (Airflow 3 human-in-the-loop).

`PromotionReviewOperator` is a `HITLBranchOperator` with two options, Approve and Reject, mapped to
the `promote` and `reject` tasks. Its body (what Required Actions shows) is built when it runs, from the
gate's decision (`review_body`): three lines to act on, the gate's checks with their intervals, the churn
against the champion, and links to the report and the MLflow version. It also records who answered and
when (XCom key `review`), so the promotion can be attributed to a person in the model registry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator

APPROVE = "Approve"
REJECT = "Reject"


def review_body(decision: dict[str, Any], links: dict[str, str | None]) -> str:
    """The review's Markdown: the three-line summary, the gate's summary (checks, intervals, churn), links."""
    lines = [f"{line}  " for line in decision.get("review_summary") or []]
    if lines:
        lines.append("")
    lines.append(decision.get("summary_markdown") or f"Gate: {decision.get('status', '?')}")
    shown = [f"[{label}]({url})" for label, url in links.items() if url]
    if shown:
        lines += ["", "Open: " + " · ".join(shown)]
    if decision.get("report_path"):
        lines += ["", f"Report file on the workers' shared storage: `{decision['report_path']}`"]
    return "\n".join(lines)


class PromotionReviewOperator(HITLBranchOperator):
    def __init__(
        self,
        *,
        promote_task_id: str = "promote",
        reject_task_id: str = "reject",
        decision_task_id: str = "decide",
        response_timeout: timedelta | None = timedelta(days=7),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", "Promote this model version to champion?")
        super().__init__(
            options=[APPROVE, REJECT],
            options_mapping={APPROVE: promote_task_id, REJECT: reject_task_id},
            defaults=[REJECT],  # no answer in time: the champion stays
            response_timeout=response_timeout,
            **kwargs,
        )
        self.decision_task_id = decision_task_id

    def execute(self, context: Any) -> Any:
        decision = context["ti"].xcom_pull(task_ids=self.decision_task_id) or {}
        self.body = review_body(decision, _links(decision))
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        user = event.get("responded_by_user") or {}
        name = user.get("name") or user.get("id") if isinstance(user, dict) else str(user)
        responded = event.get("responded_at")
        context["ti"].xcom_push(
            key="review",
            value={"option": (event.get("chosen_options") or [None])[0], "by": name or "unknown", "at": responded.isoformat() if hasattr(responded, "isoformat") else str(responded)},
        )
        return super().execute_complete(context=context, event=event)


def _links(decision: dict[str, Any]) -> dict[str, str | None]:
    """The MLflow version and the report in a browser (none where MLflow has no UI address)."""
    from recsys_mlflow import MlflowHook

    hook = MlflowHook()
    ui = hook.ui_url()
    run_id = decision.get("mlflow_run_id")
    if not ui:
        return {}
    return {
        "MLflow version": hook.model_version_url(decision["model_name"], decision["version"]) if decision.get("version") else None,
        "report.html": f"{ui}/get-artifact?path=evaluation/report.html&run_uuid={run_id}" if run_id else None,
    }
