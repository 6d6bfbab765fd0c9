//! Integration tests over real HTTP on 127.0.0.1: against the emulator
//! (`emulator`, `convergence`) and against small misbehaving servers
//! (`misbehaving`, `page_chains`). One binary to keep link time down.

mod convergence;
mod emulator;
mod misbehaving;
mod page_chains;
mod support;
