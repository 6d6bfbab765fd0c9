"""Tests of check_lake.py against a small lake built here, on every store.

The lake has a committed partition (manifest + two files), a partition with a
file its manifest does not list and a duplicate id, an uncommitted partition
(no manifest) and a truncated file, so every field the Rust suite relies on is
seen to change when the lake does. The S3 and Azure cases need the servers of
tests/servers/*.sh (tests/run.sh starts them); without them they fail, never skip.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import check_lake  # noqa: E402

P1 = "pims/clients/practice_id=p1/batch_date=2026-11-27"
P2 = "pims/clients/practice_id=p2/batch_date=2026-11-27"
P3 = "pims/clients/practice_id=p3/batch_date=2026-11-27"


def table(ids, names):
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "name": pa.array(names, pa.string()),
            "last_modified": pa.array(
                [dt.datetime(2026, 11, 27, 1, i, tzinfo=dt.timezone.utc) for i in range(len(ids))],
                pa.timestamp("ms", tz="UTC"),
            ),
        }
    )


def build_lake(root: Path) -> None:
    def write(part, name, t):
        (root / part).mkdir(parents=True, exist_ok=True)
        pq.write_table(t, root / part / name)

    def manifest(part, files):
        entries = [{"path": f, "rows": pq.read_metadata(root / part / f).num_rows if (root / part / f).exists() else 0} for f in files]
        body = {"run_id": "r1", "rows": sum(e["rows"] for e in entries), "files": entries}
        (root / part / "_manifest.json").write_text(json.dumps(body))

    write(P1, "part-00000.parquet", table(["c", "a"], ["Cleo", "Alf"]))
    write(P1, "part-00001.parquet", table(["b"], ["Bo"]))
    manifest(P1, ["part-00000.parquet", "part-00001.parquet"])
    write(P2, "part-00000.parquet", table(["x", "y"], ["X", "Y"]))
    write(P2, "part-00001.parquet", table(["x"], ["X again"]))  # left over, not in the manifest
    manifest(P2, ["part-00000.parquet", "part-00002.parquet"])  # lists a file that is missing
    write(P3, "part-00000.parquet", table(["z"], ["Z"]))  # no manifest: not committed
    data = (root / P3 / "part-00000.parquet").read_bytes()
    (root / P3 / "part-00001.parquet").write_bytes(data[: len(data) // 2])  # half-written
    (root / "_runs").mkdir()
    (root / "_runs" / "r1.json").write_text("{}")


def store_urls(tmp_path: Path):
    """The lake as a local path, then copied to each server from the env."""
    local = tmp_path / "lake"
    build_lake(local)
    yield "file", str(local)
    prefix = f"check-lake-test/{uuid.uuid4().hex}"
    for store, var in (("s3", "SYNCVET_TEST_S3_URL"), ("azure", "SYNCVET_TEST_AZURE_URL")):
        base = os.environ.get(var)
        assert base, f"{var} is not set: run through tests/run.sh, which starts the storage servers"
        url = f"{base.rstrip('/')}/{prefix}"
        fs, root = check_lake.open_lake(url)
        pafs.copy_files(str(local), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        yield store, url


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    return dict(store_urls(tmp_path_factory.mktemp("lakes")))


def run_cli(*args) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE / "check_lake.py"), *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize("store", ["file", "s3", "azure"])
def test_partitions_manifests_and_types(lakes, store):
    report = run_cli(lakes[store])
    parts = {p["path"]: p for p in report["partitions"]}
    assert sorted(parts) == [P1, P2, P3]
    p1, p2, p3 = parts[P1], parts[P2], parts[P3]
    assert p1["rows"] == 3 and p1["duplicate_ids"] == 0
    assert p1["files"]["missing"] == [] and p1["files"]["unlisted"] == []
    assert [(c["name"], c["type"]) for c in p1["columns"]] == [
        ("id", "string"),
        ("name", "string"),
        ("last_modified", "timestamp[ms, tz=UTC]"),
    ]
    assert p1["columns"][0]["sample"] == ["a", "b", "c"]  # id order, across files
    assert p1["manifest_rows"] == 3 and p1["manifest_row_mismatches"] == []
    assert p2["files"]["unlisted"] == ["part-00001.parquet"]
    assert p2["files"]["missing"] == ["part-00002.parquet"]
    assert p2["duplicate_ids"] == 1
    assert p3["manifest"] is None and [e["name"] for e in p3["read_errors"]] == ["part-00001.parquet"]
    assert report["runs"] == ["r1.json"]
    assert report["totals"] == {
        "partitions": 3,
        "committed_partitions": 2,
        "rows": 7,
        "duplicate_ids": 1,
        "parquet_files": 6,
        "read_errors": 1,
        "quarantine_partitions": 0,
    }


def test_checksums_equal_across_stores_and_change_with_values(lakes, tmp_path):
    sums = {s: {p["path"]: p["sha256"] for p in run_cli(url)["partitions"]} for s, url in lakes.items()}
    assert sums["file"] == sums["s3"] == sums["azure"]
    other = tmp_path / "other"
    build_lake(other)
    pq.write_table(table(["b"], ["Bob"]), other / P1 / "part-00001.parquet")  # one value differs
    changed = {p["path"]: p["sha256"] for p in run_cli(str(other))["partitions"]}
    assert changed[P1] != sums["file"][P1] and changed[P2] == sums["file"][P2]


def test_manifest_row_counts_are_checked_against_the_files(tmp_path):
    build_lake(tmp_path)
    manifest = tmp_path / P1 / "_manifest.json"
    body = json.loads(manifest.read_text())
    body["files"][1]["rows"] = 5
    manifest.write_text(json.dumps(body))
    (part,) = run_cli(str(tmp_path), "--under", P1)["partitions"]
    assert part["manifest_row_mismatches"] == ["part-00001.parquet"]


def test_rows_mode_prints_rows_in_id_order(lakes):
    report = run_cli(lakes["file"], "--under", P1, "--rows")
    (part,) = report["partitions"]
    assert [r["id"] for r in part["rows_data"]] == ["a", "b", "c"]
    assert part["rows_data"][0]["last_modified"] == "2026-11-27T01:01:00+00:00"


@pytest.mark.parametrize("store", ["file", "s3", "azure"])
def test_duckdb_counts_rows_and_hive_partitions(lakes, store, tmp_path):
    # Drop the half-written file: DuckDB, like any reader, fails on it.
    url = lakes[store]
    fs, root = check_lake.open_lake(url)
    fs.delete_file(f"{root}/{P3}/part-00001.parquet")
    report = run_cli(url, "--duckdb", "--under", "pims/clients")
    assert report["mirrored"] == (store != "file")
    assert (report["rows"], report["distinct_ids"], report["files"]) == (7, 6, 5)
    assert [(p["practice_id"], p["batch_date"], p["rows"]) for p in report["partitions"]] == [
        ("p1", "2026-11-27", 3),
        ("p2", "2026-11-27", 3),
        ("p3", "2026-11-27", 1),
    ]
