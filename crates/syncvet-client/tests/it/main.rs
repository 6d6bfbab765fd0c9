//! Integration tests over real HTTP on 127.0.0.1: against the emulator
//! (`emulator`, `convergence`) and against small misbehaving servers
//! (`misbehaving`). One binary to keep link time down.

mod convergence;
mod emulator;
mod misbehaving;
mod support;
