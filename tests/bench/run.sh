#!/usr/bin/env bash
# The benchmarks of tests/BENCHMARKS.md, from one command (not run by CI):
#
#   tests/bench/run.sh            end to end (100k, 1M) and the fleet
#   tests/bench/run.sh e2e        end to end only: emulator -> run -> Parquet, `patients`
#   tests/bench/run.sh sources    1, 2 and 4 sources of 250k `patients` each in one run
#   tests/bench/run.sh duckdb [N] the same 1M-record batch side by side with DuckDB's
#                                 read_json -> COPY TO Parquet on its dumped pages, N runs each
#   tests/bench/run.sh fleet      500 sources x all entities under a hidden 50 req/s limit
#   tests/bench/run.sh limits     every gateway limit kind, the client told 5x and told nothing
#   tests/bench/run.sh pagesize   a night under a request-rate limit, pages of 1000 vs 5000
#   tests/bench/run.sh merge [N]  the current-table merge of one source holding N (1M)
#                                 records with a day of N/50 changes: time, peak RSS
#   tests/bench/run.sh query [RUNS] a simulated year of 20 practices' `patients` (backfill):
#                                 "current patients per practice" in DuckDB, from the
#                                 current table vs de-duplicating the history
#   tests/bench/run.sh year       a simulated year of 500 sources: files, commits, and
#                                 the store requests of a no-op run on S3 (SeaweedFS)
#
# Release binaries; the emulator runs as its own process so its CPU is
# measured apart from the ETL's (from /proc, before and after).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
WHAT="${1:-all}"
DATE=2026-11-27
WORK="$(mktemp -d)"
EMU_PID=
cleanup() { [ -n "$EMU_PID" ] && kill "$EMU_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
# SYNCVET_BENCH_BIN_DIR: use the binaries already there (e.g. target/debug
# for the paced runs, which the limits pace, not the CPU) instead of a release build.
BIN_DIR="${SYNCVET_BENCH_BIN_DIR:-$REPO/target/release}"
[ -n "${SYNCVET_BENCH_BIN_DIR:-}" ] || cargo build --release --locked -q -p syncvet-etl -p syncvet-emulator --bins \
    -p syncvet-lake --example year --example merge
ETL="$BIN_DIR/syncvet-etl"
EMU="$BIN_DIR/syncvet-emulator"

# start_emulator ARGS...: starts it on a free port, sets EMU_PID and EMU_URL.
start_emulator() {
    "$EMU" --port 0 "$@" >"$WORK/emu.out" 2>"$WORK/emu.err" &
    EMU_PID=$!
    for _ in $(seq 100); do
        EMU_URL="$(sed -n 's/^listening on //p' "$WORK/emu.out")"
        [ -n "$EMU_URL" ] && return 0
        sleep 0.1
    done
    echo "emulator did not start: $(cat "$WORK/emu.err")" >&2
    exit 1
}
stop_emulator() { kill "$EMU_PID"; wait "$EMU_PID" 2>/dev/null || true; EMU_PID=; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_etl LAKE ARGS...: the ETL against the running emulator; /usr/bin/time -v into $WORK/time.txt.
run_etl() {
    local lake="$1"; shift
    env SYNCVET_ETL__EMULATOR__ENABLED=false \
        SYNCVET_ETL__API__BASE_URL="$EMU_URL/api/" \
        SYNCVET_ETL__API__TOKEN_URL="$EMU_URL/oauth2/v2.0/token" \
        SYNCVET_ETL__API__CLIENT_ID=demo-client \
        SYNCVET_CLIENT_SECRET=demo-secret \
        SYNCVET_ETL__LAKE__URL="$lake" \
        RUST_LOG=warn \
        "${BENCH_ENV[@]}" \
        /usr/bin/time -v -o "$WORK/time.txt" "$ETL" --config "${ETL_CONFIG:-$REPO/config/default.toml}" "$@" >"$WORK/etl.out" 2>"$WORK/etl.err" \
        || { echo "syncvet-etl failed:"; tail -n 20 "$WORK/etl.err"; tail -n 20 "$WORK/etl.out"; exit 1; }
}
time_field() { sed -n "s/^\s*$1: //p" "$WORK/time.txt"; }
report_sum() { python3 -c "import json,glob,sys; r=json.load(open(sorted(glob.glob(sys.argv[1]+'/_runs/*.json'))[-1])); print(sum(p[sys.argv[2]] for p in r['partitions']))" "$1" "$2"; }

# e2e ROWS_PER_DAY [SOURCES]: SOURCES (1) PIMS sources of the same size,
# their `patients` batches in one run.
e2e() {
    local rows_per_day="$1" sources="${2:-1}" lake="$WORK/lake-$1"
    rm -rf "$lake"
    start_emulator --pims-sources "$sources" --supplier-sources 0 --spread 1 --rows-per-day "$rows_per_day"
    local emu_before; emu_before="$(cpu_ticks "$EMU_PID")"
    BENCH_ENV=(SYNCVET_ETL__API__RATE__REQUESTS_PER_SEC=1000 SYNCVET_ETL__API__RATE__BURST=100 ${E2E_ENV:-})
    run_etl "$lake" run --date "$DATE" --entity patients
    local emu_after; emu_after="$(cpu_ticks "$EMU_PID")"
    stop_emulator
    local rows json wall user sys rss hz
    rows="$(report_sum "$lake" rows)"; json="$(report_sum "$lake" json_bytes)"
    wall="$(time_field 'Elapsed (wall clock) time (h:mm:ss or m:ss)')"
    user="$(time_field 'User time (seconds)')"; sys="$(time_field 'System time (seconds)')"
    rss="$(time_field 'Maximum resident set size (kbytes)')"; hz="$(getconf CLK_TCK)"
    local parquet; parquet="$(du -sb "$lake/pims" | cut -f1)"
    python3 - "$rows" "$json" "$wall" "$user" "$sys" "$rss" "$emu_before" "$emu_after" "$hz" "$parquet" "$sources" <<'PY'
import os, sys
rows, json_bytes = int(sys.argv[1]), int(sys.argv[2])
parts = [float(x) for x in sys.argv[3].split(":")]
wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
cpu = float(sys.argv[4]) + float(sys.argv[5])
emu_cpu = (int(sys.argv[8]) - int(sys.argv[7])) / int(sys.argv[9])
cores = os.cpu_count()
print(f"e2e patients sources={sys.argv[11]} rows={rows} json={json_bytes/1e6:.0f}MB wall={wall:.2f}s "
      f"records/s={rows/wall:,.0f} MB/s={json_bytes/1e6/wall:.0f} "
      f"etl_cpu={cpu:.2f}s cpu_s_per_M={cpu/rows*1e6:.2f} peak_rss={int(sys.argv[6])/1024:.0f}MB "
      f"emulator_cpu={emu_cpu:.2f}s ({emu_cpu/wall*100:.0f}% of one core) table={int(sys.argv[10])/1e6:.1f}MB "
      f"cpu_busy={(cpu + emu_cpu) / (wall * cores) * 100:.0f}% of {cores} cores")
PY
}

# untold_config OUT: config/default.toml without its [api.rate] section
# (which tunes the rate for the demo emulator), so the governor starts from
# the crate defaults: the client told nothing.
untold_config() {
    python3 - "$REPO/config/default.toml" >"$1" <<'PY'
import sys
skip = False
for line in open(sys.argv[1]):
    if line.startswith("["):
        skip = line.strip() == "[api.rate]"
    if not skip:
        print(line, end="")
PY
}

# limit_run NAME SUSTAINABLE_RPS TOLD(5x|nothing) EMULATOR_FLAGS...: one real-time
# run of `syncvet-etl backfill` (54 sources x 13 entities x 3 dates, ~2,100
# requests) against a limit; prints one table row.
limit_run() {
    local name="$1" rps="$2" told="$3"; shift 3
    local lake="$WORK/lake-limits-$RANDOM"
    untold_config "$WORK/untold.toml"
    start_emulator --pims-sources 54 --supplier-sources 0 --rows-per-day 100 "$@"
    BENCH_ENV=(SYNCVET_ETL__SYNC__CONCURRENCY=16)
    if [ "$told" = exactly ]; then
        # The ceiling for a cap on requests in flight: a client that knows it.
        BENCH_ENV+=(SYNCVET_ETL__API__RATE__REQUESTS_PER_SEC=1000 SYNCVET_ETL__API__RATE__ADAPTIVE=false
            SYNCVET_ETL__API__RATE__MAX_IN_FLIGHT=4)
    elif [ "$told" = 5x ]; then
        BENCH_ENV+=("SYNCVET_ETL__API__RATE__REQUESTS_PER_SEC=$(python3 -c "print(5 * $rps)")")
        case " $* " in *" --max-concurrent-requests "*)
            BENCH_ENV+=("SYNCVET_ETL__API__RATE__MAX_IN_FLIGHT=20") ;;
        esac
    fi
    ETL_CONFIG="$WORK/untold.toml" run_etl "$lake" backfill --from 2026-11-25 --to "$DATE"
    curl -s "$EMU_URL/__admin/stats" >"$WORK/stats.json"
    stop_emulator
    python3 - "$WORK/stats.json" "$rps" "$(time_field 'Elapsed (wall clock) time (h:mm:ss or m:ss)')" "$name" "$told" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
rps = float(sys.argv[2])
parts = [float(x) for x in sys.argv[3].split(":")]
wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
requests = sum(stats["by_status"].values())
limited = stats["by_status"].get("429", 0)
useful = requests - limited - stats["tokens_issued"]
print(f"| {sys.argv[4]} | told {sys.argv[5]} | {requests} | {wall:.1f} s | {useful / wall / rps * 100:.1f}% | "
      f"{limited} ({limited / requests * 100:.2f}%) | {stats['early_retries']} |", flush=True)
PY
}

limits() {
    echo "| limit | client | requests | wall | of the sustainable rate | 429 | early |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    # The runs are paced by their limits, not by CPU: each wave runs side
    # by side, each run with its own emulator and work folder.
    local told row
    for told in 5x nothing; do
        for row in "bucket 20 rps, burst 1|20|--rate-limit-rps 20 --burst 1 --retry-after-secs 1" \
            "bucket 20 rps, burst 5|20|--rate-limit-rps 20 --burst 5 --retry-after-secs 1" \
            "bucket 20 rps, burst 50|20|--rate-limit-rps 20 --burst 50 --retry-after-secs 1" \
            "fixed window 600 / 60 s|10|--window-calls 600 --window-secs 60" \
            "sliding window 600 / 60 s|10|--window-calls 600 --window-secs 60 --window-sliding" \
            "4 in flight, 50 ms each|78.4|--max-concurrent-requests 4 --latency-ms 50 --retry-after-secs 1"; do
            IFS='|' read -r name rps flags <<<"$row"
            # shellcheck disable=SC2086 # the flags are words
            (WORK="$(mktemp -d)"; limit_run "$name" "$rps" "$told" $flags >"$WORK.row" 2>&1; cat "$WORK.row") &
        done
        wait
    done
    limit_run "4 in flight, 50 ms each" 78.4 exactly --max-concurrent-requests 4 --latency-ms 50 --retry-after-secs 1
}

# A night of 500 sources under a hidden 20 req/s limit, at pages of 1000
# and of 5000 records (rows_per_day 2000: the big practices need pages).
pagesize() {
    for size in 1000 5000; do
        local lake="$WORK/lake-pages-$size"
        untold_config "$WORK/untold.toml"
        start_emulator --pims-sources 100 --supplier-sources 0 --rows-per-day 2000 --rate-limit-rps 20 --burst 20
        BENCH_ENV=(SYNCVET_ETL__SYNC__CONCURRENCY=16 "SYNCVET_ETL__API__PAGE_SIZE=$size")
        ETL_CONFIG="$WORK/untold.toml" run_etl "$lake" run --date "$DATE"
        curl -s "$EMU_URL/__admin/stats" >"$WORK/stats.json"
        stop_emulator
        python3 - "$WORK/stats.json" "$(time_field 'Elapsed (wall clock) time (h:mm:ss or m:ss)')" "$size" \
            "$(time_field 'Maximum resident set size (kbytes)')" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
parts = [float(x) for x in sys.argv[2].split(":")]
wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
print(f"page size {sys.argv[3]}: {sum(stats['by_status'].values())} requests, "
      f"{stats['records_served']} records, wall {wall:.1f}s, peak RSS {int(sys.argv[4]) / 1024:.0f} MB")
PY
    done
}

fleet() {
    # The client is told nothing: config/default.toml without its [api.rate]
    # section (which tunes the rate for the demo emulator), so the governor
    # starts from the crate defaults. SYNCVET_ETL__API__RATE__* variables in
    # the caller's environment still apply (SLOW_START_FACTOR=1 with
    # INCREASE_FRACTION=0 is the governor as it was before slow start).
    local lake="$WORK/lake-fleet" limit=50
    untold_config "$WORK/fleet.toml"
    start_emulator --pims-sources 470 --supplier-sources 30 --rows-per-day 200 --rate-limit-rps "$limit" --burst "$limit"
    BENCH_ENV=(SYNCVET_ETL__SYNC__CONCURRENCY=32 "RUST_LOG=warn,syncvet_client::rate=debug")
    local started; started="$(date +%s.%N)"
    ETL_CONFIG="$WORK/fleet.toml" run_etl "$lake" run --date "$DATE" --log-format json
    curl -s "$EMU_URL/__admin/stats" >"$WORK/stats.json"
    stop_emulator
    python3 - "$WORK/stats.json" "$lake" "$limit" "$(time_field 'Elapsed (wall clock) time (h:mm:ss or m:ss)')" \
        "$WORK/etl.err" "$started" <<'PY'
import json, glob, sys
from datetime import datetime
stats = json.load(open(sys.argv[1]))
report = json.load(open(sorted(glob.glob(sys.argv[2] + "/_runs/*.json"))[-1]))
limit = float(sys.argv[3])
parts = [float(x) for x in sys.argv[4].split(":")]
wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
requests = sum(stats["by_status"].values())
limited = stats["by_status"].get("429", 0)
useful = requests - limited - stats["tokens_issued"]  # API answers other than 429
floor = useful / limit
failed = sum(1 for p in report["partitions"] if p["status"] != "committed")
print(f"fleet partitions={len(report['partitions'])} failed={failed} requests={requests} 429={limited} "
      f"({limited/requests*100:.2f}%) useful={useful} wall={wall:.1f}s floor={floor:.1f}s "
      f"(+{(wall/floor-1)*100:.1f}%) early_retries={stats['early_retries']}")
# Commits and data files per table of the night (history tables only).
import os
per_table = []
for kind in ("pims", "supplier"):
    for entity in sorted(os.listdir(os.path.join(sys.argv[2], kind))):
        table = os.path.join(sys.argv[2], kind, entity)
        commits = [f for f in os.listdir(os.path.join(table, "_delta_log")) if f.endswith(".json")]
        files = sum(len([f for f in fs if f.endswith(".parquet")]) for d, _, fs in os.walk(table) if "_delta_log" not in d)
        per_table.append((f"{kind}/{entity}", len(commits), files))
print("commits per table (incl. create and maintenance): " + ", ".join(f"{t} {c}" for t, c, _ in per_table))
print("parquet files per table (live and replaced): " + ", ".join(f"{t} {f}" for t, _, f in per_table))
print("maintenance in the run report: " + json.dumps(report.get("maintenance")))
c = report["current"]
print(f"current tables: {c['sources']} sources merged ({c['rebuilt']} rebuilt), {c['batches']} batches, "
      f"{c['rows_written']:,} rows written in {report['current_secs']:.1f} s, {len(c['errors'])} errors")
# The governor's rate timeline from its log, in seconds since the ETL started.
started = float(sys.argv[6])
changes = []
for line in open(sys.argv[5]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("target") != "syncvet_client::rate" or "to_rps" not in event or "from_rps" not in event:
        continue
    at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp() - started
    kind = "429 cut" if "pause_ms" in event else ("slow start" if event.get("slow_start") else "increase")
    changes.append((at, kind, event["from_rps"], event["to_rps"]))
cuts = sum(kind == "429 cut" for _, kind, _, _ in changes)
print(f"rate timeline ({len(changes)} changes, {cuts} cuts):")
for at, kind, before, after in changes:
    print(f"  {at:7.2f}s {kind:10} {before:6.1f} -> {after:6.1f} rps")
PY
}

# A simulated year: 365 nights x 500 sources of `patients`, 5 rows a batch,
# written through the lake API with each night's maintenance (the example
# `year`); then a no-op `run` of its last night against S3 (SeaweedFS, the
# lake uploaded as is) through a counting proxy: every store request it
# makes, by kind.
year() {
    local days="${YEAR_DAYS:-365}" sources="${YEAR_SOURCES:-500}" lake="$WORK/lake-year"
    local py="${SYNCVET_PYTHON:-$REPO/.cache/py-venv/bin/python}"
    [ -x "$py" ] || { echo "no Python venv at $py: run tests/run.sh --servers-only once" >&2; exit 1; }
    mkdir -p "$lake"
    /usr/bin/time -v -o "$WORK/time.txt" "$BIN_DIR/examples/year" "$lake" "$days" "$sources" 5 >"$WORK/year.json"
    echo "year: $(cat "$WORK/year.json") peak_rss=$(( $(time_field 'Maximum resident set size (kbytes)') / 1024 ))MB"
    export SYNCVET_RUN_DIR="$WORK/servers"
    eval "$(bash tests/servers/seaweedfs.sh start)"
    trap 'bash tests/servers/seaweedfs.sh stop >/dev/null 2>&1; cleanup' EXIT
    "$py" - "$lake" <<'PY'
import os, sys
import pyarrow.fs as pafs
s3 = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT"], scheme="http",
                       access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                       region=os.environ.get("AWS_REGION", "us-east-1"))
pafs.copy_files(sys.argv[1], f"{os.environ['AWS_BUCKET']}/year", source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=s3)
PY
    "$py" tests/bench/count_requests.py "$AWS_ENDPOINT" "$WORK/requests.log" >"$WORK/proxy.out" &
    local proxy=$! proxy_url=
    for _ in $(seq 50); do proxy_url="$(sed -n 's/^listening on //p' "$WORK/proxy.out")"; [ -n "$proxy_url" ] && break; sleep 0.1; done
    start_emulator --pims-sources "$sources" --supplier-sources 0 --rows-per-day 5
    local last; last="$(python3 -c "import datetime as d; print(d.date(2025,12,1) + d.timedelta(days=$days - 1))")"
    BENCH_ENV=("AWS_ENDPOINT=$proxy_url" "AWS_ENDPOINT_URL=$proxy_url" SYNCVET_ETL__SYNC__CONCURRENCY=32)
    run_etl "s3://$AWS_BUCKET/year" run --date "$last" --entity patients
    stop_emulator
    kill "$proxy"
    grep -E "skipped|partitions" "$WORK/etl.out" | head -3
    python3 - "$WORK/requests.log" <<'PY'
import collections, sys
kinds = collections.Counter()
for line in open(sys.argv[1]):
    method, target, status = line.split()
    what = ("run report" if "_runs/" in target else "list" if "list-type" in target
            else "checkpoint" if "checkpoint" in target else "log" if "_delta_log" in target
            else "data" if ".parquet" in target else "other")
    kinds[(method, what)] += 1
total = sum(kinds.values())
print(f"no-op run store requests: {total} in all; " + ", ".join(f"{m} {w}: {n}" for (m, w), n in sorted(kinds.items())))
PY
}

# merge N: one source's N records landed and merged (day 1), then a day of
# N/50 changes, N/500 new records and N/5000 deletions, merged alone, in its
# own process, so its peak RSS is the merge's.
merge() {
    local n="$1" lake="$WORK/lake-merge"
    /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$BIN_DIR/examples/merge" land "$lake" "$n" >/dev/null
    echo "merge: first merge of $n records (with their landing): $(awk '{print $1 " s, " int($2/1024) " MB"}' "$WORK/time.txt")"
    "$BIN_DIR/examples/merge" change "$lake" $((n / 50)) "$n"
    /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$BIN_DIR/examples/merge" absorb "$lake"
    echo "merge: a day of $((n / 50)) changes into $n current records: $(awk '{print $1 " s, peak RSS " int($2/1024) " MB"}' "$WORK/time.txt")"
}

# query [RUNS]: issue 11's analyst query on a simulated year. QUERY_SOURCES (20)
# practices' `patients`, QUERY_DAYS (365) nights of the emulator's default change
# history (new, changed and deleted records), landed by one `backfill` (its
# wall, peak RSS and merge time are printed: a year's backfill); then, in
# DuckDB from the suite's venv, "current patients per practice" from the
# current table and by de-duplicating the history (the latest version per
# (practice, id), deletions dropped), RUNS (5) times each, alternating; the
# medians, and the check that both give the same answer.
query() {
    local runs="${1:-5}" days="${QUERY_DAYS:-365}" sources="${QUERY_SOURCES:-20}" lake="$WORK/lake-query"
    local py="${SYNCVET_PYTHON:-$REPO/.cache/py-venv/bin/python}"
    [ -x "$py" ] || { echo "no Python venv at $py: run tests/run.sh --servers-only once" >&2; exit 1; }
    local from; from="$(python3 -c "import datetime as d; print(d.date.fromisoformat('$DATE') - d.timedelta(days=$days - 1))")"
    start_emulator --pims-sources "$sources" --supplier-sources 0
    BENCH_ENV=(SYNCVET_ETL__API__RATE__REQUESTS_PER_SEC=1000 SYNCVET_ETL__API__RATE__BURST=100 SYNCVET_ETL__SYNC__CONCURRENCY=32)
    run_etl "$lake" backfill --from "$from" --to "$DATE" --entity patients
    stop_emulator
    python3 - "$lake" "$(time_field 'Elapsed (wall clock) time (h:mm:ss or m:ss)')" "$(time_field 'Maximum resident set size (kbytes)')" <<'PY'
import glob, json, sys
report = json.load(open(sorted(glob.glob(sys.argv[1] + "/_runs/*.json"))[-1]))
c = report["current"]
failed = sum(1 for p in report["partitions"] if p["status"] != "committed")
print(f"backfill: {len(report['partitions'])} batches ({failed} failed), {sum(p['rows'] for p in report['partitions']):,} rows, "
      f"wall {sys.argv[2]}, peak RSS {int(sys.argv[3]) / 1024:.0f} MB; current tables: {c['sources']} sources, "
      f"{c['batches']} batches, {c['rows_written']:,} rows in {report['current_secs']:.1f} s")
PY
    "$py" - "$lake" "$runs" <<'PY'
import statistics, sys, time
import duckdb
from deltalake import DeltaTable

lake, runs = sys.argv[1], int(sys.argv[2])
# As the README's analysts do: each table as the Arrow dataset of its
# latest version (partition columns included), queried by DuckDB.
history = DeltaTable(f"{lake}/pims/patients").to_pyarrow_dataset()
current = DeltaTable(f"{lake}/current/pims/patients").to_pyarrow_dataset()
queries = {
    "current table": "SELECT practice_id, count(*) AS patients FROM current GROUP BY ALL ORDER BY ALL",
    "deduplicated history": """
        SELECT practice_id, count(*) AS patients FROM (
            SELECT practice_id, deleted FROM history
            QUALIFY row_number() OVER (PARTITION BY practice_id, id
                                       ORDER BY last_modified DESC, batch_date DESC, deleted DESC) = 1)
        WHERE NOT deleted GROUP BY ALL ORDER BY ALL""",
}
con = duckdb.connect()
con.register("history", history)
con.register("current", current)
answers, times = {}, {name: [] for name in queries}
for _ in range(runs):
    for name, sql in queries.items():
        started = time.perf_counter()
        answers[name] = con.sql(sql).fetchall()
        times[name].append(time.perf_counter() - started)
rows = {name: con.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for name, t in (("history", "history"), ("current", "current"))}
print(f"history rows {rows['history']:,}, current rows {rows['current']:,}, practices {len(answers['current table'])}")
for name in queries:
    print(f"{name}: median {statistics.median(times[name]) * 1000:.1f} ms over {runs} runs "
          f"(min {min(times[name]) * 1000:.1f}, max {max(times[name]) * 1000:.1f})")
a, b = (statistics.median(times[n]) for n in queries)
print(f"the current table is {b / a:.0f}x faster")
if answers["current table"] != answers["deduplicated history"]:
    sys.exit(f"the two answers differ: {answers['current table'][:5]} vs {answers['deduplicated history'][:5]}")
print("both give the same answer")
PY
}

# versus_duckdb [RUNS]: issue 14's side by side on the very same pages. The
# emulator's 1M-record `patients` batch is dumped to page files once
# (untimed); then, alternating, RUNS timed `syncvet-etl run`s against the
# emulator (the e2e bench) and RUNS DuckDB conversions of the page files
# (`read_json` -> `COPY ... TO` Parquet, zstd, DuckDB's default threads)
# from the suite's venv; prints each run, the medians and the ratio.
versus_duckdb() {
    local runs="${1:-3}" py="${SYNCVET_PYTHON:-$REPO/.cache/py-venv/bin/python}"
    [ -x "$py" ] || { echo "no Python venv at $py: run tests/run.sh --servers-only once" >&2; exit 1; }
    local pages="$WORK/pages"
    start_emulator --pims-sources 1 --supplier-sources 0 --spread 1 --rows-per-day 1000000
    python3 - "$EMU_URL" "$DATE" "$pages" <<'PY'
import json, os, sys, urllib.parse, urllib.request
base, date, out = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(out)
form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": "demo-client",
                               "client_secret": "demo-secret",
                               "scope": "https://consumerapi.sync.vet/.default"}).encode()
token = json.load(urllib.request.urlopen(base + "/oauth2/v2.0/token", form))["access_token"]
cont, n, records = None, 0, 0
while True:
    url = f"{base}/api/batch/p-0001/patients?date={date}&pageSize=1000"
    if cont:
        url += "&continuationToken=" + urllib.parse.quote(cont)
    body = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer " + token})).read()
    page = json.loads(body)
    n += 1
    records += len(page["items"])
    with open(f"{out}/page-{n:05}.json", "wb") as f:
        f.write(body)
    cont = page.get("continuationToken")
    if not cont:
        break
print(f"dumped {records} records in {n} pages")
PY
    stop_emulator
    local i etl=() duck=()
    for i in $(seq "$runs"); do
        etl+=("$(e2e 1000000)")
        echo "${etl[-1]}"
        rm -rf "$WORK/duck.parquet"
        /usr/bin/time -v -o "$WORK/time.txt" "$py" -c '
import duckdb, sys
duckdb.sql("SET enable_progress_bar = false")
duckdb.sql(f"""COPY (SELECT unnest(items, recursive := true)
                    FROM read_json(\x27{sys.argv[1]}/page-*.json\x27, maximum_object_size = 100000000))
             TO \x27{sys.argv[2]}\x27 (FORMAT parquet, COMPRESSION zstd)""")
print(duckdb.sql(f"SELECT count(*) FROM \x27{sys.argv[2]}\x27").fetchall()[0][0])' "$pages" "$WORK/duck.parquet" >"$WORK/duck.out"
        local wall user sys rss
        wall="$(time_field 'Elapsed (wall clock) time (h:mm:ss or m:ss)')"
        user="$(time_field 'User time (seconds)')"; sys="$(time_field 'System time (seconds)')"
        rss="$(time_field 'Maximum resident set size (kbytes)')"
        duck+=("duckdb rows=$(cat "$WORK/duck.out") wall=$wall cpu=$(python3 -c "print(round($user+$sys, 2))") rss_kb=$rss")
        echo "${duck[-1]}"
    done
    python3 - "${#etl[@]}" "${etl[@]}" "${duck[@]}" <<'PY'
import re, statistics, sys
n = int(sys.argv[1])
etl, duck = sys.argv[2:2 + n], sys.argv[2 + n:]
def field(line, key):
    return re.search(rf"\b{key}=([0-9.:,]+)", line).group(1).replace(",", "")
def seconds(w):
    return sum(float(p) * 60 ** i for i, p in enumerate(reversed(w.split(":"))))
e_wall = statistics.median(float(field(l, "wall").rstrip("s")) for l in etl)
e_cpu = statistics.median(float(field(l, "cpu_s_per_M")) for l in etl)
e_rss = statistics.median(float(field(l, "peak_rss").rstrip("MB")) for l in etl)
rows = int(field(etl[0], "rows"))
d_rows = int(field(duck[0], "rows"))
d_wall = statistics.median(seconds(field(l, "wall")) for l in duck)
d_cpu = statistics.median(float(field(l, "cpu")) for l in duck) / d_rows * 1e6
d_rss = statistics.median(int(field(l, "rss_kb")) for l in duck) / 1024
print(f"syncvet-etl: median wall {e_wall:.2f}s, {rows / e_wall:,.0f} records/s, {e_cpu:.2f} CPU-s per M, peak RSS {e_rss:.0f} MB")
print(f"duckdb:      median wall {d_wall:.2f}s, {d_rows / d_wall:,.0f} records/s, {d_cpu:.2f} CPU-s per M, peak RSS {d_rss:.0f} MB")
print(f"ratio (syncvet-etl records/s over DuckDB's): {(rows / e_wall) / (d_rows / d_wall):.2f}")
PY
}

case "$WHAT" in
    e2e) e2e 100000; e2e 1000000 ;;
    duckdb) versus_duckdb "${2:-3}" ;;
    # 225,700 rows per day make a `patients` batch of about 250,000 records.
    sources) for n in 1 2 4; do e2e 225700 "$n"; done ;;
    fleet) fleet ;;
    limits) limits ;;
    pagesize) pagesize ;;
    year) year ;;
    merge) merge "${2:-1000000}" ;;
    query) query "${2:-5}" ;;
    all) e2e 100000; e2e 1000000; fleet; pagesize; limits ;;
    *) echo "usage: $0 [e2e|sources|duckdb [RUNS]|fleet|limits|pagesize|merge [N]|query [RUNS]|year]" >&2; exit 2 ;;
esac
