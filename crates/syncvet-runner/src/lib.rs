//! syncvet-runner
