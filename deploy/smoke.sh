#!/usr/bin/env bash
# Runs the real binary with the shipped deploy configs, the way each
# deployment runs it, against the emulator (as the API) and the suite's
# SeaweedFS (as the S3 lake); tests/run.sh runs it after the static checks.
#
#   1. Kubernetes: deploy/kubernetes/config.toml, secret in $SYNCVET_CLIENT_SECRET
#      (as the Secret provides it), S3 keys from AWS_*: `run --date D` exits 0,
#      and the lake read back by tests/py/check_lake.py is whole (every
#      partition committed, no duplicate ids, no unreadable file).
#   2. systemd: deploy/systemd/config.toml, secret read from a credentials
#      file through SYNCVET_ETL__API__CLIENT_SECRET_FILE (as LoadCredential=
#      and the unit's Environment= give it): same checks on a local lake.
#   3. systemd daemon: `daemon` answers /healthz and /metrics, and SIGTERM
#      ends it with 130, the SuccessExitStatus= of the unit.
# Only the API address, the client id and the lake URL are overridden (by
# SYNCVET_ETL__* variables, as an operator would); every other key comes from
# the shipped files, so a key the app does not accept fails here.
#
# Needs: SYNCVET_ETL_BIN (built binary), SYNCVET_PYTHON, the AWS_* env of
# tests/servers/seaweedfs.sh.
set -euo pipefail
DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DEPLOY/.." && pwd)"
BIN="${SYNCVET_ETL_BIN:-$REPO/target/debug/syncvet-etl}"
PY="${SYNCVET_PYTHON:?set SYNCVET_PYTHON (tests/run.sh does)}"
: "${AWS_ENDPOINT:?start tests/servers/seaweedfs.sh and export its env}"
DATE=2026-11-20
RUN_TIMEOUT_SECS=300
WORK="$(mktemp -d)"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
say() { printf 'smoke: %s\n' "$*"; }
fail() { printf 'smoke: FAIL: %s\n' "$*" >&2; exit 1; }
[ -x "$BIN" ] || fail "$BIN is not a built binary"

# Waits (bounded) until FILE contains a line matching REGEX; prints the match.
wait_line() {
    local file="$1" regex="$2" pid="$3" i
    for i in $(seq 1 300); do
        if grep -Eo "$regex" "$file" 2>/dev/null | head -n 1 | grep .; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; fail "process $pid exited before printing /$regex/"; }
        sleep 0.1
    done
    cat "$file" >&2
    fail "no /$regex/ in $file within 30s"
}

# A whole lake: committed partitions only, no duplicates, nothing unreadable.
check_lake() {
    local url="$1" what="$2"
    "$PY" "$REPO/tests/py/check_lake.py" "$url" | "$PY" -c '
import json, sys
t = json.load(sys.stdin)["totals"]
print(f"smoke: {sys.argv[1]}: {t}")
sys.exit(0 if t["partitions"] > 0 and t["committed_partitions"] == t["partitions"] and t["rows"] > 0
         and t["duplicate_ids"] == 0 and t["read_errors"] == 0 else 1)
' "$what" || fail "$what: the lake at $url is not whole (above)"
}

# Runs the binary (bounded), keeping its output; fails with its stderr tail.
run_app() {
    local what="$1" status=0
    shift
    timeout "$RUN_TIMEOUT_SECS" env "$@" >"$WORK/$what.out" 2>"$WORK/$what.err" || status=$?
    [ "$status" -eq 0 ] || { tail -n 40 "$WORK/$what.err" >&2; fail "$what: exit status $status"; }
}

say "emulator"
"$BIN" emulator --port 0 --pims-sources 2 --supplier-sources 1 --rows-per-day 20 >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
PIDS+=($!)
API="$(wait_line "$WORK/emulator.out" 'http://127\.0\.0\.1:[0-9]+' "${PIDS[0]}")"
API_ENV=(
    SYNCVET_ETL__API__BASE_URL="$API/api/"
    SYNCVET_ETL__API__TOKEN_URL="$API/oauth2/v2.0/token"
    SYNCVET_ETL__API__CLIENT_ID=demo-client
)

say "kubernetes config: run --date $DATE into an S3 lake"
S3_LAKE="s3://$AWS_BUCKET/deploy-smoke/$(date +%s)-$$"
run_app kubernetes "${API_ENV[@]}" SYNCVET_CLIENT_SECRET=demo-secret SYNCVET_ETL__LAKE__URL="$S3_LAKE" \
    "$BIN" --config "$DEPLOY/kubernetes/config.toml" run --date "$DATE"
check_lake "$S3_LAKE" "kubernetes config"

say "systemd config: run --date $DATE with the secret as a credential file"
mkdir -p "$WORK/credentials"
printf 'demo-secret\n' >"$WORK/credentials/client-secret"
run_app systemd "${API_ENV[@]}" SYNCVET_ETL__API__CLIENT_SECRET_FILE="$WORK/credentials/client-secret" \
    SYNCVET_ETL__LAKE__URL="$WORK/lake" "$BIN" --config "$DEPLOY/systemd/config.toml" run --date "$DATE"
check_lake "$WORK/lake" "systemd config"

say "systemd config: daemon serves /healthz and /metrics, SIGTERM exits 130"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# sync.catch_up_days = 1: the daemon's start-up sync covers one date only
# (yesterday), the smallest catch-up, to keep the smoke test short.
env "${API_ENV[@]}" SYNCVET_ETL__API__CLIENT_SECRET_FILE="$WORK/credentials/client-secret" \
    SYNCVET_ETL__LAKE__URL="$WORK/lake" SYNCVET_ETL__DAEMON__LISTEN="127.0.0.1:$PORT" \
    SYNCVET_ETL__SYNC__CATCH_UP_DAYS=1 \
    "$BIN" --config "$DEPLOY/systemd/config.toml" daemon >"$WORK/daemon.out" 2>"$WORK/daemon.err" &
DAEMON=$!
PIDS+=("$DAEMON")
for i in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
    kill -0 "$DAEMON" 2>/dev/null || { cat "$WORK/daemon.err" >&2; fail "daemon exited at start"; }
    [ "$i" -lt 100 ] || { cat "$WORK/daemon.err" >&2; fail "daemon: no /healthz within 10s"; }
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -q '^# EOF' || fail "daemon: /metrics is not OpenMetrics text"
kill -TERM "$DAEMON"
status=0
wait "$DAEMON" || status=$?
[ "$status" -eq 130 ] || { tail -n 20 "$WORK/daemon.err" >&2; fail "daemon: SIGTERM exit status $status, the units expect 130"; }
say "all deploy configs work with the real binary"
