#!/usr/bin/env python3
"""Independent check of a syncvet lake's current tables against the emulator.

For every history table (pims/ENTITY, supplier/ENTITY) the batches it holds
(its `syncvet:SOURCE:DATE` transactions, replayed from the log by
check_lake.py's own replay, not by delta-rs) are fetched again from the
emulator's API, page by page, and the expected state is computed here from
those pages alone: per (source, id) the version with the greatest
lastModified, then the later batch date, then a deletion; no row when that
version is a deletion. The current table (current/pims/ENTITY …) is read
with the Python `deltalake` package and compared with it row by row on
(source, id, last_modified, batch_date).

Usage:
  check_current.py LAKE --api http://127.0.0.1:PORT --client-id ID
      [--client-secret-env VAR] [--entity E ...] [--page-size N]

Prints one JSON document: per entity expected_rows, rows, missing,
unexpected and different (the first 10 of each, and their counts),
duplicates, the versions seen (all, deletions, repeated ids, records
removed by a deletion), a sha256 of the table's rows (every column but the
lineage, in (source, id) order), and absorbed (whether
the current table's transactions name exactly the history's batches with
their versions); `ok` is true when every entity matches. Exit status 0
when the check ran (the JSON says whether it matched), 2 otherwise.
Records must be clean (the emulator's dirty_rate 0): a quarantined version
would be expected here and absent from the lake.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import posixpath
import sys
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_lake  # noqa: E402  (the same folder; its store and log replay)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
SHOWN = 10


def micros(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return (value - EPOCH) // dt.timedelta(microseconds=1)


class Api:
    """The emulator's Consumer API with a client-credentials token."""

    def __init__(self, base: str, client_id: str, secret: str):
        self.base = base.rstrip("/")
        form = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                "scope": "https://consumerapi.sync.vet/.default",
            }
        ).encode()
        with urllib.request.urlopen(f"{self.base}/oauth2/v2.0/token", form, timeout=30) as r:
            self.token = json.load(r)["access_token"]

    def batch(self, source: str, entity: str, date: str, page_size: int):
        """Every record of one batch."""
        token = None
        while True:
            query = {"date": date, "pageSize": page_size}
            if token:
                query["continuationToken"] = token
            url = f"{self.base}/api/batch/{urllib.parse.quote(source)}/{entity}?{urllib.parse.urlencode(query)}"
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(req, timeout=60) as r:
                if r.status != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status}")
                page = json.load(r)
            yield from page["items"]
            token = page.get("continuationToken")
            if not token:
                return


def expected_state(api: Api, entity: str, batches, page_size: int):
    """(source, id) → (last_modified µs, batch_date) of the live winners, and
    the counts of versions seen."""
    best: dict[tuple[str, str], tuple[int, str, bool]] = {}
    seen = {"versions": 0, "deleted": 0, "repeated_ids": 0}
    was_live: set[tuple[str, str]] = set()
    for source, date in sorted(batches):
        for record in api.batch(source, entity, date, page_size):
            seen["versions"] += 1
            deleted = record.get("deleted") in (True, "true", 1)
            seen["deleted"] += deleted
            key = (source, record["id"])
            when = micros(dt.datetime.fromisoformat(record["lastModified"].replace("Z", "+00:00")))
            version = (when, date, deleted)
            if key in best:
                seen["repeated_ids"] += 1
            if not deleted:
                was_live.add(key)
            if key not in best or version > best[key]:
                best[key] = version
    live = {k: (v[0], v[1]) for k, v in best.items() if not v[2]}
    # Records landed live, then deleted for good: the deletions that must
    # have removed a row.
    seen["removed"] = sum(1 for k, v in best.items() if v[2] and k in was_live)
    return live, seen


def current_rows(lake: check_lake.Lake, table: str, source_column: str):
    from deltalake import DeltaTable

    dt_table = DeltaTable(lake.table_uri(table), storage_options=lake.options or None)
    everything = dt_table.to_pyarrow_table()
    keys = [source_column, "id", "last_modified", "batch_date"]
    out: dict[tuple[str, str], tuple[int, str]] = {}
    duplicates = 0
    for source, rid, modified, day in zip(*(everything.column(c).to_pylist() for c in keys)):
        key = (source, rid)
        duplicates += key in out
        out[key] = (micros(modified), day.isoformat())
    # Every column but the lineage, in (source, id) order: equal for two
    # lakes that hold the same state, whatever order they landed it in.
    ordered = check_lake.sort_table(everything, [source_column, "id"])
    digest = hashlib.sha256()
    for name in sorted(ordered.column_names):
        if name not in check_lake.LINEAGE:
            digest.update(f"{name}={check_lake.column_sha256(ordered.column(name))};".encode())
    return out, duplicates, digest.hexdigest()


def batches_of(lake, table: str) -> dict:
    """(source, date) → version of the batch transactions in a table's log,
    replayed by check_lake.py."""
    log = check_lake.replay_log(lake, table, lake.files(posixpath.join(table, check_lake.DELTA_LOG)))
    return {parsed: v for app_id, v in log["txns"].items() if (parsed := check_lake.parse_app_id(app_id))}


def check_entity(lake, api, kind: str, entity: str, page_size: int) -> dict:
    history = f"{kind}/{entity}"
    current = f"current/{kind}/{entity}"
    source_column = check_lake.SOURCE_KEYS[kind]
    batches = batches_of(lake, history)
    expected, seen = expected_state(api, entity, batches, page_size)
    report = {"table": current, "batches": len(batches), "expected_rows": len(expected), **seen}
    if not lake.is_table(current):
        report.update(rows=0, missing_count=len(expected), missing=sorted(expected)[:SHOWN], ok=not expected)
        return report
    absorbed = batches_of(lake, current)
    actual, duplicates, sha256 = current_rows(lake, current, source_column)
    missing = sorted(k for k in expected if k not in actual)
    unexpected = sorted(k for k in actual if k not in expected)
    different = sorted(k for k in expected if k in actual and actual[k] != expected[k])
    report.update(
        rows=len(actual),
        duplicates=duplicates,
        missing_count=len(missing),
        missing=[list(k) for k in missing[:SHOWN]],
        unexpected_count=len(unexpected),
        unexpected=[list(k) for k in unexpected[:SHOWN]],
        different_count=len(different),
        different=[[*k, expected[k], actual[k]] for k in different[:SHOWN]],
        absorbed=absorbed == batches,
        sha256=sha256,
    )
    report["ok"] = not (missing or unexpected or different or duplicates) and report["absorbed"]
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lake")
    ap.add_argument("--api", required=True, help="the emulator: http://127.0.0.1:PORT")
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--client-secret-env", default="SYNCVET_CLIENT_SECRET")
    ap.add_argument("--entity", action="append", default=[], help="only this entity; repeatable")
    ap.add_argument("--page-size", type=int, default=5000)
    args = ap.parse_args(argv)
    try:
        lake = check_lake.Lake(args.lake)
        api = Api(args.api, args.client_id, os.environ[args.client_secret_env])
    except (check_lake.BadLakeUrl, KeyError, OSError) as e:
        print(f"check_current.py: {e!r}", file=sys.stderr)
        return 2
    entities = sorted(
        {
            (kind, name.split("/")[0])
            for kind in check_lake.SOURCE_KEYS
            for name in lake.files(kind)
            if name.split("/")[1:2] == [check_lake.DELTA_LOG]
            and (not args.entity or name.split("/")[0] in args.entity)
        }
    )
    results = [check_entity(lake, api, kind, entity, args.page_size) for kind, entity in entities]
    print(json.dumps({"ok": bool(results) and all(r["ok"] for r in results), "entities": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
