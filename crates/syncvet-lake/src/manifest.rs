//! `_manifest.json`: the record that makes a partition done.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use syncvet_model::SourceType;

/// The manifest layout version; bumped on an incompatible change.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// One committed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the lake root.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// The manifest of a committed partition. A partition is done iff its
/// manifest exists; only the files it lists belong to the partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// `pims` or `supplier`.
    #[serde(serialize_with = "serialize_source")]
    pub source: SourceType,
    /// The entity name.
    pub entity: String,
    /// The practice or supplier id.
    pub source_id: String,
    /// The batch date.
    pub batch_date: NaiveDate,
    /// The run that committed the partition.
    pub run_id: String,
    /// When the manifest was written.
    pub committed_at: DateTime<Utc>,
    /// The entity's schema fingerprint the files were written with.
    pub schema_fingerprint: String,
    /// The source's `totalCount`, when it reported one.
    pub source_total: Option<u64>,
    /// Rows in the data files.
    pub rows: u64,
    /// Rows sent to quarantine.
    pub rejected: u64,
    /// Bytes of the data files.
    pub bytes: u64,
    /// The data files, in order.
    pub files: Vec<ManifestFile>,
    /// The quarantine files (columns `raw`, `field`, `reason`), in order.
    pub quarantine_files: Vec<ManifestFile>,
}

fn serialize_source<S: serde::Serializer>(s: &SourceType, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_json_has_the_documented_shape_and_round_trips() {
        let m = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            source: SourceType::Pims,
            entity: "patients".into(),
            source_id: "p-0001".into(),
            batch_date: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
            run_id: "run-1".into(),
            committed_at: "2026-11-28T02:00:00Z".parse().unwrap(),
            schema_fingerprint: "0123456789abcdef".into(),
            source_total: Some(12),
            rows: 10,
            rejected: 2,
            bytes: 2048,
            files: vec![ManifestFile {
                path: "pims/patients/practice_id=p-0001/batch_date=2026-11-27/part-00000.parquet"
                    .into(),
                rows: 10,
                bytes: 2048,
            }],
            quarantine_files: vec![],
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["source"], "pims");
        assert_eq!(json["batch_date"], "2026-11-27");
        assert_eq!(json["source_total"], 12);
        assert_eq!(json["files"][0]["rows"], 10);
        assert_eq!(json["committed_at"], "2026-11-28T02:00:00Z");
        let back: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }
}
