"""Airflow glue for the human review of a promotion (Airflow 3 human-in-the-loop).

`PromotionReviewOperator` is a `HITLBranchOperator` with two options, Approve and Reject, mapped to
the `promote` and `reject` tasks. It also records who answered and when (XCom key `review`), so the
promotion can be attributed to a person in the model registry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator

APPROVE = "Approve"
REJECT = "Reject"


class PromotionReviewOperator(HITLBranchOperator):
    def __init__(self, *, promote_task_id: str = "promote", reject_task_id: str = "reject", response_timeout: timedelta | None = timedelta(days=7), **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Promote this model version to champion?")
        super().__init__(
            options=[APPROVE, REJECT],
            options_mapping={APPROVE: promote_task_id, REJECT: reject_task_id},
            defaults=[REJECT],  # no answer in time: the champion stays
            response_timeout=response_timeout,
            **kwargs,
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        user = event.get("responded_by_user") or {}
        name = user.get("name") or user.get("id") if isinstance(user, dict) else str(user)
        responded = event.get("responded_at")
        context["ti"].xcom_push(
            key="review",
            value={"option": (event.get("chosen_options") or [None])[0], "by": name or "unknown", "at": responded.isoformat() if hasattr(responded, "isoformat") else str(responded)},
        )
        return super().execute_complete(context=context, event=event)
