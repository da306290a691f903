"""An on-disk cache of item vectors, so re-embedding a catalog costs only what changed.

Key: (model fingerprint, document hash). The fingerprint covers everything that determines a
vector (weights, tokenizer, max_length, pooling, numeric precision), so a fine-tuned encoder never
reads the frozen encoder's vectors, and loading the same weights twice finds the same entries.

Layout: `<directory>/<fingerprint>/shard-<time_ns>-<uuid>.npz`, each shard holding `hashes`
(ASCII bytes) and `vectors` (float32 [n, dim]). Shards are append-only and written to a `.tmp`
file that is fsynced and then renamed, so a crash never leaves a half-written shard where a reader
looks, and two writers (processes or threads) never write the same file. Readers consolidate every
shard of a fingerprint into one in-memory array on first use and pick up shards written since on
each lookup. `compact()` merges a fingerprint's shards into one.

    cache = EmbeddingCache(paths.cache / "embeddings")
    vectors, stats = encode_with_cache(encoder, documents, cache)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

FINGERPRINT_SCHEME = "recsys-embedding-fingerprint-v1"  # bump when what the fingerprint covers changes
POOLING = "mean+l2"  # recsys.model.encoder.mean_pool: masked mean of the last hidden state, then L2-normalized
HASH_CHARS = 32  # hex characters kept of a sha256 (128 bits)
MAX_KEY_CHARS = 64
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".npz"
TMP_SUFFIX = ".tmp"
STALE_TMP_SECONDS = 3600.0  # compact() removes temporary files older than this (left by a crashed writer)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

# model config keys that do not change the vectors (bookkeeping, output switches, load-time dtype:
# the weights' dtype is hashed with the weights); any other key, including ones a later
# transformers version adds, is part of the fingerprint (a spurious miss is safe, a wrong hit is not)
_IGNORED_CONFIG_KEYS = frozenset(
    {
        "transformers_version",
        "architectures",
        "dtype",
        "torch_dtype",
        "id2label",
        "label2id",
        "problem_type",
        "return_dict",
        "output_hidden_states",
        "output_attentions",
        "use_cache",
        "gradient_checkpointing",
        "chunk_size_feed_forward",
        "hidden_dropout_prob",  # dropout is off in encode (eval mode)
        "attention_probs_dropout_prob",
        "classifier_dropout",
    }
)


# --- keys ---------------------------------------------------------------------------------------


def document_hash(text: str) -> str:
    """The cache key of one document: sha256 of its UTF-8 bytes, first 32 hex characters."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:HASH_CHARS]


def _tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """The raw bytes of a tensor as a uint8 array (no copy on the CPU when already contiguous)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy()


def _weights_digest(encoder: Any) -> str:
    # the whole TextEncoder module: a layer added next to `.model` later is covered too
    if isinstance(encoder, torch.nn.Module):
        state = encoder.state_dict()
    else:  # an object holding a `.model` (the same keys a TextEncoder would have)
        state = {f"model.{k}": v for k, v in encoder.model.state_dict().items()}
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _backend_definition(serialized: str) -> str:
    """A fast tokenizer's JSON without its truncation and padding settings.

    Those are per-call state: every `tokenizer(..., truncation=True, max_length=...)` rewrites
    them. The two top-level values are cut out of the serialized string (each checked against a
    full parse); re-serializing the parsed definition instead takes 4x longer for MiniLM's vocabulary.
    """
    spec = json.loads(serialized)
    if serialized.startswith('{"version":') and isinstance(spec, dict):
        decoder = json.JSONDecoder()
        cut = serialized
        for key in ("truncation", "padding"):
            marker = f',"{key}":'
            start = cut.find(marker)
            # tokenizers writes version, truncation, padding, then added_tokens, normalizer, ..., model
            if start < 0 or not 0 <= start < cut.find(',"added_tokens":'):
                break
            try:
                value, end = decoder.raw_decode(cut, start + len(marker))
            except json.JSONDecodeError:
                break
            if value != spec.get(key):
                break
            cut = cut[:start] + cut[end:]
        else:
            return cut
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return json.dumps(spec, sort_keys=True)


def _tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """What of the tokenizer decides the token ids: its full definition, not its path."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        content = _backend_definition(backend.to_str())
    else:  # a slow (pure Python) tokenizer: its vocabulary and special tokens
        content = json.dumps(
            {"vocab": sorted(tokenizer.get_vocab().items()), "special": sorted(map(str, tokenizer.all_special_tokens))},
            sort_keys=True,
        )
    return {
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "content_sha256": hashlib.sha256(content.encode()).hexdigest(),
        # left padding shifts absolute positions in BERT-like models: it changes the vectors
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "model_input_names": list(getattr(tokenizer, "model_input_names", []) or []),
    }


def _model_config_identity(model: torch.nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        return {"class": type(model).__name__}
    items = config.to_dict()
    kept = {k: v for k, v in items.items() if not k.startswith("_") and k not in _IGNORED_CONFIG_KEYS}
    return {"class": type(model).__name__, "config": kept}


def fingerprint_parts(encoder: Any) -> dict[str, Any]:
    """Everything the fingerprint hashes, readable (for logs and for debugging a cache miss)."""
    device = getattr(encoder, "device", torch.device("cpu"))
    max_length = encoder.config.max_length or getattr(encoder.tokenizer, "model_max_length", None)
    return {
        "scheme": FINGERPRINT_SCHEME,
        "weights_sha256": _weights_digest(encoder),
        "model": _model_config_identity(encoder.model),
        "tokenizer": _tokenizer_identity(encoder.tokenizer),
        "max_length": int(max_length) if max_length is not None else None,
        "pooling": POOLING,
        # TextEncoder.encode may run bf16 autocast (CUDA, CPUs with native bf16): those vectors differ
        # from float32 ones at ~1e-3, so they are cached apart
        "precision": getattr(encoder, "inference_precision", None) or ("bf16-autocast" if torch.device(device).type == "cuda" else "float32"),
    }


def model_fingerprint(encoder: Any) -> str:
    """A stable hash of what determines the encoder's vectors (32 hex characters).

    Hashes the encoder's state_dict tensors' bytes in sorted key order (about 50 ms for MiniLM's
    22.7M parameters, 91 MB, on one CPU core; 65 ms in all), the tokenizer's definition, the model
    config, max_length, the pooling and the precision `encode` runs at. A fine-tuned encoder gets a
    different fingerprint from the frozen one; the same weights loaded twice (from any path) get
    the same one.
    """
    parts = fingerprint_parts(encoder)
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:HASH_CHARS]


# --- the store ------------------------------------------------------------------------------------


@dataclass
class _Index:
    """Every vector known for one fingerprint, consolidated from its shards."""

    rows: dict[str, int] = field(default_factory=dict)
    vectors: np.ndarray | None = None  # [n, dim] float32
    shards: set[str] = field(default_factory=set)  # shard file names already read


def _check_fingerprint(fingerprint: str) -> str:
    if not isinstance(fingerprint, str) or not _SAFE_NAME.match(fingerprint) or fingerprint in {".", ".."}:
        raise ValueError(f"fingerprint {fingerprint!r} is not a safe folder name")
    return fingerprint


def _encode_keys(hashes: Sequence[str]) -> np.ndarray:
    for h in hashes:
        if not isinstance(h, str) or not 0 < len(h) <= MAX_KEY_CHARS:
            raise ValueError(f"cache key {h!r} must be a non-empty string of at most {MAX_KEY_CHARS} characters")
    try:
        return np.array(list(hashes), dtype=f"S{max(len(h) for h in hashes)}")
    except UnicodeEncodeError as err:
        raise ValueError("cache keys must be ASCII (use document_hash)") from err


class EmbeddingCache:
    """Item vectors on disk under `directory`, keyed by (model fingerprint, document hash).

    Thread-safe within a process; several processes may read and write the same directory (each
    shard has a unique name and appears atomically). Entries are never overwritten: the first
    vector stored for a key wins.
    """

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self._indices: dict[str, _Index] = {}
        self._lock = threading.RLock()
        self._counters = {"hits": 0, "misses": 0, "written": 0, "shards_written": 0, "shards_skipped": 0}

    # reading

    def _shard_names(self, folder: Path) -> list[str]:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        # a `.tmp` file is a shard still being written, or one a crash left behind: never read
        return sorted(n for n in names if n.startswith(SHARD_PREFIX) and n.endswith(SHARD_SUFFIX))

    def _read_shard(self, path: Path) -> tuple[list[str], np.ndarray] | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                keys, vectors = data["hashes"], data["vectors"]
        except FileNotFoundError:  # compacted away by another process since the listing
            return None
        except Exception as err:  # noqa: BLE001 - a damaged shard costs its entries, never the run
            log.warning("embedding cache: skipping unreadable shard %s (%s)", path, err)
            self._counters["shards_skipped"] += 1
            return None
        ok = keys.ndim == 1 and keys.dtype.kind == "S" and vectors.ndim == 2 and vectors.dtype == np.float32 and len(keys) == len(vectors)
        try:
            decoded = [k.decode("ascii") for k in keys.tolist()] if ok else []
        except UnicodeDecodeError:
            ok = False
        if not ok:
            log.warning("embedding cache: skipping shard %s with unexpected shape or type", path)
            self._counters["shards_skipped"] += 1
            return None
        return decoded, vectors

    def _refresh(self, fingerprint: str) -> _Index:
        """Load the fingerprint's shards not read yet (all of them on first use) into one array."""
        index = self._indices.setdefault(fingerprint, _Index())
        folder = self.directory / fingerprint
        new = [n for n in self._shard_names(folder) if n not in index.shards]
        if not new:
            return index
        loaded: list[tuple[list[str], np.ndarray]] = []
        for name in new:
            shard = self._read_shard(folder / name)
            index.shards.add(name)
            if shard is not None:
                loaded.append(shard)
        if not loaded:
            return index
        # every shard of a fingerprint has the model's width; one that does not is damaged. The
        # width already in memory wins, else the width holding the most rows.
        if index.vectors is not None:
            dim = index.vectors.shape[1]
        else:
            rows_by_dim: dict[int, int] = {}
            for _, vectors in loaded:
                rows_by_dim[vectors.shape[1]] = rows_by_dim.get(vectors.shape[1], 0) + len(vectors)
            dim = max(rows_by_dim, key=rows_by_dim.__getitem__)
        parts: list[np.ndarray] = []
        n_rows = len(index.rows)
        for keys, vectors in loaded:
            if vectors.shape[1] != dim:
                log.warning("embedding cache: skipping a shard of %d-dim vectors under %s (expected %d)", vectors.shape[1], folder, dim)
                self._counters["shards_skipped"] += 1
                continue
            keep = []
            for i, k in enumerate(keys):
                if k not in index.rows:
                    index.rows[k] = n_rows + len(keep)
                    keep.append(i)
            if keep:
                parts.append(vectors[keep] if len(keep) < len(keys) else vectors)
                n_rows += len(keep)
        if parts:
            old = [index.vectors] if index.vectors is not None else []
            index.vectors = np.ascontiguousarray(np.concatenate(old + parts, axis=0), dtype=np.float32)
        return index

    def get_many(self, fingerprint: str, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Look keys up. Returns (found: bool [n], vectors of the found keys in order [n_found, dim])."""
        _check_fingerprint(fingerprint)
        with self._lock:
            index = self._refresh(fingerprint)
            rows = np.fromiter((index.rows.get(h, -1) for h in hashes), dtype=np.int64, count=len(hashes))
            found = rows >= 0
            if index.vectors is None:
                vectors = np.zeros((0, 0), dtype=np.float32)
            else:
                vectors = index.vectors[rows[found]]
            self._counters["hits"] += int(found.sum())
            self._counters["misses"] += int(len(found) - found.sum())
        return found, vectors

    # writing

    def put_many(self, fingerprint: str, hashes: Sequence[str], vectors: np.ndarray) -> int:
        """Store vectors for keys not yet cached (one new shard). Returns how many were written.

        Rows with a non-finite value are not stored. Raises ValueError on mismatched lengths, a
        vector width that differs from what the fingerprint already holds, or a bad key.
        """
        _check_fingerprint(fingerprint)
        vectors = np.asarray(vectors, dtype=np.float32)
        hashes = list(hashes)
        if vectors.ndim != 2 or len(vectors) != len(hashes):
            raise ValueError(f"put_many needs one vector per key: {len(hashes)} keys, vectors of shape {vectors.shape}")
        if not hashes:
            return 0
        _encode_keys(hashes)  # validate before touching the disk
        with self._lock:
            index = self._refresh(fingerprint)
            if index.vectors is not None and index.vectors.shape[1] != vectors.shape[1]:
                raise ValueError(
                    f"fingerprint {fingerprint} holds {index.vectors.shape[1]}-dim vectors, got {vectors.shape[1]}-dim ones"
                )
            finite = np.isfinite(vectors).all(axis=1)
            seen: set[str] = set()
            keep = []
            for i, h in enumerate(hashes):
                if finite[i] and h not in index.rows and h not in seen:
                    seen.add(h)
                    keep.append(i)
            if not keep:
                return 0
            keys = [hashes[i] for i in keep]
            new_vectors = np.ascontiguousarray(vectors[keep])
            name = self._write_shard(fingerprint, _encode_keys(keys), new_vectors)
            # our own shard goes straight into the index: no re-read
            index.shards.add(name)
            start = len(index.rows)
            for j, k in enumerate(keys):
                index.rows[k] = start + j
            old = [index.vectors] if index.vectors is not None else []
            index.vectors = np.concatenate(old + [new_vectors], axis=0)
            self._counters["written"] += len(keys)
            self._counters["shards_written"] += 1
        return len(keys)

    def _write_shard(self, fingerprint: str, keys: np.ndarray, vectors: np.ndarray) -> str:
        folder = self.directory / fingerprint
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{SHARD_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex}{SHARD_SUFFIX}"
        tmp = folder / (name + TMP_SUFFIX)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, hashes=keys, vectors=vectors)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / name)  # atomic: readers see the whole shard or none of it
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return name

    # maintenance

    def compact(self, fingerprint: str) -> int:
        """Merge the fingerprint's shards into one; also removes stale temporary files.

        Safe with concurrent readers and writers: the merged shard appears (atomically) before
        the shards it replaces are removed, and a shard written meanwhile is left alone.
        Returns the number of shard files removed.
        """
        _check_fingerprint(fingerprint)
        folder = self.directory / fingerprint
        with self._lock:
            index = self._refresh(fingerprint)
            merged = sorted(index.shards)
            removed = 0
            if len(merged) > 1 and index.vectors is not None:
                keys = sorted(index.rows, key=index.rows.__getitem__)
                name = self._write_shard(fingerprint, _encode_keys(keys), index.vectors)
                for old in merged:
                    (folder / old).unlink(missing_ok=True)
                    removed += 1
                index.shards = {name}
            now = time.time()
            for path in folder.glob(f"*{TMP_SUFFIX}"):
                try:
                    if now - path.stat().st_mtime > STALE_TMP_SECONDS:
                        path.unlink()
                except FileNotFoundError:
                    pass
        return removed

    def fingerprints(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and _SAFE_NAME.match(p.name))

    def stats(self, fingerprint: str | None = None) -> dict[str, Any]:
        """Entries, shards and bytes on disk per fingerprint, plus this object's hit/miss counters."""
        per: dict[str, dict[str, int]] = {}
        with self._lock:
            for fp in [fingerprint] if fingerprint else self.fingerprints():
                _check_fingerprint(fp)
                index = self._refresh(fp)
                folder = self.directory / fp
                names = self._shard_names(folder)
                size = 0
                for n in names:
                    try:
                        size += (folder / n).stat().st_size
                    except FileNotFoundError:
                        pass
                dim = int(index.vectors.shape[1]) if index.vectors is not None else 0
                per[fp] = {"items": len(index.rows), "dim": dim, "shards": len(names), "bytes": size}
            counters = dict(self._counters)
        return {
            "directory": str(self.directory),
            "fingerprints": per,
            "items": sum(v["items"] for v in per.values()),
            "shards": sum(v["shards"] for v in per.values()),
            "bytes": sum(v["bytes"] for v in per.values()),
            **counters,
        }


# --- encoding through the cache ---------------------------------------------------------------------


def encode_with_cache(
    encoder: Any,
    texts: Sequence[str],
    cache: EmbeddingCache | None,
    batch_size: int | None = None,
    progress: bool = True,
    desc: str = "embedding",
    fingerprint: str | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Embed texts, computing only those the cache lacks; returns (vectors in input order, stats).

    Identical texts are embedded once. New vectors are written back to the cache (a failed write
    is logged, never raised: the vectors are still returned). With `cache=None` every distinct
    text is encoded. Pass `fingerprint` to skip recomputing `model_fingerprint(encoder)`.

    stats: total (texts given), unique (distinct texts), cached (distinct texts read from the
    cache), computed (distinct texts encoded; cached + computed == unique), seconds (wall time,
    fingerprint included).
    """
    start = time.perf_counter()
    texts = list(texts)
    position: dict[str, int] = {}  # document hash -> row among the distinct texts
    distinct: list[str] = []
    inverse = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        h = document_hash(text)
        j = position.get(h)
        if j is None:
            j = position[h] = len(distinct)
            distinct.append(text)
        inverse[i] = j
    keys = list(position)
    dim = int(encoder.dim)
    unique_vectors = np.zeros((len(distinct), dim), dtype=np.float32)
    found = np.zeros(len(distinct), dtype=bool)

    if cache is not None and distinct:
        fingerprint = fingerprint or model_fingerprint(encoder)
        found, cached = cache.get_many(fingerprint, keys)
        if found.any() and cached.shape[1] != dim:
            log.warning("embedding cache: %s holds %d-dim vectors, the encoder makes %d-dim ones; ignoring it", fingerprint, cached.shape[1], dim)
            found = np.zeros(len(distinct), dtype=bool)
            cache = None
        elif found.any():
            unique_vectors[found] = cached

    missing = np.flatnonzero(~found)
    if len(missing):
        computed = encoder.encode([distinct[j] for j in missing], batch_size=batch_size, progress=progress, desc=desc)
        unique_vectors[missing] = computed
        if cache is not None:
            try:
                cache.put_many(fingerprint, [keys[j] for j in missing], computed)
            except OSError as err:
                log.warning("embedding cache: could not store %d vectors under %s (%s)", len(missing), cache.directory, err)

    stats = {
        "total": len(texts),
        "unique": len(distinct),
        "cached": int(found.sum()),
        "computed": int(len(missing)),
        "seconds": time.perf_counter() - start,
    }
    return unique_vectors[inverse], stats


__all__ = [
    "EmbeddingCache",
    "document_hash",
    "encode_with_cache",
    "fingerprint_parts",
    "model_fingerprint",
]
