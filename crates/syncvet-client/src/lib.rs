//! syncvet-client
