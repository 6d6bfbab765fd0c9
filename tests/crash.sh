#!/usr/bin/env bash
# The long crash-consistency run (issue 7): a backfill killed with SIGKILL
# at seeded random moments, at least 20 times, then re-run until done and
# checked against the emulator. The suite runs a short version (3 kills).
#
#   tests/crash.sh [KILLS] [SEED]     defaults: 20 kills, seed 20261128
#
# Needs SYNCVET_PYTHON (a python with pyarrow) for the independent reader;
# tests/run.sh makes that venv under .cache/py-venv and this script uses it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export SYNCVET_CRASH_KILLS="${1:-${SYNCVET_CRASH_KILLS:-20}}"
export SYNCVET_CRASH_SEED="${2:-${SYNCVET_CRASH_SEED:-20261128}}"
export SYNCVET_PYTHON="${SYNCVET_PYTHON:-${SYNCVET_CACHE:-$REPO/.cache}/py-venv/bin/python}"
[ -x "$SYNCVET_PYTHON" ] || { echo "crash.sh: no python at $SYNCVET_PYTHON; run tests/run.sh once (it makes the venv)" >&2; exit 1; }
echo "crash.sh: $SYNCVET_CRASH_KILLS kills, seed $SYNCVET_CRASH_SEED"
exec cargo test -p syncvet-e2e --test it -- --exact crash::sigkill_at_random_moments_then_rerun_gives_the_exact_lake --nocapture
