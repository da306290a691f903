"""What a model was trained on, and how much of today's test data it has already seen.

Every registered version carries a lineage: the split salt and data digest of its run, and compact
membership sets (sorted 64-bit fingerprints) of the pairs it learned from or was tuned on (train +
validation) and of the items it trained on. The gate uses it to keep the champion from being scored
on pairs it trained on: overlapping test pairs are excluded for both models, and cold items the
champion trained on leave the cold slice (`exclude_seen`). Fingerprints are unkeyed BLAKE2b over the
pseudonymized ids, so they compare across split salts; a false match (2^-64 per pair) only excludes a
pair, it never lets one through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data import schema as S
from recsys.data.splits import PART, TEST, TRAIN, VAL, Split, keyed_hash64, pair_keys

LINEAGE_ARRAYS = "lineage.npz"
LINEAGE_INFO = "lineage.json"
_FINGERPRINT_KEY = b"recsys-lineage-v1"


def fingerprints(keys: list[str]) -> np.ndarray:
    """One uint64 fingerprint per key, in the given order."""
    return keyed_hash64(_FINGERPRINT_KEY, keys)


def pair_fingerprints(pairs: pd.DataFrame) -> np.ndarray:
    """Fingerprints of (user_id, item_id) pairs, one per row, in row order."""
    return fingerprints(pair_keys(pairs[S.USER_ID], pairs[S.ITEM_ID]))


@dataclass(frozen=True)
class Lineage:
    """What one model was trained on."""

    salt: str
    data_digest: str
    protocol: str
    seen_pairs: np.ndarray  # sorted uint64: train + validation pairs (learned from or tuned on)
    trained_items: np.ndarray  # sorted uint64: items with at least one training pair

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(directory / LINEAGE_ARRAYS, seen_pairs=self.seen_pairs, trained_items=self.trained_items)
        info = {"salt": self.salt, "data_digest": self.data_digest, "protocol": self.protocol, "seen_pairs": int(len(self.seen_pairs)), "trained_items": int(len(self.trained_items))}
        (directory / LINEAGE_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: Path) -> "Lineage":
        info = json.loads((directory / LINEAGE_INFO).read_text())
        arrays = np.load(directory / LINEAGE_ARRAYS)
        return cls(info["salt"], info["data_digest"], info["protocol"], arrays["seen_pairs"], arrays["trained_items"])


def lineage_of(split: Split, data_digest: str) -> Lineage:
    """The lineage of a model trained on `split`."""
    seen = split.pairs[split.pairs[PART].isin((TRAIN, VAL))]
    trained = split.pairs.loc[split.pairs[PART] == TRAIN, S.ITEM_ID].unique()
    return Lineage(split.salt, data_digest, split.protocol, np.unique(pair_fingerprints(seen)), np.unique(fingerprints([str(i) for i in trained])))


@dataclass(frozen=True)
class Overlap:
    """How much of today's test data a reference model has already seen."""

    test_pairs: int  # today's test pairs before exclusion
    excluded_pairs: int  # of them, pairs the reference learned from or was tuned on
    cold_items: int  # today's cold items before exclusion
    excluded_cold_items: int  # of them, items the reference trained on
    salt_changed: bool  # the reference was split with another salt
    lineage_known: bool  # False: the reference recorded no lineage (nothing could be excluded)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def exclude_seen(split: Split, reference: Lineage | None) -> tuple[Split, Overlap]:
    """Today's split without the test pairs `reference` has seen, and without the cold items it trained on.

    The returned split is what BOTH models are scored on. Query parts (train, val, held) are left alone:
    they are inputs, not answers."""
    test = split.pairs[PART] == TEST
    if reference is None:
        return split, Overlap(int(test.sum()), 0, len(split.cold_items), 0, False, False)
    seen = np.zeros(len(split.pairs), dtype=bool)
    if test.any():
        seen[test.to_numpy()] = np.isin(pair_fingerprints(split.pairs[test]), reference.seen_pairs)
    cold = sorted(split.cold_items)
    cold_seen = {item for item, hit in zip(cold, np.isin(fingerprints(cold), reference.trained_items)) if hit}
    fair = replace(split, pairs=split.pairs[~seen].reset_index(drop=True), cold_items=split.cold_items - cold_seen)
    overlap = Overlap(int(test.sum()), int(seen.sum()), len(cold), len(cold_seen), reference.salt != split.salt, True)
    return fair, overlap


__all__ = ["Lineage", "Overlap", "exclude_seen", "fingerprints", "lineage_of", "pair_fingerprints"]
