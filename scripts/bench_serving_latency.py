"""Latency of the served model once it is loaded: p50 / p95 per request kind, one request at a time.

Loads a model directory (`runs/<run>/model/`, what `package` writes and MLflow registers) with
`ItemRecommender.load` and answers, one at a time: related items of one catalog item, a 3-item cart, a
free-text (new item) request and a 4-item bundle, each over `--requests` items drawn with a fixed seed
(the text request reuses catalog titles as descriptions). The first request of each kind is a warm-up
(the encoder and the ANN index load lazily) and is not counted.

    .venv/bin/python scripts/bench_serving_latency.py RUN_DIR/model [--requests 200]
    .venv/bin/python scripts/bench_serving_latency.py RUN_DIR/model --url http://127.0.0.1:5001
        # through a running `recsys serve` (MLflow's scoring server): HTTP and JSON included
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", default=None, help="time requests to this scoring server (`recsys serve`) instead of in-process calls")
    args = parser.parse_args()

    from recsys.serving import ItemRecommender

    start = time.perf_counter()
    model = ItemRecommender.load(args.model_dir)
    print(f"loaded {len(model.item_ids):,} items in {time.perf_counter() - start:.1f} s")
    rng = np.random.default_rng(args.seed)
    ids = model.item_ids
    picks = rng.choice(len(ids), size=(args.requests + 1, 3), replace=True)
    kinds = {
        "related item": lambda p: ({"item_id": [ids[p[0]]]}, {"k": 10}),
        "cart of 3": lambda p: ({"cart": [",".join(ids[j] for j in p)]}, {"k": 10}),
        "text (new item)": lambda p: ({"text": [model.titles[p[0]] or "milk"]}, {"k": 10}),
        "bundle of 4": lambda p: ({"cart": [ids[p[0]]]}, {"k": 4, "mode": "bundle"}),
    }
    if args.url:
        import json
        import urllib.request

        def predict(frame: pd.DataFrame, params: dict) -> None:
            body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False)), "params": params}).encode()
            req = urllib.request.Request(args.url.rstrip("/") + "/invocations", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                r.read()
    else:

        def predict(frame: pd.DataFrame, params: dict) -> None:
            model.predict(None, frame, params=params)

    print(f"{'request':<18}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}   ({'HTTP ' + args.url if args.url else 'in process'})")
    for name, make in kinds.items():
        times = []
        for n, p in enumerate(picks):
            frame, params = make(p)
            t = time.perf_counter()
            predict(pd.DataFrame(frame), params)
            if n:  # the first is a warm-up
                times.append((time.perf_counter() - t) * 1000)
        print(f"{name:<18}{np.percentile(times, 50):>10.1f}{np.percentile(times, 95):>10.1f}{max(times):>10.1f}", flush=True)


if __name__ == "__main__":
    main()
