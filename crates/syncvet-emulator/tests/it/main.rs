//! End-to-end tests of the emulator over real HTTP on 127.0.0.1:0.

mod binary;
mod common;
mod data;
mod decoder;
mod determinism;
mod evolution;
mod faults;
mod rate_limit;
mod scale;
mod status_codes;
