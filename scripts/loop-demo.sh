#!/usr/bin/env bash
# See the continuous-training loop close, on this machine, with the real components:
#   service + Prometheus -> drifted traffic + reviewers' feedback -> drift_check DAG
#   (report, /metrics, alert firing) -> retrain DAG -> gate -> reload, while a canary keeps
#   calling the service (no failed request).
#
# Needs a champion in the registry (`make pipeline`), the Airflow venv (`make airflow-venv`)
# and prometheus (`make system-deps`). Every setting comes from the usual RAKUTEN_*
# variables; the demo's own:
#   DEMO_PORT (a free port: the service), DEMO_PROMETHEUS_PORT (a free port),
#   DEMO_LIMIT (300 products), DEMO_RATE (20/s), DEMO_FEEDBACK (0.5),
#   DEMO_DIR (reports/loop-demo: logs, service database, Airflow home, Prometheus data),
#   DEMO_RATE_LIMIT (1000/minute: the service's RAKUTEN_RATE_LIMIT_PREDICT and
#   RAKUTEN_RATE_LIMIT_API, the latter counting the reviewers' feedback, for the demo),
#   DEMO_FORCE (0: 1 trains even with fewer new labels than data.feedback.min_new_labels).
#   DEMO_DRIFT ("new-merchant no-images": the `simulate traffic --drift` kinds; a new
#   merchant's products are what reviewed traffic can teach and the test split cannot
#   show; "capitals no-description no-images" is the drift of the earlier recorded runs).
#   DEMO_PROMETHEUS_INTERVAL (2s), DEMO_DATABASE_URL (sqlite:///DEMO_DIR/service.db).
# The service keeps its records in DEMO_DIR/service.db (keep it between runs: the feedback
# export's watermark is a feedback id of that database).
# Demo-only timing, the alert rules themselves are untouched: Prometheus scrapes and
# evaluates the rules every DEMO_PROMETHEUS_INTERVAL (2s) instead of 15s (`rakuten-mlops
# monitor prometheus-config --interval`), and the service re-reads the drift gauges from
# its database every 2 s (RAKUTEN_MONITORING_CACHE_S) instead of 30 s. RakutenDataDrift
# has no `for:`, so it fires at the first evaluation that sees the drift; rules with a
# `for:` of minutes show as pending.
# The service is secured: without RAKUTEN_JWT_SECRET / RAKUTEN_ADMIN_PASSWORD the demo makes
# random ones for its run. With `rakuten-mlops users` it creates the reviewer
# `loop-demo-sim` (traffic and feedback; one API key for the traffic, one for the canary)
# and an API key of the first admin (RAKUTEN_ADMIN_USERNAME, for the reload); the keys are
# revoked when the demo ends. Every process it starts is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CLI="$ROOT/.venv/bin/rakuten-mlops"
AIRFLOW="$ROOT/.venv-airflow/bin/airflow"
DIR=${DEMO_DIR:-$ROOT/reports/loop-demo}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
[[ -x "$CLI" ]] || { echo "run make install first"; exit 1; }
[[ -x "$AIRFLOW" ]] || bash scripts/tool-venv.sh airflow
PROMETHEUS=$(command -v prometheus) || { echo "prometheus not found: run make system-deps"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=${DEMO_PORT:-$(free_port)}
PROM_PORT=${DEMO_PROMETHEUS_PORT:-$(free_port)}
URL="http://127.0.0.1:$PORT"
PROM_URL="http://127.0.0.1:$PROM_PORT"

export RAKUTEN_SERVICE_URL="$URL"
export RAKUTEN_DATABASE_URL="${DEMO_DATABASE_URL:-sqlite:///$DIR/service.db}"
random_secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(48))'; }
export RAKUTEN_JWT_SECRET="${RAKUTEN_JWT_SECRET:-$(random_secret)}"
export RAKUTEN_ADMIN_PASSWORD="${RAKUTEN_ADMIN_PASSWORD:-$(random_secret)}"
ADMIN="${RAKUTEN_ADMIN_USERNAME:-admin}"
# Where /metrics is served (the API port unless RAKUTEN_METRICS_PORT moves it).
METRICS_TARGET="127.0.0.1:${RAKUTEN_METRICS_PORT:-0}"
[[ "${RAKUTEN_METRICS_PORT:-0}" == "0" ]] && METRICS_TARGET="127.0.0.1:$PORT"
METRICS_AUTH=()
[[ -n "${RAKUTEN_METRICS_TOKEN:-}" ]] && METRICS_AUTH=(-H "Authorization: Bearer $RAKUTEN_METRICS_TOKEN")

echo "== 1. the service, serving the registry champion, on $URL (records: $RAKUTEN_DATABASE_URL)"
RAKUTEN_RATE_LIMIT_PREDICT="${DEMO_RATE_LIMIT:-1000/minute}" \
  RAKUTEN_RATE_LIMIT_API="${DEMO_RATE_LIMIT:-1000/minute}" RAKUTEN_MONITORING_CACHE_S=2 \
  "$CLI" serve --host 127.0.0.1 --port "$PORT" > "$DIR/service.log" 2>&1 &
SERVICE_PID=$!
CANARY_PID=""
PROM_PID=""
KEY_IDS=()
cleanup() {
  [[ -n "$CANARY_PID" ]] && kill "$CANARY_PID" 2>/dev/null || true
  [[ -n "$PROM_PID" ]] && { kill "$PROM_PID" 2>/dev/null; wait "$PROM_PID" 2>/dev/null; } || true
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
model_version() {
  curl -fs -H "X-API-Key: $SIM_KEY" "$URL/v1/model" \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["name"], "version", m["version"], "loaded at", m["loaded_at"])'
}
echo "  serving $(model_version)"

echo "== 1b. Prometheus on $PROM_URL: the project's scrape job and alert rules, target $METRICS_TARGET"
mkdir -p "$DIR/prometheus"
TOKEN_OPTION=()
if [[ -n "${RAKUTEN_METRICS_TOKEN:-}" ]]; then
  (umask 077 && printf '%s' "$RAKUTEN_METRICS_TOKEN" > "$DIR/prometheus/metrics-token")
  TOKEN_OPTION=(--metrics-token-file "$DIR/prometheus/metrics-token")
fi
"$CLI" monitor prometheus-config --target "$METRICS_TARGET" \
  --interval "${DEMO_PROMETHEUS_INTERVAL:-2s}" "${TOKEN_OPTION[@]}" \
  --out "$DIR/prometheus/prometheus.yml" > /dev/null
"$PROMETHEUS" --config.file="$DIR/prometheus/prometheus.yml" \
  --storage.tsdb.path="$DIR/prometheus/data" --web.listen-address="127.0.0.1:$PROM_PORT" \
  > "$DIR/prometheus/prometheus.log" 2>&1 &
PROM_PID=$!
# prom EXPR | alerts | wait-up | wait-firing ALERT: Prometheus' HTTP API, read for humans.
prom() {
  python3 - "$PROM_URL" "$@" <<'EOF'
import json, sys, time, urllib.parse, urllib.request

url, what, *args = sys.argv[1:]
http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy


def get(path, **params):
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with http.open(f"{url}{path}{query}", timeout=10) as answer:
        return json.load(answer)["data"]


def alerts():
    return get("/api/v1/alerts")["alerts"]


def until(check, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


if what == "wait-up":
    up = lambda: any(r["value"][1] == "1" for r in get("/api/v1/query", query="up")["result"])
    sys.exit(0 if until(up, 60) else "Prometheus never scraped the service (target down)")
elif what == "wait-firing":
    firing = lambda: any(
        a["labels"]["alertname"] == args[0] and a["state"] == "firing" for a in alerts()
    )
    if not until(firing, 60):
        print(f"    {args[0]} not firing after 60 s")
elif what == "alerts":
    found = sorted(alerts(), key=lambda a: (a["state"], a["labels"]["alertname"]))
    for a in found:
        print(f"    {a['labels']['alertname']:<28} {a['state']:<8} active since "
              f"{a['activeAt'][:19]}Z  {a['annotations'].get('summary', '')}")
    print(f"    ({len(found)} alert(s) firing or pending)")
else:
    hidden = {"__name__", "job", "instance", "project", "service"}
    for r in get("/api/v1/query", query=what)["result"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k not in hidden)
        print(f"    {r['metric'].get('__name__', '')}{{{labels}}} {r['value'][1]}")
EOF
}
prom wait-up || { tail -20 "$DIR/prometheus/prometheus.log"; exit 1; }
echo "  target up; alerts before the traffic:"
prom alerts

DRIFT_ARGS=()
for drift in ${DEMO_DRIFT:-new-merchant no-images}; do DRIFT_ARGS+=(--drift "$drift"); done
echo "== 2. drifted traffic (${DEMO_DRIFT:-new-merchant no-images}) + reviewers' feedback"
RAKUTEN_SERVICE_API_KEY="$SIM_KEY" "$CLI" simulate traffic "${DRIFT_ARGS[@]}" \
  --limit "${DEMO_LIMIT:-300}" --rate "${DEMO_RATE:-20}" --feedback-share "${DEMO_FEEDBACK:-0.5}" \
  --summary-out "$DIR/traffic.json"
# A canary: plain traffic during the retraining and the reload; its errors must stay 0.
RAKUTEN_SERVICE_API_KEY="$CANARY_KEY" "$CLI" simulate traffic \
  --limit 100000 --rate 2 --max-seconds 3600 --feedback-share 0 \
  --summary-out "$DIR/canary.json" > "$DIR/canary.log" 2>&1 &
CANARY_PID=$!
# The DAGs' tasks inherit this environment: the reload (an admin route) uses this key.
export RAKUTEN_SERVICE_API_KEY="$ADMIN_KEY"

echo "== 3. drift_check, in Airflow's own environment (home: $DIR/airflow)"
export AIRFLOW_HOME="$DIR/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/orchestration/airflow/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW_VAR_RAKUTEN_CLI="$CLI" AIRFLOW_VAR_RAKUTEN_PROJECT_DIR="$ROOT"
export AIRFLOW_VAR_RAKUTEN_WORK_DIR="$DIR/runs"
"$AIRFLOW" db migrate > "$DIR/airflow-migrate.log" 2>&1
STARTED=$(date +%s)
"$AIRFLOW" dags test drift_check > "$DIR/drift_check.log" 2>&1 \
  || { echo "  drift_check failed:"; tail -30 "$DIR/drift_check.log"; exit 1; }
DRIFT_JSON=$(ls -t "$DIR"/runs/drift/*.json | head -1)
DRIFT_HTML=$(ls -t "${RAKUTEN_REPORTS_DIR:-reports}"/monitoring/drift-2*.html 2>/dev/null | head -1)
python3 - "$DRIFT_JSON" "$DRIFT_HTML" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
if d.get("status") == "not_enough_rows":
    sys.exit(f"  drift report: {d['message']}")
rows = d.get("rows") or {}
print(f"  drift report {sys.argv[2]} (summary {sys.argv[1]})")
print(f"    dataset_drift {d['dataset_drift']}, drift_share {d['drift_share']:.3f} "
      f"(threshold {d.get('drift_share_threshold')}), {rows.get('current')} predictions vs "
      f"{rows.get('reference')} reference products")
print(f"    drifted columns: {', '.join(d['drifted_columns'])}")
EOF
grep -h "decision:" "$DIR/drift_check.log" | sed 's/.*decision:/  decision:/' | sort -u
TRIGGERED=0
if grep -q "Dag Run triggered successfully.*trigger_dag_id=retrain" "$DIR/drift_check.log"; then
  TRIGGERED=1
  # No scheduler runs here: the triggered run stays queued in the demo's Airflow database,
  # and step 4 runs the retrain DAG itself with `airflow dags test`.
  echo "  drift_check triggered retrain ($(grep -oE "creating dag run.*run_id=[^ ]+" "$DIR/drift_check.log" | grep -oE "run_id=[^ ]+" | tail -1))"
else
  echo "  drift_check did not trigger retrain"
fi
echo "  the service's /metrics:"
curl -fs "${METRICS_AUTH[@]}" "http://$METRICS_TARGET/metrics" | grep -E "^rakuten_drift_(detected|share) " | sed 's/^/    /'
echo "  Prometheus alerts (/api/v1/alerts), waiting for RakutenDataDrift to fire:"
prom wait-firing RakutenDataDrift
prom alerts
echo "  in Prometheus:"
prom 'rakuten_drift_detected'
prom 'rakuten_drift_share'

echo "== 4. retrain (what drift_check triggered; run here with airflow dags test, no scheduler)"
FORCE=false; [[ "${DEMO_FORCE:-0}" == 1 ]] && FORCE=true
REASON="loop demo"; [[ "$TRIGGERED" == 1 ]] && REASON="drift_check: drift detected"
"$AIRFLOW" dags test retrain -c "{\"force\": $FORCE, \"reason\": \"$REASON\"}" > "$DIR/retrain.log" 2>&1 \
  || { echo "  retrain failed:"; tail -30 "$DIR/retrain.log"; exit 1; }
DECISION=$(ls -t "$DIR"/runs/retrain/*.json | head -1)
# The export_feedback task's own summary (`feedback export`), then the decision.
grep -hoE "(wrote [0-9,]+ reviewed product.*|no new batch in .*)" "$DIR/retrain.log" | head -1 \
  | sed -e 's/ \[airflow\..*//' -e 's/^/  export_feedback: /'
python3 - "$DECISION" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"  decision {sys.argv[1]}: {d['status'].upper()} (version {d.get('version')}, "
      f"champion v{d.get('champion_before')} -> v{d.get('champion_after')})")
merge = ((d.get("prepare") or {}).get("feedback")) or {}
print(f"    feedback: {merge.get('merged', 0)} reviewed product(s) merged into train ({merge.get('train_before')} -> "
      f"{merge.get('train_after')} rows), {merge.get('holdout', 0)} held out")
for reason in d.get("reasons", []):
    print(f"    {reason}")
for reason in (d.get("gate") or {}).get("reasons", []):
    print(f"    gate {reason}")
new, old = d.get("test_metrics") or {}, d.get("champion_test_metrics") or {}
if new:
    line = f"    test split weighted F1: new {new.get('weighted_f1', float('nan')):.4f}"
    if old:
        line += f", champion {old.get('weighted_f1', float('nan')):.4f}"
    print(line)
scores = d.get("feedback_scores") or {}
for role in ("champion", "challenger"):
    s = scores.get(role)
    if s and s.get("accuracy") is not None:
        print(f"    recent feedback ({s.get('n')} held-out products), {role} v{s.get('version')}: "
              f"accuracy {s['accuracy']:.3f}, weighted F1 {s['weighted_f1']:.3f}")
reload = d.get("reload")
if reload is None:
    print(f"    reload: not run (the gate_decision branch was keep_champion)")
else:
    print(f"    reload: {reload.get('status')} {reload.get('detail') or ''}".rstrip()
          + (f" (service now on v{reload['champion_version']})" if reload.get("champion_version") else ""))
EOF
echo "  train log: $DIR/retrain.log; elapsed since drift_check: $(( $(date +%s) - STARTED )) s"

echo "== 5. the service now"
sleep 3
kill -TERM "$CANARY_PID" 2>/dev/null || true
wait "$CANARY_PID" 2>/dev/null || true
CANARY_PID=""
echo "  serving $(model_version)"
kill -0 "$SERVICE_PID" && echo "  service never restarted (pid $SERVICE_PID)"
if [[ -f "$DIR/canary.json" ]]; then
  python3 - "$DIR/canary.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
print(f"  canary: {c['sent']} requests sent, {c['ok']} answered {c['statuses']}, {c['errors']} errors, "
      f"{c['rate_limited']} rate limited (the last one may be in flight when it stops); "
      f"versions that answered {c['versions']}")
EOF
else
  tail -3 "$DIR/canary.log"
fi
echo "  in Prometheus: rakuten_model_info, rakuten_model_reloads_total"
prom 'rakuten_model_info'
prom 'rakuten_model_reloads_total'
echo "  alerts now:"
prom alerts
echo "== stopping Prometheus (pid $PROM_PID), the service (pid $SERVICE_PID); revoking the demo's API keys"
