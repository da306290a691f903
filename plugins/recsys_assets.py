"""Airflow Assets shared by the recsys DAGs."""

from __future__ import annotations

from airflow.sdk import Asset

# updated by recsys_ingest whenever a batch lands in the warehouse; the drift monitor runs on it
WAREHOUSE = Asset(name="recsys_warehouse", uri="file:///recsys/warehouse", group="recsys")
