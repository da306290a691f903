"""recsys: an LLM-based e-commerce recommender library (runs and is tested without Airflow)."""

__version__ = "0.1.0"
