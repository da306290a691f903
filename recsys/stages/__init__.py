"""Stages: what the DAG tasks run (training pipeline, promotion, publishing, the operational DAGs' stages)."""
