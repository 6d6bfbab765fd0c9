#!/usr/bin/env python3
"""Independent reader of a syncvet lake, for the end-to-end tests.

The Rust suite writes a lake with arrow-rs/parquet-rs and must not read it
back with the same code, or a bug shared by writer and reader would pass
unseen. This script reads it with Arrow C++ (pyarrow) and, in --duckdb mode,
with DuckDB's own Parquet reader, and prints one JSON document on stdout.

Usage:
  check_lake.py LAKE [--under SUBPATH] [--id-column id] [--rows] [--max-rows N]
  check_lake.py LAKE --duckdb [--under SUBPATH] [--id-column id]

LAKE is a local path, file://PATH, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX
(also abfs://, azure://). Credentials come from the environment exported by
tests/servers/*.sh: AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, AWS_ALLOW_HTTP for S3; AZURITE_BLOB_STORAGE_URL (emulator) or
AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY for Azure.

Default mode, per partition folder (a folder holding `_manifest.json` or
`*.parquet`): the files the manifest lists vs the files a glob finds, rows,
columns with their Arrow types as pyarrow reports them, duplicate ids, and per
column a null count, distinct count, min/max, a sample and a sha256 over the
values in id order, so two lakes holding the same rows (a file:// and an s3://
run, a run and its re-run) have equal checksums.

--duckdb mode runs `SELECT count(*), count(DISTINCT id) FROM
read_parquet('ROOT/SUBPATH/**/*.parquet', hive_partitioning=true)` plus the
row count per hive partition. DuckDB's httpfs extension cannot be fetched
here, so for s3:// and az:// the matching files are first copied to a temp
folder with pyarrow, then DuckDB reads the copies.

Exit status: 0 when the lake could be read (the JSON says what is in it,
including unreadable files), 2 on bad arguments or an unreachable store.
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
import shutil
import sys
import tempfile
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

MANIFEST = "_manifest.json"
SAMPLE_ROWS = 3


def open_lake(url: str) -> tuple[pafs.FileSystem, str]:
    """Returns the filesystem and the root path inside it for a lake URL."""
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
        emulator = os.environ.get("AZURE_STORAGE_USE_EMULATOR", "").lower() in ("1", "true")
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
    raise SystemExit(f"check_lake: unsupported lake URL scheme {scheme!r} in {url}")


def list_files(fs: pafs.FileSystem, root: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


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


def manifest_file_names(manifest) -> list[str] | None:
    """File names a manifest lists, whatever the exact shape of its entries."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        return None
    names = []
    for entry in files:
        if isinstance(entry, dict):
            entry = next((entry[k] for k in ("path", "name", "file", "key") if k in entry), None)
        if isinstance(entry, str):
            names.append(posixpath.basename(entry))
    return sorted(names)


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
    """Stats of one column whose rows are already in id order."""
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


def read_partition(fs, root, folder, names, id_column, with_rows, max_rows) -> dict:
    rel = posixpath.relpath(folder, root) if folder != root else "."
    part = {"path": rel, "kind": "quarantine" if rel.startswith("_quarantine") else "data"}
    found = sorted(n for n in names if n.endswith(".parquet"))
    part["other_files"] = sorted(n for n in names if not n.endswith(".parquet") and n != MANIFEST)
    manifest = None
    if MANIFEST in names:
        try:
            with fs.open_input_stream(posixpath.join(folder, MANIFEST)) as f:
                manifest = json.loads(f.read())
        except (OSError, ValueError) as err:
            part["manifest_error"] = str(err)
    listed = manifest_file_names(manifest) if manifest is not None else None
    part["manifest"] = manifest
    part["files"] = {
        "manifest": listed,
        "found": found,
        "missing": sorted(set(listed or []) - set(found)),
        "unlisted": sorted(set(found) - set(listed or [])) if listed is not None else found,
    }
    tables, schemas, file_infos, errors = [], [], [], []
    for name in found:
        path = posixpath.join(folder, name)
        try:
            with fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                table = pf.read()
                file_infos.append({"name": name, "rows": pf.metadata.num_rows, "row_groups": pf.metadata.num_row_groups})
        except (OSError, pa.ArrowException) as err:
            errors.append({"name": name, "error": str(err)})
            continue
        tables.append(table)
        schemas.append(table.schema)
    part["file_details"] = file_infos
    # Row counts the manifest claims (per file and in all) against the files' own metadata.
    if isinstance(manifest, dict):
        claimed = {
            posixpath.basename(str(e.get("path", ""))): e.get("rows")
            for e in manifest.get("files", [])
            if isinstance(e, dict) and isinstance(e.get("rows"), int)
        }
        actual = {f["name"]: f["rows"] for f in file_infos}
        part["manifest_rows"] = manifest.get("rows") if isinstance(manifest.get("rows"), int) else None
        part["manifest_row_mismatches"] = sorted(n for n, r in claimed.items() if n in actual and actual[n] != r)
    part["read_errors"] = errors
    part["schema_consistent"] = all(s.equals(schemas[0], check_metadata=False) for s in schemas)
    if not tables:
        part["rows"] = 0
        part["columns"] = []
        return part
    schema = schemas[0]
    table = pa.concat_tables(tables, promote_options="permissive") if part["schema_consistent"] else tables[0]
    part["rows"] = sum(t.num_rows for t in tables)
    meta = schema.metadata or {}
    part["schema_metadata"] = {
        k.decode(errors="replace"): v.decode(errors="replace") for k, v in meta.items() if k != b"ARROW:schema"
    }
    if id_column in table.column_names:
        ids = table.column(id_column)
        part["duplicate_ids"] = table.num_rows - pc.count_distinct(ids, mode="all").as_py()
        # Id order makes the checksums independent of file and row-group order.
        table = table.take(pc.sort_indices(table, sort_keys=[(id_column, "ascending")]))
    else:
        part["duplicate_ids"] = None
    part["columns"] = [
        {"name": f.name, "type": str(f.type), "nullable": f.nullable, **column_stats(table.column(f.name))}
        for f in table.schema
    ]
    digest = hashlib.sha256()
    for c in part["columns"]:
        digest.update(f"{c['name']}:{c['type']}:{c['sha256']}\n".encode())
    part["sha256"] = digest.hexdigest()
    if with_rows:
        rows = table.slice(0, max_rows).to_pylist()
        part["rows_data"] = [canonical(r) for r in rows]
        part["rows_truncated"] = table.num_rows > max_rows
    return part


def inspect(url, under, id_column, with_rows, max_rows) -> dict:
    fs, root = open_lake(url)
    base = posixpath.join(root, under) if under else root
    files = list_files(fs, base)
    folders: dict[str, list[str]] = {}
    for info in files:
        folders.setdefault(posixpath.dirname(info.path), []).append(posixpath.basename(info.path))
    partitions = [
        read_partition(fs, root, folder, names, id_column, with_rows, max_rows)
        for folder, names in sorted(folders.items())
        if MANIFEST in names or any(n.endswith(".parquet") for n in names)
    ]
    runs = sorted(
        posixpath.basename(i.path) for i in list_files(fs, posixpath.join(root, "_runs")) if i.path.endswith(".json")
    )
    data = [p for p in partitions if p["kind"] == "data"]
    return {
        "lake": url,
        "under": under,
        "partitions": partitions,
        "runs": runs,
        "totals": {
            "partitions": len(data),
            "committed_partitions": sum(1 for p in data if p["manifest"] is not None),
            "rows": sum(p["rows"] for p in data),
            "duplicate_ids": sum(p["duplicate_ids"] or 0 for p in data),
            "parquet_files": sum(len(p["files"]["found"]) for p in data),
            "read_errors": sum(len(p["read_errors"]) for p in partitions),
            "quarantine_partitions": len(partitions) - len(data),
        },
    }


def duckdb_count(url, under, id_column) -> dict:
    import duckdb  # only this mode needs it

    fs, root = open_lake(url)
    base = posixpath.join(root, under) if under else root
    parquet = [i for i in list_files(fs, base) if i.path.endswith(".parquet")]
    result = {"lake": url, "under": under, "files": len(parquet), "mirrored": False}
    if not parquet:
        return {**result, "rows": 0, "distinct_ids": 0, "partitions": []}
    tmp = None
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            local = base
        else:
            tmp = tempfile.mkdtemp(prefix="check_lake_")
            for info in parquet:
                target = os.path.join(tmp, posixpath.relpath(info.path, base))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                pafs.copy_files(info.path, target, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            local, result["mirrored"] = tmp, True
        glob = os.path.join(local, "**", "*.parquet").replace("'", "''")
        con = duckdb.connect()
        source = f"read_parquet('{glob}', hive_partitioning=true, hive_types_autocast=false)"
        rows, distinct = con.execute(f'SELECT count(*), count(DISTINCT "{id_column}") FROM {source}').fetchone()
        keys = sorted({seg.split("=", 1)[0] for i in parquet for seg in posixpath.relpath(i.path, base).split("/") if "=" in seg})
        partitions = []
        if keys:
            cols = ", ".join(f'"{k}"' for k in keys)
            query = f'SELECT {cols}, count(*), count(DISTINCT "{id_column}") FROM {source} GROUP BY ALL ORDER BY ALL'
            for row in con.execute(query).fetchall():
                part = {k: str(v) for k, v in zip(keys, row)}
                part["rows"], part["distinct_ids"] = row[-2], row[-1]
                partitions.append(part)
        return {**result, "query_glob": "**/*.parquet", "rows": rows, "distinct_ids": distinct, "partitions": partitions}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lake", help="lake root: PATH, file://, s3://BUCKET/PREFIX, az://CONTAINER/PREFIX")
    ap.add_argument("--under", default="", help="only this sub-folder, e.g. pims/clients")
    ap.add_argument("--id-column", default="id", help="the column that must be unique per partition")
    ap.add_argument("--duckdb", action="store_true", help="count rows and distinct ids with DuckDB")
    ap.add_argument("--rows", action="store_true", help="include every row (id order) per partition")
    ap.add_argument("--max-rows", type=int, default=1000, help="cap on rows printed per partition")
    args = ap.parse_args(argv)
    under = args.under.strip("/")
    try:
        if args.duckdb:
            out = duckdb_count(args.lake, under, args.id_column)
        else:
            out = inspect(args.lake, under, args.id_column, args.rows, args.max_rows)
    except OSError as err:
        print(f"check_lake: cannot read {args.lake}: {err}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout, indent=1, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
