#!/usr/bin/env bash
# The main job on the embedded default: run the training DAG on online-retail through Airflow,
# then show the metrics and how to look at the results. Called by `make demo` (which sets the env).
set -euo pipefail
cd "$(dirname "$0")/.."
# DATASET=completejourney (make demo DATASET=...) runs the real-sized shop with its own time protocol
conf=${RECSYS_DEMO_CONF:-"{\"dataset\": \"${DATASET:-online-retail}\"}"}
log="$RECSYS_HOME/demo-last.log"
echo "== running the recsys_training DAG (conf: $conf); full log: $log"
start=$(date +%s)
if ! .venv/bin/airflow dags test recsys_training --conf "$conf" 2>&1 | tee "$log" | grep --line-buffered -oE "\[DAG TEST\] end task task_id=[a-z_]+|step [0-9]+: validation score.*\)|early stop.*|Validation failed.*|^  - .*|ERROR.*" ; then
  true
fi
state=$(grep -oE "DagRun Finished: .*state=[a-z]+" "$log" | tail -1 | grep -oE "state=[a-z]+" || true)
echo "== DAG run finished: ${state:-unknown} in $(( $(date +%s) - start )) s"
.venv/bin/recsys summary || true
# an example request in the data set's own words
case "${DATASET:-online-retail}" in
  online-retail) try='.venv/bin/recsys recommend --item ORc5e8c621fdb3    (LUNCH BAG RED RETROSPOT; more in the README'"'"'s "Try it")' ;;
  completejourney) try='.venv/bin/recsys recommend --text "fluid milk white only"    (any description; more in the README'"'"'s "Try it")' ;;
  movielens-100k) try='.venv/bin/recsys recommend --text "Sci-Fi Action Adventure"    (any description; more in the README'"'"'s "Try it")' ;;
  *) try='.venv/bin/recsys recommend --text "<any product description>"    (more in the README'"'"'s "Try it")' ;;
esac
report=$(ls -t "$RECSYS_HOME"/runs/*/evaluation/report.html 2>/dev/null | head -1 || true)
cat <<MSG

== The gate's report (open in a browser): ${report:-none (the run stopped before the gate)}

== Look at it
  Airflow UI : make ui          -> http://localhost:8080 (user admin, password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)
  MLflow UI  : make mlflow-ui   -> http://localhost:5000 (experiment recsys-training, model recsys-item-encoder)
  Try it     : $try
  Weaker run : RECSYS_DEMO_CONF='{"candidate": "text", "max_train_steps": 0}' make demo   (the gate refuses it)
MSG
[ "$state" = "state=success" ]
