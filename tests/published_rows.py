"""Read back the published recommendations table (shared by the SQLite and PostgreSQL publish tests)."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import create_engine, select

from recsys.stages.publish import published_table


def published_rows(url: str, model_name: str | None = None) -> pd.DataFrame:
    """Every published row (bar published_at), in primary-key order; the engine is disposed, so a
    server's connections do not pile up across tests."""
    t = published_table
    stmt = select(*[c for c in t.columns if c.name != "published_at"]).order_by(t.c.model_name, t.c.item_id, t.c.kind, t.c.rank)
    if model_name is not None:
        stmt = stmt.where(t.c.model_name == model_name)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(stmt, conn)
    finally:
        engine.dispose()
