#!/usr/bin/env bash
# Azurite (Microsoft's Azure Storage emulator, blob service only) for the
# end-to-end suite.
#
#   azurite.sh install   npm install azurite into the cache (idempotent)
#   azurite.sh start     install, start on 127.0.0.1, wait until it answers,
#                        create the container, print `export` lines on stdout
#   azurite.sh env       print the `export` lines of the running server
#   azurite.sh stop      stop it by PID
#   azurite.sh restart   stop, then start on the same port (data is in memory: lost)
#   azurite.sh status    exit 0 when running
#
# The blob port is picked free on first start (SYNCVET_AZURITE_PORT pins it)
# and exported as AZURITE_BLOB_STORAGE_URL, which object_store reads when
# AZURE_STORAGE_USE_EMULATOR=true. Storage is in memory: nothing to clean.
# object_store cannot create a container, so this script does it with one
# SharedKey-signed REST call using Azurite's published development key.
set -euo pipefail
SCRIPT_NAME=azurite
PROCESS_PATTERN=azurite-blob
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION="${SYNCVET_AZURITE_VERSION:-3.35.0}"
PREFIX="$CACHE_DIR/azurite-$VERSION"
AZURITE="$PREFIX/node_modules/.bin/azurite-blob"
STATE="$RUN_DIR/azurite"
CONTAINER="${SYNCVET_AZURE_CONTAINER:-syncvet-test}"
ACCOUNT=devstoreaccount1
# Azurite's well-known development account key (public, documented by Microsoft).
ACCOUNT_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
API_VERSION=2021-08-06

install_azurite() {
    if [ -x "$AZURITE" ] && [ "$(node -p "require('$PREFIX/node_modules/azurite/package.json').version" 2>/dev/null)" = "$VERSION" ]; then
        return 0
    fi
    command -v npm >/dev/null || die "npm not found (Debian: apt-get install nodejs npm)"
    log "installing azurite@$VERSION into $PREFIX"
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "azurite@$VERSION" >&2 \
        || die "npm install azurite@$VERSION failed"
    [ -x "$AZURITE" ] || die "azurite installed no $AZURITE"
}

load_port() {
    mkdir -p "$STATE"
    if [ ! -f "$STATE/ports.env" ]; then
        echo "BLOB_PORT=${SYNCVET_AZURITE_PORT:-$(free_ports 1)}" >"$STATE/ports.env"
    fi
    # shellcheck disable=SC1091
    source "$STATE/ports.env"
}

# Any HTTP answer (an unsigned request gets 403) means the server listens.
answers() {
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$BLOB_PORT/$ACCOUNT?comp=list")" || true
    [ "$code" != 000 ]
}

# PUT /{account}/{container}?restype=container, SharedKey-signed.
# 201: created, 409: already there; anything else fails the start.
create_container() {
    local date sts hexkey sig code
    date="$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')"
    # VERB, 11 standard headers (all empty for a zero-length PUT), the
    # canonicalized x-ms-* headers, then the canonicalized resource.
    sts="PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:$date\nx-ms-version:$API_VERSION\n/$ACCOUNT/$ACCOUNT/$CONTAINER\nrestype:container"
    hexkey="$(printf '%s' "$ACCOUNT_KEY" | base64 -d | od -An -v -tx1 | tr -d ' \n')"
    sig="$(printf '%b' "$sts" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)"
    code="$(curl -s -o "$STATE/create-container.out" -w '%{http_code}' --max-time 10 -X PUT \
        -H "x-ms-date: $date" -H "x-ms-version: $API_VERSION" -H 'Content-Length: 0' \
        -H "Authorization: SharedKey $ACCOUNT:$sig" \
        "http://127.0.0.1:$BLOB_PORT/$ACCOUNT/$CONTAINER?restype=container")" || true
    case "$code" in
        201 | 409) ;;
        *) cat "$STATE/create-container.out" >&2 2>/dev/null || true
           die "creating container $CONTAINER failed: HTTP $code" ;;
    esac
}

print_env() {
    [ -f "$STATE/ports.env" ] || die "not started (no $STATE/ports.env)"
    load_port
    cat <<ENV
export AZURE_STORAGE_USE_EMULATOR=true
export AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$BLOB_PORT
export AZURE_STORAGE_ACCOUNT_NAME=$ACCOUNT
export AZURE_STORAGE_ACCOUNT_KEY=$ACCOUNT_KEY
export AZURE_CONTAINER_NAME=$CONTAINER
export SYNCVET_TEST_AZURE_URL=az://$CONTAINER/e2e
export SYNCVET_AZURITE_CTL=$SERVERS_DIR/azurite.sh
export SYNCVET_RUN_DIR=$RUN_DIR
export SYNCVET_CACHE=$CACHE_DIR
ENV
}

start() {
    with_install_lock install_azurite
    load_port
    if [ -f "$STATE/pid" ] && pid_is "$(cat "$STATE/pid")" "$PROCESS_PATTERN"; then
        log "already running as pid $(cat "$STATE/pid")"
        print_env
        return 0
    fi
    ports_free "$BLOB_PORT" || die "cannot start: port $BLOB_PORT is taken (port in $STATE/ports.env)"
    local started=$SECONDS
    (
        cd "$STATE"
        exec "$AZURITE" --blobHost 127.0.0.1 --blobPort "$BLOB_PORT" --inMemoryPersistence \
            --disableTelemetry --silent --skipApiVersionCheck
    ) </dev/null >>"$STATE/azurite.log" 2>&1 &
    echo $! >"$STATE/pid"
    disown $!
    wait_ready "Azurite (blob on 127.0.0.1:$BLOB_PORT)" "$STATE/pid" "$STATE/azurite.log" answers
    create_container
    log "blob ready on 127.0.0.1:$BLOB_PORT, container $CONTAINER, pid $(cat "$STATE/pid"), in $((SECONDS - started))s"
    print_env
}

case "${1:-}" in
    install) with_install_lock install_azurite ;;
    start) start ;;
    env) print_env ;;
    stop) stop_pidfile "$STATE/pid" "$PROCESS_PATTERN" "$([ "${2:-}" = --kill ] && echo KILL || echo TERM)" ;;
    restart) stop_pidfile "$STATE/pid" "$PROCESS_PATTERN"; start >/dev/null ;;
    status) [ -f "$STATE/pid" ] && pid_is "$(cat "$STATE/pid")" "$PROCESS_PATTERN" ;;
    *) echo "usage: $0 install|start|env|stop [--kill]|restart|status" >&2; exit 2 ;;
esac
