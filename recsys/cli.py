"""`recsys` command line: look at results and use the champion without opening a UI.

    recsys summary                 metrics of the latest training run, and the registry's state
    recsys recommend --item ID        top-k related items from models:/NAME@champion, with reasons
    recsys recommend --cart ID,ID     items that complete the basket
    recsys recommend --history ID,ID  for a user's history (oldest first, weighted by recency and purchase count)
    recsys recommend --text "..."     for a new item described by its text (cold start)
    recsys recommend                  a new user with nothing to go on: the most popular items
    recsys bundle --cart ID,ID [--explain]   a complete-the-basket bundle (--budget 40 on a catalog with prices)
    recsys serve [--port 5001]        keep the champion loaded: MLflow's scoring server (POST /invocations)
    recsys --server http://127.0.0.1:5001 recommend --item ID   ask the running server instead of loading the model
    recsys rollback --reason "..."    champion back to the version it replaced (and republish)
    recsys publish                    write the champion's recommendations for every item to the warehouse
    recsys replay --source movielens-100k --as ml-replay --count 8   drop 8 weekly windows into the inbox
    recsys replay --source files:items.csv,interactions.csv --as shop-replay --freq MS   a shop's files, monthly
    recsys replay --source warehouse:shop --as shop-replay   a data set already in the warehouse
    recsys ingest [--dataset ml-replay]   load the inbox's ready batches into the warehouse (what recsys_ingest runs)
    recsys monitor                    one drift check of the champion's data set (what recsys_drift_monitor runs)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from recsys.paths import resolve_tracking_uri, resolve_warehouse_url


def summary(experiment: str, model_name: str) -> int:
    """Print the latest run's test metrics (fine-tuned vs frozen vs popularity) and the champion."""
    from recsys import tracking
    from recsys.config import EvalConfig
    from recsys.evaluation.metrics import metric_name

    c = tracking.client(resolve_tracking_uri())
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1) if exp else []
    if not runs:
        print(f"no run in experiment {experiment!r} yet")
        return 1
    run = runs[0]
    m = run.data.metrics
    print(f"MLflow run {run.info.run_id} ({run.info.run_name}), status {run.info.status}")
    print(f"data: {int(m.get('data.items', 0))} items, {int(m.get('data.interactions', 0))} interactions; "
          f"split {run.data.tags.get('split.protocol')}: {int(m.get('split.users', 0))} users, {int(m.get('split.cold_items', 0))} cold items")
    # the run's own k (its logged eval.k): metric names cannot tell it (other cut-offs are logged too)
    k = int(float(run.data.params.get("eval.k") or EvalConfig.k))
    wanted = [metric_name(base, k) for base in ("recall", "ndcg", "mrr", "cold_recall", "coverage", "long_tail_share")]
    present = {key.split(".", 2)[2] for key in m if key.startswith("test.")}
    keys = [w for w in wanted if w in present]
    header = f"{'model (test split)':<22}" + "".join(f"{k:>18}" for k in keys)
    print(header)
    print("-" * len(header))
    from recsys.model.baselines import BASELINES

    for model in ("hybrid", "fused", "finetuned", *BASELINES):
        if not any(f"test.{model}.{k}" in m for k in keys):
            continue  # not scored in this run (ALS is compared on the scalable path only)
        print(f"{model:<22}" + "".join(f"{m.get(f'test.{model}.{k}', float('nan')):>18.4f}" for k in keys))
    if "train.steps" in m:
        best = int(m.get("train.best_step", 0))
        kept = "the frozen encoder was kept: fine-tuning did not beat it on validation" if best == 0 else f"weights of step {best} kept"
        print(f"fine-tuning: {int(m['train.steps'])} steps on {int(m.get('train.pairs', 0))} pairs in {m.get('train.seconds', 0):.0f} s; {kept}")
    if "fusion.kept" in run.data.params:
        p = run.data.params
        kept = p["fusion.kept"] == "True"
        how = f"kept the weights of step {int(m.get('fusion.best_step', 0))}" if kept else "not kept: it did not beat the text vectors"
        print(f"fusion with numeric signals ({p.get('fusion.signals_used', 'none')}; judged on {p.get('fusion.selected_on', '-')}): {how}")
    version = run.data.tags.get("registered_version")
    print(f"registered: {model_name} version {version} — gate: {run.data.tags.get('decision')}")
    if run.data.tags.get("gate.reasons"):
        print(f"            {run.data.tags['gate.reasons']}")
    print(f"champion:   {model_name} version {tracking.champion_version(c, model_name)}")
    return 0


def _champion(model_name: str):
    import mlflow.pyfunc

    from recsys import tracking

    tracking.client(resolve_tracking_uri())
    return mlflow.pyfunc.load_model(f"models:/{model_name}@{tracking.CHAMPION}")


def _predict(model_name: str, server: str | None, frame, params: dict):
    """The champion's answer: from a running scoring server (`recsys serve`) when given, else loaded here."""
    if not server:
        return _champion(model_name).predict(frame, params=params)
    import json
    import urllib.error
    import urllib.request

    import pandas as pd

    payload = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False)), "params": params}
    request = urllib.request.Request(server.rstrip("/") + "/invocations", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return pd.DataFrame(json.loads(response.read())["predictions"])
    except urllib.error.HTTPError as err:  # the server's error (a bad id, a budget without prices) as one line
        raise ValueError(_server_error(err.read().decode(errors="replace"))) from None
    except urllib.error.URLError as err:
        raise ConnectionError(f"no scoring server at {server} ({err.reason}): start one with `recsys serve`") from None


def _print_table(out) -> None:
    """rank, title, score, then the reasons on their own indented lines: readable in a terminal."""
    if out.empty:
        print("(no items)")
        return
    for row in out.itertuples(index=False):
        score = "" if row.score != row.score else f"{row.score:8.4f}"  # NaN: a note, not an item
        title = row.title if row.title is not None else ""
        print(f"{row.rank:>3}  {score}  {title}  [{row.item_id}]" if row.item_id else f"  -  {row.reasons}")
        if row.item_id and row.reasons:
            for reason in str(row.reasons).split(" | "):
                print(f"       - {reason}")


def recommend(
    model_name: str, item_id: str | None, text: str | None, k: int, cart: str | None = None, history: str | None = None, diversity: float = 0.0, server: str | None = None
) -> int:
    """Print the champion's top-k for an item, a cart, a history or a product text."""
    import pandas as pd

    frame = pd.DataFrame({"item_id": [item_id], "cart": [cart], "history": [history], "text": [text]})
    out = _predict(model_name, server, frame, {"k": k, "diversity": diversity})
    if text and not (item_id or cart or history):
        # true of the request, not of each item: said once, above the list
        print("Your description is treated as a new item: the model's encoder embeds it, and it is scored through the catalog items closest in meaning.")
    _print_table(out)
    return 0


def bundle(model_name: str, cart: str, k: int, budget: float | None, explain: bool = False, server: str | None = None) -> int:
    """Print a complete-the-basket bundle for a cart; `explain` adds what each objective term contributed."""
    import pandas as pd

    out = _predict(model_name, server, pd.DataFrame({"cart": [cart]}), {"k": k, "mode": "bundle", "budget": budget or 0.0, "explain": explain})
    _print_table(out)
    picked = out[out["item_id"].notna()] if not out.empty else out
    if budget and len(picked):
        print(f"bundle of {len(picked)} items; budget {budget:g}")
    if explain and len(picked):
        if "breakdown" in picked:
            _print_breakdown(picked)
        else:
            print("\n(no breakdown: this model version was registered before bundles could explain themselves; retrain to get it)")
    return 0


def _print_breakdown(picked) -> None:
    """Each pick's marginal gain by term, and each term's share of the bundle's objective."""
    import json

    from recsys.serving import BREAKDOWN_TERMS

    terms = [json.loads(b) for b in picked["breakdown"]]
    names = [t for t in BREAKDOWN_TERMS if t != "total"]
    print("\nobjective = relevance + complementarity + preference + diversity - redundancy (each pick's marginal gain)")
    print(f"{'rank':>4}  " + "".join(f"{n:>16}" for n in [*names, "total"]))
    for rank, t in zip(picked["rank"], terms, strict=True):
        print(f"{int(rank):>4}  " + "".join(f"{t.get(n, 0.0):>16.4f}" for n in [*names, "total"]))
    sums = {n: sum(t.get(n, 0.0) for t in terms) for n in [*names, "total"]}
    print(f"{'sum':>4}  " + "".join(f"{sums[n]:>16.4f}" for n in [*names, "total"]))
    if sums["total"] > 0:
        signed = {n: -sums[n] if n == "redundancy" else sums[n] for n in names}  # a penalty: it takes away
        shares = ", ".join(f"{n} {signed[n] / sums['total']:+.0%}" for n in names if abs(signed[n]) > 1e-9)
        print(f"share of the objective: {shares}")


def _server_error(body: str) -> str:
    """The model's own error out of MLflow's scoring-server reply: the exception line of its stack trace."""
    import json

    try:
        reply = json.loads(body)
    except ValueError:
        return " ".join(body.split())[:500]
    lines = [line.strip() for line in str(reply.get("stack_trace") or "").splitlines() if line.strip()]
    last = lines[-1] if lines else str(reply.get("message", body))
    return " ".join(last.split(": ", 1)[-1].split() if lines and ": " in last else last.split())[:500]


def serve(model_name: str, host: str, port: int) -> int:
    """Keep the champion loaded behind MLflow's scoring server (the pyfunc's own request format)."""
    import os

    from recsys import tracking

    c = tracking.client(resolve_tracking_uri())
    version = tracking.champion_version(c, model_name)
    if version is None:
        print(f"{model_name} has no champion to serve", file=sys.stderr)
        return 1
    url = f"http://{host}:{port}"
    print(f"serving {model_name} version {version} (the champion now; restart to follow a new one) on {url}", flush=True)
    print(f"  try: recsys --server {url} recommend --item ID    or POST {url}/invocations (MLflow's pyfunc format)", flush=True)
    bin_dir = os.path.dirname(sys.executable)
    mlflow_bin = os.path.join(bin_dir, "mlflow")
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")  # MLflow starts `uvicorn` from PATH
    # the version, not the alias: what answers is what was announced, even if the alias moves meanwhile
    argv = [mlflow_bin, "models", "serve", "-m", f"models:/{model_name}/{version}", "--env-manager", "local", "--host", host, "--port", str(port), "--workers", "1"]
    os.execv(mlflow_bin, argv)
    return 0  # not reached


def publish(model_name: str, k: int) -> int:
    """Write the champion's top-k related items and a bundle for every catalog item to the warehouse."""
    from recsys import tracking
    from recsys.stages.publish import publish_recommendations

    c = tracking.client(resolve_tracking_uri())
    version = tracking.champion_version(c, model_name)
    if version is None:
        print(f"{model_name} has no champion to publish", file=sys.stderr)
        return 1
    result = publish_recommendations(resolve_warehouse_url(), tracking.load_recommender(model_name, version), model_name, version, k=k)
    print(f"published {model_name} version {version}: {result.rows} rows for {result.items} items in {result.seconds:.1f} s")
    return 0


def rollback(model_name: str, reason: str, republish: bool, k: int) -> int:
    """Point the champion back at the version it replaced, recording who and why, then republish."""
    import getpass

    from recsys import tracking

    c = tracking.client(resolve_tracking_uri())
    try:
        old, new = tracking.rollback_champion(c, model_name, reason, actor=getpass.getuser())
    except ValueError as err:
        print(f"rollback refused: {err}", file=sys.stderr)
        return 1
    print(f"champion of {model_name}: version {old} -> version {new} ({reason})")
    return publish(model_name, k) if republish else 0


def replay_cmd(source: str, name: str, freq: str, start: int, count: int | None, shuffle: bool, seed: int) -> int:
    """Drop time windows of a source (packaged name, warehouse:<name>, files:<items>,<interactions>) into the inbox."""
    from recsys.errors import DataValidationError
    from recsys.stages.ops import replay_into_inbox

    try:
        written = replay_into_inbox(source, name, freq, start, count, shuffle, seed)
    except (ValueError, DataValidationError) as err:  # a bad --source or file, an empty or self-referencing warehouse data set
        print(f"replay refused: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    print(f"{len(written)} batch(es) of {source} in the inbox of {name!r}{' (shuffled: no drift by construction)' if shuffle else ''}")
    return 0


def ingest_cmd(dataset: str | None) -> int:
    from recsys.stages.ops import ingest_all

    result = ingest_all(dataset)
    for b in result["accepted"]:
        print(f"accepted {b['dataset']}/{b['batch_id']}: {b['interactions']} interactions, {b['items']} items")
    for b in result["rejected"]:
        print(f"REJECTED {b['dataset']}/{b['batch_id']}: {b.get('summary') or _one_line(b['error'])} — see {b['path']}/error.json", file=sys.stderr)
    for p in result.get("problems", []):
        print(f"SKIPPED {p['dataset']} ({p['stage']}): {p['error']}", file=sys.stderr)
    print(f"warehouse: {result['counts']}")
    return 1 if result["rejected"] or result.get("problems") else 0


def monitor_cmd(model_name: str, window: str) -> int:
    from recsys.stages.ops import monitor

    result = monitor(model_name, window)
    print(f"{result['status']}" + (f" — champion v{result.get('champion_version')} on {result.get('dataset')}" if result.get("dataset") else ""))
    for reason in result.get("reasons", []):
        print(f"  - {reason}")
    if result.get("report"):
        print(f"report: {result['report']}")
    return 0


def _one_line(err: BaseException | str) -> str:
    """An error as one line: a validation error's first broken rule (and how many more), else the message."""
    from recsys.errors import DataValidationError

    if isinstance(err, DataValidationError) and err.failures:
        more = f" (+{len(err.failures) - 1} more rule(s))" if len(err.failures) > 1 else ""
        return f"{err.table} ({err.source}): {' '.join(err.failures[0].split())}{more}"
    text = " ".join(str(err).split()) or type(err).__name__
    # a ValueError's message is written for the user; other types say what kind of failure it was
    return text if isinstance(err, (str, ValueError, OSError)) else f"{type(err).__name__}: {text}"


@contextlib.contextmanager
def _quiet_logging(debug: bool, verbose: bool) -> Iterator[None]:
    """The CLI prints its own results: library logs only with --verbose (INFO) or --debug (DEBUG). For the
    command's duration only: `main` called in-process (a test, a notebook, a task) hands the caller's logging
    and warning filters back as they were, instead of silencing every later log of that process."""
    import logging
    import warnings

    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        if debug or verbose:
            logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        else:
            logging.disable(logging.CRITICAL)
            warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.disable(previous)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors are one line on stderr and a non-zero exit (2: bad input or
    arguments, 1: anything else); ``--debug`` shows logs and lets the traceback through."""
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-name", default="recsys-item-encoder")
    parser.add_argument("--debug", action="store_true", help="log everything and show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="show progress logs")
    parser.add_argument("--server", default=None, help="a running `recsys serve` (e.g. http://127.0.0.1:5001): recommend and bundle ask it instead of loading the model")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="latest run's metrics and the champion")
    s.add_argument("--experiment", default="recsys-training")
    r = sub.add_parser("recommend", help="related items from the champion")
    r.add_argument("--item", "--item-id", dest="item_id", help="a catalog item id: related items")
    r.add_argument("--cart", help="comma-separated item ids: items that complete the basket")
    r.add_argument("--history", help="a user's comma-separated item ids, oldest first (weighted by recency and purchase count)")
    r.add_argument("--text", help="a product description: works for items not in the catalog")
    r.add_argument("--diversity", type=float, default=0.0, help="0 = pure relevance; 0.1-0.5 lifts less popular items")
    r.add_argument("-k", type=int, default=10)
    b = sub.add_parser("bundle", help="a complete-the-basket bundle from the champion")
    b.add_argument("--cart", required=True, help="comma-separated item ids (an anchor item alone works)")
    b.add_argument("--budget", type=float, default=None, help="maximum total price of the bundle (needs a catalog with prices)")
    b.add_argument("--explain", action="store_true", help="what each objective term (relevance, complementarity, ...) contributed to each pick")
    b.add_argument("-k", type=int, default=4)
    sv = sub.add_parser("serve", help="keep the champion loaded: MLflow's scoring server on a local port")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=5001)
    rb = sub.add_parser("rollback", help="champion back to the version it replaced")
    rb.add_argument("--reason", required=True, help="why: recorded on both versions in the registry")
    rb.add_argument("--no-publish", action="store_true", help="leave the published recommendations as they are")
    rb.add_argument("-k", type=int, default=10)
    p = sub.add_parser("publish", help="write the champion's recommendations for every item to the warehouse")
    p.add_argument("-k", type=int, default=10)
    rp = sub.add_parser("replay", help="drop time windows of a timestamped data set into the inbox")
    rp.add_argument(
        "--source",
        default="movielens-100k",
        help="timestamped data to replay: a packaged data set name (movielens-100k), warehouse:<data set name> "
        "(as stored; its pseudonymized ids are hashed again on ingestion, so use another --as), or "
        "files:<items path>,<interactions path> (CSV, CSV.gz or Parquet, canonical columns, raw user ids)",
    )
    rp.add_argument("--as", dest="name", default="movielens-replay", help="the inbox folder / warehouse data set name")
    rp.add_argument("--freq", default="W", help="window length (pandas offset alias: W, D, MS)")
    rp.add_argument("--start", type=int, default=0, help="first window to write")
    rp.add_argument("--count", type=int, default=None, help="how many windows (default: all the rest)")
    rp.add_argument("--shuffle", action="store_true", help="windows of the same sizes drawn at random: no drift by construction")
    rp.add_argument("--seed", type=int, default=0)
    ig = sub.add_parser("ingest", help="load the inbox's ready batches into the warehouse")
    ig.add_argument("--dataset", default=None, help="one inbox folder (default: all)")
    mo = sub.add_parser("monitor", help="one drift check of the champion's data set")
    mo.add_argument("--window", default="7D")
    args = parser.parse_args(argv)
    with _quiet_logging(args.debug, args.verbose):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print(f"recsys {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI's contract: one line, no traceback unless --debug
        if args.debug:
            raise
        from recsys.errors import DataValidationError

        code = 2 if isinstance(err, (ValueError, DataValidationError, FileNotFoundError)) else 1
        print(f"recsys {args.command}: error: {_one_line(err)} (--debug for details)", file=sys.stderr)
        return code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "replay":
        return replay_cmd(args.source, args.name, args.freq, args.start, args.count, args.shuffle, args.seed)
    if args.command == "ingest":
        return ingest_cmd(args.dataset)
    if args.command == "monitor":
        return monitor_cmd(args.model_name, args.window)
    if args.command == "rollback":
        return rollback(args.model_name, args.reason, not args.no_publish, args.k)
    if args.command == "publish":
        return publish(args.model_name, args.k)
    if args.command == "summary":
        return summary(args.experiment, args.model_name)
    if args.command == "bundle":
        return bundle(args.model_name, args.cart, args.k, args.budget, args.explain, args.server)
    if args.command == "serve":
        return serve(args.model_name, args.host, args.port)
    return recommend(args.model_name, args.item_id, args.text, args.k, args.cart, args.history, args.diversity, args.server)


if __name__ == "__main__":
    sys.exit(main())
