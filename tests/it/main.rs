//! The end-to-end suite: the real `syncvet-etl` binary over real HTTP (the
//! emulator on loopback, hostile servers written here), writing to real
//! stores (a temp folder, SeaweedFS for S3, Azurite for Azure), read back
//! with an independent Parquet reader (`tests/py/check_lake.py`, pyarrow).
//! Compiled as one test binary; helpers live in the package's `lib.rs`.
//!
//! - `cli`: issue 5, one-shot runs, backfills, failures, signals, shards, config errors.
//! - `stores`: issue 6, one behaviour suite run against each store, S3 restart, racing commits.
//! - `crash`, `soak`, `hostile`, `secrets`: issue 7.
//! - `readers`: issue 10, a reader during forced re-runs and maintenance.
//! - `current`: issue 11, the current tables against the emulator's pages.

mod cli;
mod crash;
mod current;
mod gate;
mod hostile;
mod readers;
mod secrets;
mod soak;
mod stores;
