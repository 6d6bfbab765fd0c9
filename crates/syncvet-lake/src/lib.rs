//! syncvet-lake
