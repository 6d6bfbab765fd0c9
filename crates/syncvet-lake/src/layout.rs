//! The names of the lake: tables, batches, run reports, and the check that
//! keeps every name a single, safe path segment.

use std::fmt;

use chrono::NaiveDate;
use syncvet_model::SourceType;

use crate::LakeError;

/// Folder of the quarantine tables, beside the source folders.
pub const QUARANTINE_DIR: &str = "_quarantine";
/// Folder of the current tables: `current/pims/{entity}` ….
pub const CURRENT_DIR: &str = "current";
/// Folder of run reports.
pub const RUNS_DIR: &str = "_runs";

/// One batch: a source's records of one entity for one batch date.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// PIMS or supplier.
    pub source: SourceType,
    /// The entity name (`patients`).
    pub entity: String,
    /// The practice or supplier id.
    pub source_id: String,
    /// The batch date.
    pub batch_date: NaiveDate,
}

impl PartitionKey {
    /// A key whose entity and source id are each one safe path segment, so
    /// nothing can ever be written outside the partition's folder.
    pub fn new(
        source: SourceType,
        entity: impl Into<String>,
        source_id: impl Into<String>,
        batch_date: NaiveDate,
    ) -> Result<Self, LakeError> {
        let entity = entity.into();
        let source_id = source_id.into();
        check_segment("entity", &entity)?;
        check_segment("source id", &source_id)?;
        Ok(PartitionKey {
            source,
            entity,
            source_id,
            batch_date,
        })
    }

    /// The batch's name, as reports and logs show it, in the Hive form
    /// readers know: `pims/patients/practice_id=p-0001/batch_date=2026-11-27`
    /// (the rows of `practice_id = 'p-0001'` in the table `pims/patients`,
    /// partition `batch_date=2026-11-27`).
    pub fn path(&self) -> String {
        format!(
            "{}/{}/{}",
            self.source.as_str(),
            self.entity,
            self.partition_suffix()
        )
    }

    /// The batch's rejects, named the same way:
    /// `_quarantine/patients/practice_id=p-0001/batch_date=2026-11-27`.
    pub fn quarantine_path(&self) -> String {
        format!(
            "{QUARANTINE_DIR}/{}/{}",
            self.entity,
            self.partition_suffix()
        )
    }

    fn partition_suffix(&self) -> String {
        format!(
            "{}={}/batch_date={}",
            self.source.partition_column(),
            self.source_id,
            self.batch_date.format("%Y-%m-%d")
        )
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// Characters refused besides controls: path separators, the Hive `=`, and
/// the ones object_store would percent-encode (the path a reader sees must
/// spell the id exactly), `#` (object_store's local staging suffix) and
/// glob characters.
const REFUSED: &[char] = &[
    '/', '\\', '=', '%', '#', '{', '}', '^', '`', '[', ']', '"', '<', '>', '~', '|', '*', '?',
];

/// Refuses anything that is not exactly one harmless path segment.
pub(crate) fn check_segment(what: &'static str, value: &str) -> Result<(), LakeError> {
    let refuse = |reason: String| {
        Err(LakeError::UnsafePathSegment {
            what,
            value: value.escape_default().to_string(),
            reason,
        })
    };
    if value.is_empty() {
        return refuse("it is empty".into());
    }
    if value == "." || value == ".." || value.contains("..") {
        return refuse("it contains `..`".into());
    }
    if value.starts_with('.') || value.starts_with('_') {
        return refuse("it starts with `.` or `_` (names readers treat as hidden)".into());
    }
    if value.trim() != value {
        return refuse("it starts or ends with white space".into());
    }
    if value.len() > 200 {
        return refuse("it is longer than 200 bytes".into());
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return refuse(format!(
            "it contains the control character {}",
            c.escape_default()
        ));
    }
    if let Some(c) = value.chars().find(|c| REFUSED.contains(c)) {
        return refuse(format!("it contains `{c}`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    #[test]
    fn paths_follow_the_hive_layout_of_the_design() {
        let k = PartitionKey::new(SourceType::Pims, "patients", "p-0001", date()).unwrap();
        assert_eq!(
            k.path(),
            "pims/patients/practice_id=p-0001/batch_date=2026-11-27"
        );
        assert_eq!(
            k.quarantine_path(),
            "_quarantine/patients/practice_id=p-0001/batch_date=2026-11-27"
        );
        let s =
            PartitionKey::new(SourceType::Supplier, "supplier_products", "s-7", date()).unwrap();
        assert_eq!(
            s.path(),
            "supplier/supplier_products/supplier_id=s-7/batch_date=2026-11-27"
        );
    }

    #[test]
    fn unsafe_segments_are_refused_with_a_reason() {
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "a\\b",
            "a=b",
            "p\u{0}1",
            "p\n1",
            "x#1",
            "50%",
            " p",
            ".hidden",
            "_quarantine",
            "a*",
        ] {
            let err = PartitionKey::new(SourceType::Pims, "patients", bad, date())
                .expect_err(bad)
                .to_string();
            assert!(err.contains("source id"), "{bad:?}: {err}");
        }
        let err = PartitionKey::new(SourceType::Pims, "../x", "p", date()).unwrap_err();
        assert!(matches!(
            err,
            LakeError::UnsafePathSegment { what: "entity", .. }
        ));
        for good in [
            "p-0001",
            "PRACTICE_42",
            "0a1b2c3d-aaaa-bbbb-cccc-1234567890ab",
            "acme co.",
            "é",
        ] {
            PartitionKey::new(SourceType::Pims, "patients", good, date()).expect(good);
        }
    }
}
