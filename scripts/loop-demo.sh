#!/usr/bin/env bash
# See the continuous-training loop close, on this machine, with the real components:
#   service -> drifted traffic + reviewers' feedback -> drift_check DAG -> retrain DAG
#   -> gate -> reload, while a canary keeps calling the service (no failed request).
#
# Needs a champion in the registry (`make pipeline`) and the Airflow venv (`make
# airflow-venv`). Every setting comes from the usual RAKUTEN_* variables; the demo's own:
#   DEMO_PORT (8000), DEMO_LIMIT (300 products), DEMO_RATE (20/s), DEMO_FEEDBACK (0.5),
#   DEMO_DIR (reports/loop-demo: logs, Airflow home, summaries),
#   DEMO_RATE_LIMIT (1000/minute: the service's RAKUTEN_RATE_LIMIT_PREDICT for the demo).
# The service is secured: without RAKUTEN_JWT_SECRET / RAKUTEN_ADMIN_PASSWORD the demo makes
# random ones for its run. With `rakuten-mlops users` it creates the reviewer
# `loop-demo-sim` (traffic and feedback; one API key for the traffic, one for the canary)
# and an API key of the first admin (RAKUTEN_ADMIN_USERNAME, for the reload); the keys are
# revoked when the demo ends.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CLI="$ROOT/.venv/bin/rakuten-mlops"
AIRFLOW="$ROOT/.venv-airflow/bin/airflow"
PORT=${DEMO_PORT:-8000}
URL="http://127.0.0.1:$PORT"
DIR=${DEMO_DIR:-$ROOT/reports/loop-demo}
mkdir -p "$DIR"
[[ -x "$CLI" ]] || { echo "run make install first"; exit 1; }
[[ -x "$AIRFLOW" ]] || bash scripts/airflow-venv.sh

export RAKUTEN_SERVICE_URL="$URL"
random_secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(48))'; }
export RAKUTEN_JWT_SECRET="${RAKUTEN_JWT_SECRET:-$(random_secret)}"
export RAKUTEN_ADMIN_PASSWORD="${RAKUTEN_ADMIN_PASSWORD:-$(random_secret)}"
ADMIN="${RAKUTEN_ADMIN_USERNAME:-admin}"
echo "== 1. the service, serving the registry champion, on $URL"
RAKUTEN_RATE_LIMIT_PREDICT="${DEMO_RATE_LIMIT:-1000/minute}" \
  "$CLI" serve --host 127.0.0.1 --port "$PORT" > "$DIR/service.log" 2>&1 &
SERVICE_PID=$!
CANARY_PID=""
KEY_IDS=()
cleanup() {
  [[ -n "$CANARY_PID" ]] && kill "$CANARY_PID" 2>/dev/null || true
  for id in "${KEY_IDS[@]}"; do "$CLI" users api-key revoke "$id" > /dev/null 2>&1 || true; done
  kill "$SERVICE_PID" 2>/dev/null || true
  wait "$SERVICE_PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 240); do
  curl -fs "$URL/ready" > /dev/null 2>&1 && break
  kill -0 "$SERVICE_PID" 2>/dev/null || { tail -20 "$DIR/service.log"; exit 1; }
  sleep 0.5
done
# new_key VAR USER NAME: a new API key of USER into VAR (its id goes to KEY_IDS).
new_key() {
  local key
  key=$("$CLI" users api-key create "$2" --name "$3" 2> "$DIR/api-key.log") \
    || { cat "$DIR/api-key.log" >&2; exit 1; }
  KEY_IDS+=("$(grep -oE 'API key [0-9]+' "$DIR/api-key.log" | grep -oE '[0-9]+$')")
  printf -v "$1" '%s' "$key"
}
if ! "$CLI" users list 2> /dev/null | grep -qw "loop-demo-sim"; then
  random_secret | "$CLI" users create loop-demo-sim --role reviewer --password-stdin 2> /dev/null
fi
new_key SIM_KEY loop-demo-sim "loop demo traffic"
new_key CANARY_KEY loop-demo-sim "loop demo canary"
new_key ADMIN_KEY "$ADMIN" "loop demo reload"
curl -fs -H "X-API-Key: $SIM_KEY" "$URL/v1/model" | python3 -c 'import json,sys; m=json.load(sys.stdin); print("serving", m["name"], "version", m["version"])'

echo "== 2. drifted traffic (titles in capitals, no description, no image) + reviewers' feedback"
RAKUTEN_SERVICE_API_KEY="$SIM_KEY" "$CLI" simulate traffic \
  --drift capitals --drift no-description --drift no-images \
  --limit "${DEMO_LIMIT:-300}" --rate "${DEMO_RATE:-20}" --feedback-share "${DEMO_FEEDBACK:-0.5}" \
  --summary-out "$DIR/traffic.json"
# A canary: plain traffic during the retraining and the reload; its errors must stay 0.
RAKUTEN_SERVICE_API_KEY="$CANARY_KEY" "$CLI" simulate traffic \
  --limit 100000 --rate 2 --max-seconds 3600 --feedback-share 0 \
  --summary-out "$DIR/canary.json" > "$DIR/canary.log" 2>&1 &
CANARY_PID=$!
# The DAGs' tasks inherit this environment: the reload (an admin route) uses this key.
export RAKUTEN_SERVICE_API_KEY="$ADMIN_KEY"

echo "== 3. the DAGs, in Airflow's own environment (home: $DIR/airflow)"
export AIRFLOW_HOME="$DIR/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/orchestration/airflow/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW_VAR_RAKUTEN_CLI="$CLI" AIRFLOW_VAR_RAKUTEN_PROJECT_DIR="$ROOT"
"$AIRFLOW" db migrate > "$DIR/airflow-migrate.log" 2>&1
if "$CLI" monitor --help > /dev/null 2>&1; then
  "$AIRFLOW" dags test drift_check > "$DIR/drift_check.log" 2>&1 || true
  grep -h "decision:" "$DIR/drift_check.log" | sed 's/.*decision:/  decision:/' | sort -u
  grep -q "trigger_retrain.*success\|Marking task as SUCCESS.*trigger_retrain" "$DIR/drift_check.log" \
    && echo "  drift_check triggered retrain" || echo "  drift_check did not trigger retrain"
  METRICS_AUTH=(); [[ -n "${RAKUTEN_METRICS_TOKEN:-}" ]] && METRICS_AUTH=(-H "Authorization: Bearer $RAKUTEN_METRICS_TOKEN")
  echo "  /metrics:"; curl -fs "${METRICS_AUTH[@]}" "$URL/metrics" | grep -E "^rakuten_drift_(detected|share) " | sed 's/^/    /'
else
  echo "  (no \`monitor\` command in this checkout: drift_check skipped)"
fi
"$AIRFLOW" dags test retrain -c '{"force": true, "reason": "loop demo"}' > "$DIR/retrain.log" 2>&1
DECISION=$(ls -t reports/airflow/retrain/*.json | head -1)
python3 - "$DECISION" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"  decision {sys.argv[1]}: {d['status']} (version {d.get('version')}, "
      f"champion v{d.get('champion_before')} -> v{d.get('champion_after')})")
for reason in d.get("reasons", []) + (d.get("gate") or {}).get("reasons", []):
    print(f"    {reason}")
scores = d.get("feedback_scores") or {}
for role in ("champion", "challenger"):
    if role in scores:
        print(f"    recent feedback, {role} v{scores[role].get('version')}: "
              f"accuracy {scores[role].get('accuracy')}")
print(f"    reload: {d.get('reload')}")
EOF

echo "== 4. the service now"
sleep 3
kill -TERM "$CANARY_PID" 2>/dev/null || true
wait "$CANARY_PID" 2>/dev/null || true
CANARY_PID=""
curl -fs -H "X-API-Key: $SIM_KEY" "$URL/v1/model" | python3 -c 'import json,sys; m=json.load(sys.stdin); print("serving version", m["version"], "loaded at", m["loaded_at"])'
kill -0 "$SERVICE_PID" && echo "service never restarted (pid $SERVICE_PID)"
[[ -f "$DIR/canary.json" ]] && python3 -c "import json; c=json.load(open('$DIR/canary.json')); print(f\"canary: {c['sent']} requests, {c['errors']} errors, {c['rate_limited']} rate limited, versions {c['versions']}\")" \
  || tail -3 "$DIR/canary.log"
