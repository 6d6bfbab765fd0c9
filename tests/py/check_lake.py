#!/usr/bin/env python3
"""Independent reader of a syncvet lake of Delta tables, for the end-to-end tests.

The Rust suite writes the lake with delta-rs (arrow-rs/parquet-rs) and must
not read it back with the same code, or a bug shared by writer and reader
would pass unseen. This script replays each table's `_delta_log` itself
(JSON commits and the latest checkpoint, read with pyarrow), reads the rows
with the Python `deltalake` package (delta-rs resolves the active files,
Arrow C++ decodes them), counts them again with Polars (its own Parquet
reader), and in --duckdb mode with DuckDB's Parquet reader over exactly the
files the log lists; it prints one JSON document on stdout.

Usage:
  check_lake.py LAKE [--under SUBPATH] [--id-column id] [--rows] [--max-rows N]
  check_lake.py LAKE --duckdb [--under SUBPATH] [--id-column id]

LAKE is a local path, file://PATH, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX
(also abfs://, abfss://, azure://). Credentials come from the environment
exported by tests/servers/*.sh: AWS_ENDPOINT (or AWS_ENDPOINT_URL),
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP,
AWS_VIRTUAL_HOSTED_STYLE_REQUEST for S3; AZURE_STORAGE_USE_EMULATOR with
AZURITE_BLOB_STORAGE_URL (emulator), AZURE_STORAGE_ACCOUNT_NAME,
AZURE_STORAGE_ACCOUNT_KEY for Azure. They are given to pyarrow (listing,
log replay, copies) and as `storage_options` to deltalake and Polars.

The lake: one Delta table per entity at pims/ENTITY and supplier/ENTITY,
partitioned by batch_date, with the source key first (practice_id or
supplier_id) and the lineage columns _run_id and _loaded_at last; one
quarantine table per entity at _quarantine/ENTITY (source_type, source_id,
entity, batch_date, raw, field, reason, lineage); run reports _runs/*.json.
A table is any folder holding a `_delta_log/`; the current tables
(current/pims/ENTITY …, derived from the history) are read only when --under
names them, and checked against the emulator by check_current.py. A batch is (source id,
batch_date) inside a table; a committed batch has the Delta application
transaction `syncvet:SOURCE_ID:YYYY-MM-DD`, also when it has no rows.

--under limits the reading to a folder of tables (pims), one table
(pims/patients) or the batches under a path inside a table
(pims/patients/practice_id=p1). Default mode prints:
- `tables`, one per Delta table: path, kind (data|quarantine), version,
  checkpoint, files (active), rows (deltalake) and polars_rows,
  partition_columns, schema, columns (in order), txns (app id → version, from
  our replay; up to 100 per table checked against deltalake's
  transaction_version), `done` (the batches of the syncvet txns, as
  `practice_id=X/batch_date=D` or `supplier_id=`; `source_id=` in quarantine
  tables), missing_files (listed by the log but absent or of another size),
  orphans (Parquet files under the table that no commit ever referenced: a
  lost commit; readers ignore them), removed_files (tombstoned by a later
  commit, still stored), file_schema_mismatches, stats_mismatches (numRecords
  vs the file) and read_errors (unreadable files, a log that does not replay,
  deltalake, our replay and Polars disagreeing).
- `partitions`, one per batch found in the rows: path
  (`pims/ENTITY/practice_id=X/batch_date=D`, or for quarantine
  `_quarantine/ENTITY/practice_id=X/batch_date=D` after the row's
  source_type), kind, done (its txn; for quarantine its data batch's, null
  if that table is not read), rows, the files holding them, duplicate_ids,
  schema_consistent (its files' Parquet schemas match the table's),
  read_errors (unreadable files of its batch_date), columns with their Arrow
  types as pyarrow reports them and per column a null count, distinct count,
  min/max, a sample and a sha256 over the values in id order (quarantine: raw
  order), and a batch sha256 over the columns but the lineage ones
  (quarantine: raw, field, reason only), so two lakes holding the same rows
  (a file:// and an s3:// run, a run and its re-run) have equal checksums.
- `runs` (run report ids in _runs/), `stray_files` (Parquet files outside
  any table) and `totals`.

--duckdb mode: DuckDB's delta and httpfs extensions cannot be fetched here,
so per table it runs `SELECT count(*), count(DISTINCT id) FROM
read_parquet([FILES], hive_partitioning=true)` over exactly the files of
DeltaTable.file_uris(), plus the rows per (source id, batch_date); for s3://
and az:// those files are first copied to a temp folder with pyarrow.

Exit status: 0 when the lake could be read (the JSON says what is in it,
including unreadable files and tables), 2 on bad arguments or an
unreachable store.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import decimal
import hashlib
import json
import os
import posixpath
import re
import shutil
import sys
import tempfile
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SAMPLE_ROWS = 3
DELTA_LOG = "_delta_log"
CURRENT = "current"
LINEAGE = ("_run_id", "_loaded_at")
QUARANTINE_HASHED = ("raw", "field", "reason")
QUARANTINE_KEYS = ("source_type", "source_id", "batch_date")
SOURCE_KEYS = {"pims": "practice_id", "supplier": "supplier_id"}
APP_PREFIX = "syncvet:"
TXN_CHECKS = 100
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
FILE_INDEX = "__check_lake_file"
COMMIT_RE = re.compile(r"^(\d{20})\.json$")
CHECKPOINT_RE = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")


# --- stores ----------------------------------------------------------------


class BadLakeUrl(ValueError):
    """A lake URL this script cannot open (exit status 2)."""


def open_lake(url: str) -> tuple[pafs.FileSystem, str]:
    """Returns the pyarrow filesystem and the root path inside it for a lake URL."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        path = parsed.path if scheme == "file" else url
        return pafs.LocalFileSystem(), os.path.abspath(path)
    root = (parsed.netloc + parsed.path).rstrip("/")
    if scheme in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        kwargs = {
            "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
            "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
            "region": os.environ.get("AWS_REGION", "us-east-1"),
            "allow_bucket_creation": False,
        }
        if endpoint:
            ep = urlparse(endpoint)
            kwargs["endpoint_override"] = ep.netloc or endpoint
            kwargs["scheme"] = ep.scheme or "https"
        return pafs.S3FileSystem(**kwargs), root
    if scheme in ("az", "abfs", "abfss", "azure"):
        emulator = azure_emulator()
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1" if emulator else None)
        kwargs = {"account_name": account, "account_key": os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")}
        if emulator:
            blob = urlparse(os.environ.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000"))
            # Azurite serves path-style URLs under the account name; pyarrow
            # adds the account itself, so only the authority is given.
            kwargs.update(
                blob_storage_authority=blob.netloc,
                dfs_storage_authority=blob.netloc,
                blob_storage_scheme=blob.scheme,
                dfs_storage_scheme=blob.scheme,
            )
        # abfs://container@account.dfs.core.windows.net/path
        if "@" in parsed.netloc:
            root = (parsed.netloc.split("@")[0] + parsed.path).rstrip("/")
        return pafs.AzureFileSystem(**kwargs), root
    raise BadLakeUrl(f"unsupported lake URL scheme {scheme!r} in {url}")


def azure_emulator() -> bool:
    return os.environ.get("AZURE_STORAGE_USE_EMULATOR", "").lower() in ("1", "true")


def storage_options(url: str) -> dict[str, str]:
    """The `storage_options` deltalake and Polars get for a lake URL (object_store keys)."""
    scheme = urlparse(url).scheme.lower()
    env = os.environ.get
    opts: dict[str, str] = {}
    if scheme in ("s3", "s3a"):
        endpoint = env("AWS_ENDPOINT") or env("AWS_ENDPOINT_URL")
        if endpoint:
            opts["AWS_ENDPOINT_URL"] = endpoint
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST"):
            if env(key):
                opts[key] = env(key)
        opts["AWS_REGION"] = env("AWS_REGION", "us-east-1")
        allow_http = env("AWS_ALLOW_HTTP") or ("true" if (endpoint or "").startswith("http://") else None)
        if allow_http:
            opts["AWS_ALLOW_HTTP"] = allow_http
    elif scheme in ("az", "abfs", "abfss", "azure"):
        if azure_emulator():
            # object_store takes the emulator's address from AZURITE_BLOB_STORAGE_URL.
            opts["azure_storage_use_emulator"] = "true"
        for key, opt in (
            ("AZURE_STORAGE_ACCOUNT_NAME", "azure_storage_account_name"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "azure_storage_account_key"),
        ):
            if env(key):
                opts[opt] = env(key)
    return opts


class Lake:
    """A lake URL with its pyarrow filesystem and the URIs deltalake is given."""

    def __init__(self, url: str):
        self.url = url
        self.fs, self.root = open_lake(url)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.options = storage_options(url)

    def fs_path(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def table_uri(self, rel: str) -> str:
        if self.local:
            return self.fs_path(rel)
        return f"{self.url.rstrip('/')}/{rel}"

    def files(self, rel: str) -> dict[str, int]:
        """Every file under a folder of the lake: path relative to it → size."""
        base = self.fs_path(rel)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return {
            posixpath.relpath(i.path, base): i.size
            for i in sorted(infos, key=lambda i: i.path)
            if i.type == pafs.FileType.File
        }

    def is_table(self, rel: str) -> bool:
        info = self.fs.get_file_info(posixpath.join(self.fs_path(rel), DELTA_LOG))
        return info.type == pafs.FileType.Directory


# --- values and checksums ----------------------------------------------------


def canonical(value):
    """A JSON-able, type-stable form of one Arrow value."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def dumps(value) -> str:
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


NULL_MARK = "\x00null"


def column_sha256(column: pa.ChunkedArray) -> str:
    """sha256 of a column's values in order, computed in Arrow (no Python
    objects per value, so a lake of millions of rows reads in seconds).

    Values are cast to strings (Arrow's own formatting, stable for a type;
    the type is part of every partition checksum), nulls marked, and the
    lengths and bytes of the one resulting string array are hashed. Nested
    types, which do not cast, fall back to canonical JSON per value."""
    digest = hashlib.sha256()
    try:
        text = pc.fill_null(pc.cast(column, pa.large_string()), NULL_MARK).combine_chunks()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        for v in column.to_pylist():
            digest.update(dumps(v).encode())
            digest.update(b"\n")
        return digest.hexdigest()
    if len(text) == 0:
        return digest.hexdigest()
    # Lengths then bytes: together they fix every value and its boundaries,
    # whatever the offsets' base (a sliced array starts mid-buffer).
    lengths = pc.binary_length(text).cast(pa.int64())
    digest.update(memoryview(lengths.buffers()[1])[lengths.offset * 8 : (lengths.offset + len(lengths)) * 8])
    offsets, data = text.buffers()[1:3]
    first = int.from_bytes(memoryview(offsets)[text.offset * 8 : text.offset * 8 + 8], "little")
    last = first + pc.sum(lengths).as_py()
    digest.update(memoryview(data)[first:last] if data is not None else b"")
    return digest.hexdigest()


def column_stats(column: pa.ChunkedArray) -> dict:
    """Stats of one column whose rows are already in batch order."""
    stats = {
        "null_count": column.null_count,
        "sha256": column_sha256(column),
        "sample": [canonical(v) for v in column.slice(0, SAMPLE_ROWS).to_pylist()],
    }
    try:
        stats["distinct_count"] = pc.count_distinct(column, mode="all").as_py()
        mm = pc.min_max(column).as_py()
        stats["min"], stats["max"] = canonical(mm["min"]), canonical(mm["max"])
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass  # nested types have no ordering: the checksum still covers them
    return stats


# --- the Delta log, replayed here ------------------------------------------


def rel_path(path: str) -> str:
    """An add/remove path as a path relative to the table (they are URL-encoded)."""
    return unquote(path)


def parse_app_id(app_id: str) -> tuple[str, str] | None:
    """`syncvet:SOURCE_ID:YYYY-MM-DD` → (source id, date); ids may hold `:`."""
    if not app_id.startswith(APP_PREFIX) or len(app_id) < len(APP_PREFIX) + 12:
        return None
    source, sep, date = app_id[len(APP_PREFIX) : -11], app_id[-11], app_id[-10:]
    try:
        dt.date.fromisoformat(date)
    except ValueError:
        return None
    return (source, date) if sep == ":" and source else None


def replay_log(lake: Lake, table: str, log_files: dict[str, int]) -> dict:
    """The table's state from its log, without delta-rs: the latest complete
    checkpoint (pyarrow reads it) then every JSON commit after it."""
    log_dir = posixpath.join(lake.fs_path(table), DELTA_LOG)
    commits = {int(m[1]): name for name in log_files if (m := COMMIT_RE.match(name))}
    parts: dict[int, dict] = {}
    for name in log_files:
        if m := CHECKPOINT_RE.match(name):
            entry = parts.setdefault(int(m[1]), {"files": [], "of": int(m[3] or 1)})
            entry["files"].append(name)
    state = {
        "version": None,
        "checkpoint": None,
        "active": {},  # path → {"size", "partition_values", "records"}
        "ever": set(),  # every path an add or remove names, in any log file read
        "removed": set(),
        "txns": {},
        "metadata": None,
        "errors": [],
    }
    if not commits and not parts:
        return state
    latest = max([*commits, *parts])
    complete = [v for v, p in parts.items() if len(p["files"]) == p["of"] and v <= latest]
    checkpoint = max(complete) if complete else None

    def apply(action: dict, replaying: bool) -> None:
        if action.get("add"):
            add = action["add"]
            path = rel_path(add["path"])
            state["ever"].add(path)
            if replaying:
                records = None
                try:
                    records = json.loads(add.get("stats") or "{}").get("numRecords")
                except ValueError:
                    pass
                pv = add.get("partitionValues") or {}
                if isinstance(pv, list):  # a checkpoint's map column
                    pv = dict(pv)
                state["active"][path] = {"size": add.get("size"), "partition_values": pv, "records": records}
                state["removed"].discard(path)
        if action.get("remove"):
            path = rel_path(action["remove"]["path"])
            state["ever"].add(path)
            if replaying:
                state["active"].pop(path, None)
                state["removed"].add(path)
        if replaying and action.get("txn"):
            state["txns"][action["txn"]["appId"]] = action["txn"]["version"]
        if replaying and action.get("metaData"):
            state["metadata"] = action["metaData"]

    if checkpoint is not None:
        state["checkpoint"] = checkpoint
        for name in sorted(parts[checkpoint]["files"]):
            try:
                with lake.fs.open_input_file(posixpath.join(log_dir, name)) as f:
                    rows = pq.read_table(f).to_pylist()
            except (OSError, pa.ArrowException) as err:
                state["errors"].append({"name": f"{DELTA_LOG}/{name}", "error": f"checkpoint unreadable: {err}"})
                continue
            for row in rows:
                if row.get("sidecar") or row.get("checkpointMetadata"):
                    state["errors"].append({"name": f"{DELTA_LOG}/{name}", "error": "v2 checkpoints are not supported"})
                    break
                apply(row, replaying=True)
    start = checkpoint + 1 if checkpoint is not None else 0
    gaps = [v for v in range(start, latest + 1) if v not in commits]
    if gaps:
        state["errors"].append({"name": DELTA_LOG, "error": f"log has no commit for versions {gaps[:10]}"})
    for version in sorted(commits):
        try:
            with lake.fs.open_input_stream(posixpath.join(log_dir, commits[version])) as f:
                text = f.read().decode()
            actions = [json.loads(line) for line in text.splitlines() if line.strip()]
        except (OSError, ValueError) as err:
            state["errors"].append({"name": f"{DELTA_LOG}/{commits[version]}", "error": f"commit unreadable: {err}"})
            continue
        for action in actions:
            apply(action, replaying=version >= start)
    state["version"] = latest
    return state


# --- one table -------------------------------------------------------------


def normal_type(t: pa.DataType) -> str:
    """A type for comparing file schemas: UTC spelt one way, large/view strings as strings."""
    if pa.types.is_timestamp(t):
        tz = t.tz
        if tz in ("+00:00", "Z", "Etc/UTC", "UTC", "utc"):
            tz = "UTC"
        return f"timestamp[{t.unit}, tz={tz}]"
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    return str(t)


def source_key_column(table: str, names: list[str], quarantine: bool) -> str | None:
    if quarantine:
        return None
    preferred = SOURCE_KEYS.get(table.split("/", 1)[0])
    if preferred in names:
        return preferred
    return next((n for n in ("practice_id", "supplier_id", "source_id") if n in names), None)


def done_key(table: str, quarantine: bool) -> str:
    return "source_id" if quarantine else SOURCE_KEYS.get(table.split("/", 1)[0], "source_id")


def polars_rows(uri: str, options: dict) -> int:
    import polars as pl

    return pl.scan_delta(uri, storage_options=options or None).select(pl.len()).collect().item()


def read_table(lake: Lake, table: str, id_column: str, with_rows: bool, max_rows: int) -> tuple[dict, list[dict]]:
    quarantine = table.startswith("_quarantine/") or table == "_quarantine"
    listing = lake.files(table)
    log_files = {k[len(DELTA_LOG) + 1 :]: v for k, v in listing.items() if k.startswith(DELTA_LOG + "/")}
    data_files = {k: v for k, v in listing.items() if not k.startswith(DELTA_LOG + "/")}
    parquet = {k: v for k, v in data_files.items() if k.endswith(".parquet")}
    entry = {
        "path": table,
        "kind": "quarantine" if quarantine else "data",
        "version": None,
        "checkpoint": None,
        "files": 0,
        "rows": 0,
        "polars_rows": None,
        "partition_columns": [],
        "schema": {},
        "columns": [],
        "done": [],
        "txns": {},
        "other_txns": [],
        "missing_files": [],
        "orphans": [],
        "removed_files": [],
        "other_files": sorted(k for k in data_files if not k.endswith(".parquet")),
        "file_schema_mismatches": [],
        "stats_mismatches": [],
        "read_errors": [],
    }
    log = replay_log(lake, table, log_files)
    entry["read_errors"].extend(log["errors"])
    if log["version"] is None:
        # A _delta_log/ without a commit: the table was never created (a
        # crash before its first commit), so every data file is an orphan.
        entry["orphans"] = sorted(parquet)
        return entry, []
    entry["version"] = log["version"]
    entry["checkpoint"] = log["checkpoint"]

    from deltalake import DeltaTable

    uri = lake.table_uri(table)
    try:
        delta = DeltaTable(uri, storage_options=lake.options or None)
        delta_version = delta.version()
        adds = pa.table(delta.get_add_actions(flatten=True)).select(["path", "size_bytes"]).to_pylist()
        dataset = delta.to_pyarrow_dataset()
    except Exception as err:  # deltalake raises its own types, and OSError
        entry["read_errors"].append({"name": DELTA_LOG, "error": f"deltalake cannot load the table: {err}"})
        entry["orphans"] = sorted(p for p in parquet if p not in log["ever"])
        return entry, []
    if delta_version != log["version"]:
        entry["read_errors"].append(
            {"name": DELTA_LOG, "error": f"deltalake is at version {delta_version}, the log replay at {log['version']}"}
        )
    delta_active = {rel_path(a["path"]): a["size_bytes"] for a in adds}
    replay_active = {p: a["size"] for p, a in log["active"].items()}
    if delta_active != replay_active:
        only_delta = sorted(set(delta_active) - set(replay_active))
        only_replay = sorted(set(replay_active) - set(delta_active))
        entry["read_errors"].append(
            {
                "name": DELTA_LOG,
                "error": f"active files differ: deltalake only {only_delta[:5]}, replay only {only_replay[:5]}, "
                f"sizes differ {sorted(p for p in set(delta_active) & set(replay_active) if delta_active[p] != replay_active[p])[:5]}",
            }
        )
    active = {**replay_active, **delta_active}
    entry["files"] = len(delta_active)
    for path, size in sorted(active.items()):
        found = data_files.get(path)
        if found is None or (size is not None and found != size):
            entry["missing_files"].append({"path": path, "bytes": size, "found_bytes": found})
    referenced = log["ever"] | set(active)
    entry["orphans"] = sorted(p for p in parquet if p not in referenced)
    entry["removed_files"] = sorted(p for p in parquet if p in log["removed"] and p not in active)
    metadata = delta.metadata()
    partition_columns = list(metadata.partition_columns)
    entry["partition_columns"] = partition_columns
    schema = dataset.schema
    entry["schema"] = {f.name: str(f.type) for f in schema}
    entry["columns"] = [f.name for f in schema]

    # Application transactions: our replay, each checked against deltalake's.
    key = done_key(table, quarantine)
    entry["txns"] = dict(sorted(log["txns"].items()))
    done = set()
    app_ids = sorted(log["txns"])
    # deltalake answers one app id per call (a few ms each): a spread of at
    # most TXN_CHECKS of them is asked, a disagreement being systematic.
    step = max(1, -(-len(app_ids) // TXN_CHECKS))
    for app_id in app_ids[::step]:
        version = log["txns"][app_id]
        try:
            theirs = delta.transaction_version(app_id)
        except Exception as err:  # deltalake raises its own types
            theirs = f"error: {err}"
        if theirs != version:
            entry["read_errors"].append(
                {"name": DELTA_LOG, "error": f"txn {app_id}: version {version} in the log, deltalake says {theirs}"}
            )
    for app_id in app_ids:
        parsed = parse_app_id(app_id)
        if parsed:
            done.add(f"{key}={parsed[0]}/batch_date={parsed[1]}")
        else:
            entry["other_txns"].append(app_id)
    entry["done"] = sorted(done)

    # The rows, file by file (per-file errors, schemas and stats checks).
    expected = [(f.name, normal_type(f.type)) for f in schema if f.name not in partition_columns]
    tables, file_paths, bad_schema, failed = [], [], set(), []
    for fragment in dataset.get_fragments():
        path = rel_path(fragment.path)
        info = log["active"].get(path, {})
        try:
            physical = fragment.physical_schema
            rows = fragment.to_table(schema=schema)
        except (OSError, pa.ArrowException) as err:
            batch_date = (info.get("partition_values") or {}).get("batch_date")
            entry["read_errors"].append({"name": path, "error": str(err)})
            failed.append((batch_date, {"name": f"{table}/{path}", "error": str(err)}))
            continue
        got = [(f.name, normal_type(f.type)) for f in physical]
        if got != expected:
            bad_schema.add(len(file_paths))
            entry["file_schema_mismatches"].append({"path": path, "schema": {n: t for n, t in got}})
        records = info.get("records")
        if records is not None and records != rows.num_rows:
            entry["stats_mismatches"].append({"path": path, "stats_rows": records, "rows": rows.num_rows})
        tables.append(rows.append_column(FILE_INDEX, pa.array([len(file_paths)] * rows.num_rows, pa.int32())))
        file_paths.append(path)
    rows = pa.concat_tables(tables) if tables else schema.empty_table().append_column(FILE_INDEX, pa.array([], pa.int32()))
    entry["rows"] = rows.num_rows
    try:
        entry["polars_rows"] = polars_rows(uri, lake.options)
    except BaseException as err:  # Polars raises its own types, and a Rust panic is a BaseException
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        entry["read_errors"].append({"name": "polars", "error": f"Polars cannot read the table: {err}"})
    if entry["polars_rows"] is not None and entry["polars_rows"] != entry["rows"]:
        entry["read_errors"].append(
            {"name": "polars", "error": f"Polars reads {entry['polars_rows']} rows, deltalake/pyarrow {entry['rows']}"}
        )
    partitions = batches(table, rows, quarantine, id_column, file_paths, bad_schema, failed, done, with_rows, max_rows)
    return entry, partitions


def sort_table(table: pa.Table, keys: list[str]) -> pa.Table:
    """Rows in key order, then by every other plain column (lineage last
    considered never), so that ties are broken the same way in every run."""
    rest = [
        f.name
        for f in table.schema
        if f.name not in keys and f.name not in LINEAGE and f.name != FILE_INDEX and not pa.types.is_nested(f.type)
    ]
    # Dictionary-encoded columns (a dataset's partition columns) sort by
    # their values only once decoded.
    for k in keys:
        if k in table.column_names and pa.types.is_dictionary(table.schema.field(k).type):
            i = table.column_names.index(k)
            plain = table.column(k).cast(table.schema.field(k).type.value_type)
            table = table.set_column(i, k, plain)
    try:
        return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys + rest]))
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        # Some column does not sort; the keys alone must, or grouping fails.
        return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))


def batches(table, rows, quarantine, id_column, file_paths, bad_schema, failed, done, with_rows, max_rows) -> list[dict]:
    names = rows.column_names
    if quarantine:
        group = [k for k in QUARANTINE_KEYS if k in names]
        order = [c for c in QUARANTINE_HASHED if c in names]
        hashed = set(order)
    else:
        key = source_key_column(table, names, quarantine)
        group = [k for k in (key, "batch_date") if k and k in names]
        order = [id_column] if id_column in names else []
        hashed = {n for n in names if n not in LINEAGE and n != FILE_INDEX}
    rows = sort_table(rows, group + order)
    if group and rows.num_rows:
        # Runs of equal keys in the sorted rows: group_by's output order is
        # not the rows' order for several keys, so the runs are found here.
        counts = []
        for key in rows.select(group).to_pylist():
            if counts and {k: v for k, v in counts[-1].items() if k != "count_all"} == key:
                counts[-1]["count_all"] += 1
            else:
                counts.append({**key, "count_all": 1})
    else:
        counts = [{"count_all": rows.num_rows}] if rows.num_rows else []
    out, offset = [], 0
    for g in counts:
        n = g.pop("count_all")
        part_rows = rows.slice(offset, n)
        offset += n
        first = part_rows.select(group).slice(0, 1).to_pylist()[0] if group else {}
        if first != g:
            raise RuntimeError(f"check_lake: grouping out of order in {table}: {first} != {g}")
        out.append(batch(table, part_rows, g, quarantine, id_column, file_paths, bad_schema, failed, done, hashed, with_rows, max_rows))
    return out


def segment(value) -> str:
    """A key value as it stands in a batch path."""
    if value is None:
        return NULL_PARTITION
    return value if isinstance(value, str) else str(canonical(value))


def batch(table, rows, keys, quarantine, id_column, file_paths, bad_schema, failed, done, hashed, with_rows, max_rows) -> dict:
    batch_date = segment(keys["batch_date"]) if "batch_date" in keys else None
    if quarantine:
        source_type = keys.get("source_type")
        column = SOURCE_KEYS.get(source_type, "source_id")
        source_id = keys.get("source_id")
    else:
        source_type = table.split("/", 1)[0]
        column = next((k for k in keys if k != "batch_date"), None)
        source_id = keys.get(column) if column else None
    segments = []
    if column and (not quarantine or "source_id" in keys):
        segments.append(f"{column}={segment(source_id)}")
    if batch_date is not None:
        segments.append(f"batch_date={batch_date}")
    rel = "/".join(segments)
    files = sorted({file_paths[i] for i in pc.unique(rows.column(FILE_INDEX)).to_pylist()})
    file_ids = set(pc.unique(rows.column(FILE_INDEX)).to_pylist())
    rows = rows.drop_columns([FILE_INDEX])
    part = {
        "path": f"{table}/{rel}" if rel else table,
        "kind": "quarantine" if quarantine else "data",
        "table": table,
        "source_type": source_type,
        "source_id": segment(source_id) if source_id is not None else None,
        "batch_date": batch_date,
        "rows": rows.num_rows,
        "files": files,
        "schema_consistent": not (file_ids & bad_schema),
        # An unreadable file of this batch_date may hold rows of this batch.
        "read_errors": [e for d, e in failed if d is None or d == batch_date],
    }
    if not quarantine:
        part["done"] = f"{column}={segment(source_id)}/batch_date={batch_date}" in done
    if id_column in rows.column_names:
        part["duplicate_ids"] = rows.num_rows - pc.count_distinct(rows.column(id_column), mode="all").as_py()
    else:
        part["duplicate_ids"] = None
    part["columns"] = [
        {"name": f.name, "type": str(f.type), "nullable": f.nullable, **column_stats(rows.column(f.name))}
        for f in rows.schema
    ]
    digest = hashlib.sha256()
    for c in part["columns"]:
        if c["name"] in hashed:
            digest.update(f"{c['name']}:{c['type']}:{c['sha256']}\n".encode())
    part["sha256"] = digest.hexdigest()
    part["sha256_columns"] = [c["name"] for c in part["columns"] if c["name"] in hashed]
    if with_rows:
        part["rows_data"] = [canonical(r) for r in rows.slice(0, max_rows).to_pylist()]
        part["rows_truncated"] = rows.num_rows > max_rows
    return part


# --- the lake --------------------------------------------------------------


def find_tables(lake: Lake, under: str) -> tuple[list[str], list[str]]:
    """Delta tables at or below `under` (or the one `under` lies in), and the
    Parquet files there outside every table."""
    files = lake.files(under)
    tables = set()
    for rel in files:
        parts = rel.split("/")
        if DELTA_LOG in parts[:-1]:
            tables.add(posixpath.join(under, *parts[: parts.index(DELTA_LOG)]).strip("/"))
    if not under.startswith(CURRENT + "/"):
        # Current tables are derived from the history: check_current.py checks them.
        tables = {t for t in tables if not (t == CURRENT or t.startswith(CURRENT + "/"))}
    if not tables and under:
        # `under` may point inside a table, e.g. at pims/patients/practice_id=p1.
        parts = under.split("/")
        for n in range(len(parts) - 1, 0, -1):
            if lake.is_table("/".join(parts[:n])):
                return ["/".join(parts[:n])], []
    stray = sorted(
        full
        for rel in files
        if rel.endswith(".parquet")
        and not (full := posixpath.join(under, rel)).startswith("_runs/")
        and not any(full == t or full.startswith(t + "/") for t in tables)
        and not full.startswith(CURRENT + "/")
    )
    return sorted(tables), stray


def inspect(url, under, id_column, with_rows, max_rows) -> dict:
    lake = Lake(url)
    table_paths, stray = find_tables(lake, under)
    tables, partitions = [], []
    for table in table_paths:
        entry, parts = read_table(lake, table, id_column, with_rows, max_rows)
        tables.append(entry)
        partitions.extend(p for p in parts if not under or p["path"] == under or p["path"].startswith(under + "/"))
    partitions.sort(key=lambda p: p["path"])
    # A quarantine batch is done when the data batch it belongs to is.
    done = {t["path"]: set(t["done"]) for t in tables if t["kind"] == "data"}
    for p in partitions:
        if p["kind"] == "quarantine":
            data_table = f"{p['source_type']}/{p['table'].split('/', 1)[-1]}"
            key = f"{SOURCE_KEYS.get(p['source_type'], 'source_id')}={p['source_id']}/batch_date={p['batch_date']}"
            p["done"] = key in done[data_table] if data_table in done else None
    runs = sorted(rel[: -len(".json")] for rel in lake.files("_runs") if rel.endswith(".json") and "/" not in rel)
    data = [p for p in partitions if p["kind"] == "data"]
    data_tables = [t for t in tables if t["kind"] == "data"]
    return {
        "lake": url,
        "under": under,
        "tables": tables,
        "partitions": partitions,
        "runs": runs,
        "stray_files": stray,
        "totals": {
            "tables": len(tables),
            "partitions": len(data),
            "committed_partitions": sum(1 for p in data if p["done"]),
            "done_batches": sum(len(t["done"]) for t in data_tables),
            "rows": sum(p["rows"] for p in data),
            "duplicate_ids": sum(p["duplicate_ids"] or 0 for p in data),
            "parquet_files": sum(t["files"] for t in data_tables),
            "read_errors": sum(len(t["read_errors"]) for t in tables),
            "missing_files": sum(len(t["missing_files"]) for t in tables),
            "orphans": sum(len(t["orphans"]) for t in tables),
            "quarantine_partitions": len(partitions) - len(data),
            "quarantine_rows": sum(p["rows"] for p in partitions if p["kind"] == "quarantine"),
        },
    }


# --- --duckdb --------------------------------------------------------------


def duckdb_table(lake: Lake, table: str, id_column: str, con, tmp: str | None) -> dict:
    from deltalake import DeltaTable

    out = {"path": table, "files": 0, "rows": 0, "distinct_ids": None, "partitions": []}
    try:
        delta = DeltaTable(lake.table_uri(table), storage_options=lake.options or None)
        uris = delta.file_uris()
        rels = [rel_path(p) for p in pa.table(delta.get_add_actions(flatten=True)).column("path").to_pylist()]
    except Exception as err:  # deltalake raises its own types
        return {**out, "error": f"deltalake cannot load the table: {err}"}
    out["files"] = len(uris)
    if len(rels) != len(uris):
        return {**out, "error": f"file_uris() lists {len(uris)} files, the add actions {len(rels)}"}
    if not uris:
        return {**out, "distinct_ids": 0}
    if lake.local:
        paths = [urlparse(u).path if u.startswith("file://") else u for u in uris]
    else:
        paths = []
        for rel in rels:
            target = os.path.join(tmp, table, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            pafs.copy_files(
                posixpath.join(lake.fs_path(table), rel), target,
                source_filesystem=lake.fs, destination_filesystem=pafs.LocalFileSystem(),
            )
            paths.append(target)
    listed = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
    source = f"read_parquet([{listed}], hive_partitioning=true, hive_types_autocast=false)"
    import duckdb

    try:
        names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
        quarantine = table.startswith("_quarantine/")
        distinct = f'count(DISTINCT "{id_column}")' if id_column in names else "NULL"
        out["rows"], out["distinct_ids"] = con.execute(f"SELECT count(*), {distinct} FROM {source}").fetchone()
        keys = [k for k in (QUARANTINE_KEYS if quarantine else (source_key_column(table, names, False), "batch_date")) if k and k in names]
        if keys:
            cols = ", ".join(f'"{k}"' for k in keys)
            for row in con.execute(f"SELECT {cols}, count(*), {distinct} FROM {source} GROUP BY ALL ORDER BY ALL").fetchall():
                part = {k: None if v is None else str(v) for k, v in zip(keys, row)}
                part["rows"], part["distinct_ids"] = row[-2], row[-1]
                out["partitions"].append(part)
    except duckdb.Error as err:
        out["error"] = f"DuckDB cannot read the files: {err}"
    return out


def duckdb_count(url, under, id_column) -> dict:
    import duckdb  # only this mode needs it

    lake = Lake(url)
    table_paths, _ = find_tables(lake, under)
    tmp = None if lake.local else tempfile.mkdtemp(prefix="check_lake_")
    try:
        con = duckdb.connect()
        tables = [duckdb_table(lake, t, id_column, con, tmp) for t in table_paths]
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "lake": url,
        "under": under,
        "mirrored": not lake.local,
        "tables": tables,
        "files": sum(t["files"] for t in tables),
        "rows": sum(t["rows"] for t in tables),
        "errors": sum(1 for t in tables if t.get("error")),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lake", help="lake root: PATH, file://, s3://BUCKET/PREFIX, az://CONTAINER/PREFIX")
    ap.add_argument("--under", default="", help="only this sub-path: pims, pims/patients, pims/patients/practice_id=p1")
    ap.add_argument("--id-column", default="id", help="the column that must be unique per batch")
    ap.add_argument("--duckdb", action="store_true", help="count rows and distinct ids with DuckDB")
    ap.add_argument("--rows", action="store_true", help="include every row (id order) per batch")
    ap.add_argument("--max-rows", type=int, default=1000, help="cap on rows printed per batch")
    args = ap.parse_args(argv)
    under = args.under.strip("/")
    try:
        if args.duckdb:
            out = duckdb_count(args.lake, under, args.id_column)
        else:
            out = inspect(args.lake, under, args.id_column, args.rows, args.max_rows)
    except BadLakeUrl as err:
        print(f"check_lake: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"check_lake: cannot read {args.lake}: {err}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout, indent=1, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
