//! Shared helpers of the end-to-end suite (`tests/it`).
//!
//! The suite runs the real `syncvet-etl` binary over real HTTP and checks
//! what it leaves in a real store. These helpers:
//! - build the binary once and run it with a bounded wait ([`Etl`], [`Outcome`]);
//! - name the store under test ([`Store`]): a temp folder, or a fresh prefix
//!   on the S3 and Azure servers that `tests/run.sh` starts (a missing
//!   server is a failure that says to run `tests/run.sh`, never a skip);
//! - compute the emulator's truth ([`Truth`]) from the same settings the
//!   binary loads, through `syncvet_emulator::record_count`;
//! - inspect the lake two independent ways: the raw object listing through
//!   object_store with the Delta logs replayed from their JSON ([`Listing`],
//!   not the lake crate's own queries), and `tests/py/check_lake.py`
//!   (the Python `deltalake` package, pyarrow and Polars, [`read_lake`]).

#[path = "support/inspect.rs"]
mod inspect;
#[path = "support/process.rs"]
mod process;
#[path = "support/servers.rs"]
mod servers;
#[path = "support/stores.rs"]
mod stores;

pub use inspect::*;
pub use process::*;
pub use servers::*;
pub use stores::*;
