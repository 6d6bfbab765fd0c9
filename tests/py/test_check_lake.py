"""Tests of check_lake.py against a small lake of Delta tables built here, on every store.

The lake is written with the Python `deltalake` package as the Rust writer
writes it: one table per entity partitioned by batch_date, one application
transaction `syncvet:SOURCE:DATE` per committed batch (one with no rows, one
source id with a `:`), a batch with rows but no transaction, a batch with a
duplicate id, a quarantine table, a Parquet file no commit references (an
orphan) and a run report; tests then break copies of it (a deleted or
rewritten data file, a checkpoint, wrong stats) and see every field the Rust
suite relies on change. The S3 and Azure cases need the servers of
tests/servers/*.sh (tests/run.sh starts them); without them they fail, never skip.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import check_lake  # noqa: E402

D1, D2 = dt.date(2026, 11, 27), dt.date(2026, 11, 28)
CLIENTS = "pims/clients"
PRODUCTS = "supplier/supplier_products"
QUARANTINE = "_quarantine/clients"
P1 = f"{CLIENTS}/practice_id=p1/batch_date=2026-11-27"
P2 = f"{CLIENTS}/practice_id=p2/batch_date=2026-11-27"
P1_D2 = f"{CLIENTS}/practice_id=p1/batch_date=2026-11-28"  # rows, no txn
S1 = f"{PRODUCTS}/supplier_id=s1/batch_date=2026-11-27"
Q1 = f"{QUARANTINE}/practice_id=p1/batch_date=2026-11-27"
Q2 = f"{QUARANTINE}/practice_id=p2/batch_date=2026-11-27"
UTC = dt.timezone.utc


def clients(practice, date, ids, names, run_id="r1"):
    n = len(ids)
    return pa.table(
        {
            "practice_id": pa.array([practice] * n, pa.string()),
            "id": pa.array(ids, pa.string()),
            "name": pa.array(names, pa.string()),
            "last_modified": pa.array(
                [dt.datetime(2026, 11, 27, 1, tzinfo=UTC) + dt.timedelta(minutes=i) for i in range(n)], pa.timestamp("us", tz="UTC")
            ),
            "balance": pa.array([decimal.Decimal(f"{i}.50") for i in range(n)], pa.decimal128(12, 2)),
            "batch_date": pa.array([date] * n, pa.date32()),
            "_run_id": pa.array([run_id] * n, pa.string()),
            "_loaded_at": pa.array([dt.datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def products(supplier, date, ids, run_id="r1"):
    n = len(ids)
    return pa.table(
        {
            "supplier_id": pa.array([supplier] * n, pa.string()),
            "id": pa.array(ids, pa.string()),
            "discontinued": pa.array([i % 2 == 0 for i in range(n)], pa.bool_()),
            "batch_date": pa.array([date] * n, pa.date32()),
            "_run_id": pa.array([run_id] * n, pa.string()),
            "_loaded_at": pa.array([dt.datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def rejects(source, date, raws, run_id="r1"):
    n = len(raws)
    return pa.table(
        {
            "source_type": pa.array(["pims"] * n, pa.string()),
            "source_id": pa.array([source] * n, pa.string()),
            "entity": pa.array(["clients"] * n, pa.string()),
            "batch_date": pa.array([date] * n, pa.date32()),
            "raw": pa.array(raws, pa.string()),
            "field": pa.array(["id"] * n, pa.string()),
            "reason": pa.array(["missing"] * n, pa.string()),
            "_run_id": pa.array([run_id] * n, pa.string()),
            "_loaded_at": pa.array([dt.datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def commit(path: Path, rows: pa.Table, *app_ids: str) -> None:
    """One append commit carrying the batches' application transactions."""
    write_deltalake(
        str(path),
        rows,
        partition_by=["batch_date"],
        mode="append",
        commit_properties=CommitProperties(app_transactions=[Transaction(a, 1) for a in app_ids]),
    )


def build_lake(root: Path, run_id="r1", p1_names=("Alf", "Bo", "Cleo")) -> None:
    # p1's batch in two commits' worth of files, in no id order; the txn with the last.
    commit(root / CLIENTS, clients("p1", D1, ["c"], [p1_names[2]], run_id))
    commit(root / CLIENTS, clients("p1", D1, ["a", "b"], list(p1_names[:2]), run_id), "syncvet:p1:2026-11-27")
    commit(root / CLIENTS, clients("p2", D1, ["x", "y", "x"], ["X", "Y", "X again"], run_id), "syncvet:p2:2026-11-27")
    commit(root / CLIENTS, clients("p:3", D2, [], [], run_id), "syncvet:p:3:2026-11-28")  # done, no rows
    commit(root / CLIENTS, clients("p1", D2, ["z"], ["Z"], run_id))  # rows without a txn
    commit(root / PRODUCTS, products("s1", D1, ["k", "j"], run_id), "syncvet:s1:2026-11-27")
    commit(root / QUARANTINE, rejects("p1", D1, ['{"b":1}', '{"a":1}'], run_id))
    commit(root / QUARANTINE, rejects("p2", D1, ['{"q":1}'], run_id))
    (root / "_runs").mkdir()
    (root / "_runs" / f"{run_id}.json").write_text("{}")


def add_orphan(root: Path) -> str:
    """A data file no commit references (a commit that was lost)."""
    lost = root / "lost"
    commit(lost, clients("p9", D1, ["o"], ["Orphan"]))
    (src,) = (lost / "batch_date=2026-11-27").glob("*.parquet")
    name = "batch_date=2026-11-27/part-99999-lost.snappy.parquet"
    shutil.copy(src, root / CLIENTS / name)
    shutil.rmtree(lost)
    return name


def store_urls(tmp_path: Path):
    """The lake as a local path, then copied to each server from the env."""
    local = tmp_path / "lake"
    build_lake(local)
    add_orphan(local)
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


@pytest.fixture
def lake(tmp_path) -> Path:
    root = tmp_path / "lake"
    build_lake(root)
    return root


def run_cli(*args, code=0) -> dict:
    proc = subprocess.run([sys.executable, str(HERE / "check_lake.py"), *args], capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    return json.loads(proc.stdout) if code == 0 else {}


def by_path(items) -> dict:
    return {i["path"]: i for i in items}


@pytest.mark.parametrize("store", ["file", "s3", "azure"])
def test_tables_batches_done_and_orphans(lakes, store):
    report = run_cli(lakes[store])
    parts = by_path(report["partitions"])
    assert sorted(parts) == sorted([P1, P2, P1_D2, S1, Q1, Q2])
    p1, p2 = parts[P1], parts[P2]
    assert (p1["rows"], p1["duplicate_ids"], p1["done"], p1["read_errors"]) == (3, 0, True, [])
    assert (p2["rows"], p2["duplicate_ids"], p2["done"]) == (3, 1, True)
    assert (parts[P1_D2]["rows"], parts[P1_D2]["done"]) == (1, False)
    assert len(p1["files"]) == 2 and p1["schema_consistent"] is True
    assert [(c["name"], c["type"]) for c in p1["columns"]] == [
        ("practice_id", "string"),
        ("id", "string"),
        ("name", "string"),
        ("last_modified", "timestamp[us, tz=UTC]"),
        ("balance", "decimal128(12, 2)"),
        ("batch_date", "date32[day]"),
        ("_run_id", "string"),
        ("_loaded_at", "timestamp[us, tz=UTC]"),
    ]
    assert p1["columns"][1]["sample"] == ["a", "b", "c"]  # id order, across files
    assert "_run_id" not in p1["sha256_columns"] and "_loaded_at" not in p1["sha256_columns"]
    assert (parts[S1]["rows"], parts[S1]["source_id"], parts[S1]["done"]) == (2, "s1", True)
    q1 = parts[Q1]
    assert (q1["kind"], q1["rows"], q1["done"], q1["duplicate_ids"]) == ("quarantine", 2, True, None)
    assert q1["columns"][4]["name"] == "raw" and q1["columns"][4]["sample"] == ['{"a":1}', '{"b":1}']
    assert q1["sha256_columns"] == ["raw", "field", "reason"]

    tables = by_path(report["tables"])
    assert sorted(tables) == [QUARANTINE, CLIENTS, PRODUCTS]
    t = tables[CLIENTS]
    assert t["done"] == [
        "practice_id=p1/batch_date=2026-11-27",
        "practice_id=p2/batch_date=2026-11-27",
        "practice_id=p:3/batch_date=2026-11-28",  # no rows, still done
    ]
    assert t["txns"] == {"syncvet:p1:2026-11-27": 1, "syncvet:p2:2026-11-27": 1, "syncvet:p:3:2026-11-28": 1}
    assert (t["version"], t["files"], t["rows"], t["polars_rows"]) == (4, 4, 7, 7)
    assert t["orphans"] == ["batch_date=2026-11-27/part-99999-lost.snappy.parquet"]
    assert t["missing_files"] == [] and t["read_errors"] == [] and t["removed_files"] == []
    assert t["partition_columns"] == ["batch_date"]
    assert t["schema"]["batch_date"] == "date32[day]" and t["columns"][0] == "practice_id"
    assert tables[PRODUCTS]["done"] == ["supplier_id=s1/batch_date=2026-11-27"]
    assert tables[QUARANTINE]["done"] == [] and tables[QUARANTINE]["orphans"] == []
    assert report["runs"] == ["r1"] and report["stray_files"] == []
    assert report["totals"] == {
        "tables": 3,
        "partitions": 4,
        "committed_partitions": 3,
        "done_batches": 4,
        "rows": 9,
        "duplicate_ids": 1,
        "parquet_files": 5,
        "read_errors": 0,
        "missing_files": 0,
        "orphans": 1,
        "quarantine_partitions": 2,
        "quarantine_rows": 3,
    }


def test_checksums_equal_across_stores_and_runs_and_change_with_values(lakes, tmp_path):
    sums = {s: {p["path"]: p["sha256"] for p in run_cli(url)["partitions"]} for s, url in lakes.items()}
    assert sums["file"] == sums["s3"] == sums["azure"]
    # The same data written again by another run: other _run_id and _loaded_at.
    rerun = tmp_path / "rerun"
    build_lake(rerun, run_id="r2")
    again = run_cli(str(rerun))
    assert {p["path"]: p["sha256"] for p in again["partitions"]} == sums["file"]
    assert {c["name"]: c["sample"][0] for c in by_path(again["partitions"])[P1]["columns"]}["_run_id"] == "r2"
    # One value differs: that batch's checksum changes, no other.
    other = tmp_path / "other"
    build_lake(other, p1_names=("Alf", "Bob", "Cleo"))
    changed = {p["path"]: p["sha256"] for p in run_cli(str(other))["partitions"]}
    assert changed[P1] != sums["file"][P1]
    assert {k: v for k, v in changed.items() if k != P1} == {k: v for k, v in sums["file"].items() if k != P1}


def test_missing_file_is_reported_and_its_batches_flagged(lake):
    delta = DeltaTable(str(lake / CLIENTS))
    victim = next(
        p for p in pa.table(delta.get_add_actions(flatten=True)).column("path").to_pylist() if "2026-11-28" in p
    )
    (lake / CLIENTS / victim).unlink()
    report = run_cli(str(lake))
    table = by_path(report["tables"])[CLIENTS]
    assert [m["path"] for m in table["missing_files"]] == [victim] and table["missing_files"][0]["found_bytes"] is None
    assert [e["name"] for e in table["read_errors"]][:1] == [victim]
    assert report["totals"]["missing_files"] == 1 and report["totals"]["read_errors"] >= 1
    parts = by_path(report["partitions"])
    assert P1_D2 not in parts  # its only file is gone
    assert parts[P1]["read_errors"] == []  # another batch_date


def test_file_of_another_size_is_missing(lake):
    delta = DeltaTable(str(lake / PRODUCTS))
    (path,) = pa.table(delta.get_add_actions(flatten=True)).column("path").to_pylist()
    with open(lake / PRODUCTS / path, "ab") as f:
        f.write(b"junk")
    table = by_path(run_cli(str(lake))["tables"])[PRODUCTS]
    (missing,) = table["missing_files"]
    assert missing["path"] == path and missing["found_bytes"] == missing["bytes"] + 4


def rewrite_logged_file(table: Path, rows: pa.Table) -> str:
    """Replaces the table's one data file, fixing its size in the log (as a
    writer that wrote other types would have logged it)."""
    delta = DeltaTable(str(table))
    (add,) = pa.table(delta.get_add_actions(flatten=True)).select(["path", "size_bytes"]).to_pylist()
    path, size = add["path"], add["size_bytes"]
    pq.write_table(rows, table / path)
    log = table / "_delta_log" / "00000000000000000000.json"
    log.write_text(log.read_text().replace(f'"size":{size},', f'"size":{(table / path).stat().st_size},'))
    return path


def test_rewritten_file_with_other_types_breaks_schema_consistency(lake):
    table = lake / PRODUCTS
    (file,) = (table / "batch_date=2026-11-27").glob("*.parquet")
    rows = pq.read_table(file)
    rewrite_logged_file(table, rows.set_column(1, "id", rows.column("id").cast(pa.large_string())))  # same schema
    report = run_cli(str(lake))
    assert by_path(report["partitions"])[S1]["schema_consistent"] is True
    assert by_path(report["tables"])[PRODUCTS]["missing_files"] == []
    assert by_path(report["tables"])[PRODUCTS]["other_files"] == []
    loaded = rows.column("_loaded_at").cast(pa.timestamp("ms", tz="UTC"), safe=False)
    path = rewrite_logged_file(table, rows.set_column(4, "_loaded_at", loaded))
    report = run_cli(str(lake))
    assert by_path(report["tables"])[PRODUCTS]["read_errors"] == []
    assert by_path(report["partitions"])[S1]["schema_consistent"] is False
    (bad,) = by_path(report["tables"])[PRODUCTS]["file_schema_mismatches"]
    assert bad["path"] == path and bad["schema"]["_loaded_at"] == "timestamp[ms, tz=UTC]"


def test_txns_survive_a_checkpoint_and_log_gaps_are_errors(lake):
    table = lake / CLIENTS
    DeltaTable(str(table)).create_checkpoint()
    commit(table, clients("p4", D2, ["w"], ["W"]), "syncvet:p4:2026-11-28")
    for old in ("00000000000000000000.json", "00000000000000000001.json"):
        (table / "_delta_log" / old).unlink()  # log clean-up: the checkpoint stands for them
    entry = by_path(run_cli(str(lake))["tables"])[CLIENTS]
    assert (entry["checkpoint"], entry["version"], entry["read_errors"]) == (4, 5, [])
    assert "practice_id=p4/batch_date=2026-11-28" in entry["done"] and len(entry["done"]) == 4
    assert entry["orphans"] == [] and entry["rows"] == 8
    # Without the checkpoint the log starts at version 2: a gap.
    next((table / "_delta_log").glob("*.checkpoint.parquet")).unlink()
    entry = by_path(run_cli(str(lake))["tables"])[CLIENTS]
    assert any("no commit for versions [0, 1]" in e["error"] for e in entry["read_errors"])


def test_stats_that_lie_about_rows_are_reported(lake):
    log = lake / PRODUCTS / "_delta_log" / "00000000000000000000.json"
    log.write_text(log.read_text().replace('\\"numRecords\\":2', '\\"numRecords\\":5'))
    (mismatch,) = by_path(run_cli(str(lake))["tables"])[PRODUCTS]["stats_mismatches"]
    assert (mismatch["stats_rows"], mismatch["rows"]) == (5, 2)


def test_a_table_never_committed_and_stray_files(lake):
    crashed = lake / "pims" / "invoices"
    (crashed / "_delta_log").mkdir(parents=True)
    (crashed / "_delta_log" / "_commit_0.json.tmp").write_text("")
    shutil.copytree(lake / PRODUCTS / "batch_date=2026-11-27", crashed / "batch_date=2026-11-27")
    old = lake / "pims" / "old" / "practice_id=p1" / "batch_date=2026-11-27"
    old.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"]}), old / "part-00000.parquet")
    report = run_cli(str(lake))
    entry = by_path(report["tables"])["pims/invoices"]
    assert entry["version"] is None and len(entry["orphans"]) == 1 and entry["read_errors"] == []
    assert report["stray_files"] == ["pims/old/practice_id=p1/batch_date=2026-11-27/part-00000.parquet"]


def test_rows_mode_and_under_a_batch(lakes):
    report = run_cli(lakes["file"], "--under", P1, "--rows")
    (part,) = report["partitions"]
    assert [r["id"] for r in part["rows_data"]] == ["a", "b", "c"]
    assert part["rows_data"][0]["last_modified"] == "2026-11-27T01:00:00+00:00"
    assert part["rows_data"][0]["balance"] == "0.50" and part["rows_data"][0]["batch_date"] == "2026-11-27"
    assert [t["path"] for t in report["tables"]] == [CLIENTS]
    assert run_cli("file://" + lakes["file"], "--under", P1, "--rows")["partitions"] == report["partitions"]
    assert [p["path"] for p in run_cli(lakes["file"], "--under", "supplier")["partitions"]] == [S1]


def test_app_ids_parse_with_colons_in_source_ids():
    assert check_lake.parse_app_id("syncvet:p1:2026-11-27") == ("p1", "2026-11-27")
    assert check_lake.parse_app_id("syncvet:a:b:c:2026-01-02") == ("a:b:c", "2026-01-02")
    assert check_lake.parse_app_id("syncvet::2026-01-02") is None
    assert check_lake.parse_app_id("syncvet:p1:2026-13-02") is None
    assert check_lake.parse_app_id("other:p1:2026-01-02") is None


def test_bad_arguments_and_unreachable_store_exit_2(tmp_path):
    run_cli("ftp://host/lake", code=2)
    run_cli(str(tmp_path), "--max-rows", "many", code=2)
    env = {**os.environ, "AWS_ENDPOINT": "http://127.0.0.1:9", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    proc = subprocess.run(
        [sys.executable, str(HERE / "check_lake.py"), "s3://nobucket/lake"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2 and "cannot read" in proc.stderr


@pytest.mark.parametrize("store", ["file", "s3", "azure"])
def test_duckdb_counts_exactly_the_logged_files(lakes, store):
    report = run_cli(lakes[store], "--duckdb")
    assert report["mirrored"] == (store != "file") and report["errors"] == 0
    tables = by_path(report["tables"])
    t = tables[CLIENTS]
    # The orphan (one more row, id "o") is not read.
    assert (t["rows"], t["distinct_ids"], t["files"]) == (7, 6, 4)
    assert [(p["practice_id"], p["batch_date"], p["rows"], p["distinct_ids"]) for p in t["partitions"]] == [
        ("p1", "2026-11-27", 3, 3),
        ("p1", "2026-11-28", 1, 1),
        ("p2", "2026-11-27", 3, 2),
    ]
    q = tables[QUARANTINE]
    assert [(p["source_id"], p["batch_date"], p["rows"]) for p in q["partitions"]] == [
        ("p1", "2026-11-27", 2),
        ("p2", "2026-11-27", 1),
    ]
    assert (report["rows"], report["files"]) == (12, 7)
    only = run_cli(lakes[store], "--duckdb", "--under", PRODUCTS)
    assert [(t["path"], t["rows"]) for t in only["tables"]] == [(PRODUCTS, 2)]


def test_a_rewritten_batch_leaves_removed_files_not_orphans(lake):
    table = lake / CLIENTS
    before = run_cli(str(lake))
    write_deltalake(
        str(table),
        pa.concat_tables([clients("p1", D1, ["c"], ["Cleo"], "r2"), clients("p1", D1, ["a", "b"], ["Alf", "Bo"], "r2")]),
        partition_by=["batch_date"],
        mode="overwrite",
        predicate="practice_id = 'p1' AND batch_date = '2026-11-27'",
        commit_properties=CommitProperties(app_transactions=[Transaction("syncvet:p1:2026-11-27", 2)]),
    )
    after = run_cli(str(lake))
    entry = by_path(after["tables"])[CLIENTS]
    assert len(entry["removed_files"]) == 2 and entry["orphans"] == [] and entry["read_errors"] == []
    assert entry["txns"]["syncvet:p1:2026-11-27"] == 2 and entry["rows"] == 7
    p1 = by_path(after["partitions"])[P1]
    assert p1["sha256"] == by_path(before["partitions"])[P1]["sha256"] and len(p1["files"]) == 1


def test_polars_disagreeing_is_a_read_error(lake, monkeypatch):
    monkeypatch.setattr(check_lake, "polars_rows", lambda uri, options: 99)
    report = check_lake.inspect(str(lake), "", "id", False, 10)
    entry = by_path(report["tables"])[CLIENTS]
    assert entry["polars_rows"] == 99
    assert [e["error"] for e in entry["read_errors"]] == ["Polars reads 99 rows, deltalake/pyarrow 7"]
