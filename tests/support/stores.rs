//! The stores under test and the emulator's truth.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::NaiveDate;
use syncvet_emulator::EmulatorConfig;
use syncvet_model::{Catalog, SourceType};

/// A store under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A temp folder, as a `file://` URL.
    File,
    /// The S3 server of `tests/run.sh` (`SYNCVET_TEST_S3_URL`).
    S3,
    /// The Azurite server of `tests/run.sh` (`SYNCVET_TEST_AZURE_URL`).
    Azure,
}

/// A fresh, empty lake on one store; a local one is removed on drop.
pub struct TestLake {
    /// The lake URL to give the binary.
    pub url: String,
    /// The temp folder of a `file://` lake (its parent is checked for strays).
    pub dir: Option<tempfile::TempDir>,
}

impl TestLake {
    /// The lake root folder of a local lake.
    pub fn local_root(&self) -> PathBuf {
        self.dir.as_ref().expect("a local lake").path().join("lake")
    }
}

impl Store {
    /// A new lake with a unique prefix. Fails, never skips, when the
    /// store's server is not configured.
    pub fn lake(self, name: &str) -> TestLake {
        let unique = format!(
            "{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                % 1_000_000_000_000
        );
        let from_env = |var: &str| {
            let base = std::env::var(var).unwrap_or_else(|_| {
                panic!(
                    "{var} is not set: the S3 and Azure tests need the storage servers that \
                     tests/run.sh starts; run the suite with `tests/run.sh`"
                )
            });
            format!("{}/{unique}", base.trim_end_matches('/'))
        };
        match self {
            Store::File => {
                let dir = tempfile::Builder::new()
                    .prefix("syncvet-e2e-")
                    .tempdir()
                    .expect("a temp dir");
                let url = format!("file://{}", dir.path().join("lake").display());
                TestLake {
                    url,
                    dir: Some(dir),
                }
            }
            Store::S3 => TestLake {
                url: from_env("SYNCVET_TEST_S3_URL"),
                dir: None,
            },
            Store::Azure => TestLake {
                url: from_env("SYNCVET_TEST_AZURE_URL"),
                dir: None,
            },
        }
    }
}

/// A partition as the tests name it: `pims/patients/practice_id=p-0001/batch_date=2026-11-01`.
pub type PartitionPath = String;

/// The folder of a partition.
pub fn partition_path(
    source: SourceType,
    entity: &str,
    source_id: &str,
    date: NaiveDate,
) -> PartitionPath {
    format!(
        "{}/{entity}/{}={source_id}/batch_date={date}",
        source.as_str(),
        source.partition_column()
    )
}

/// The emulator's truth: every partition it serves for some dates, with
/// its `totalCount`.
#[derive(Debug, Clone)]
pub struct Truth {
    /// Partition folder → records in the batch.
    pub totals: BTreeMap<PartitionPath, u64>,
}

impl Truth {
    /// Every (source, entity, date) of the emulator `settings`, restricted
    /// to `entities` when not empty and to `sources` when not empty.
    pub fn new(
        settings: &EmulatorConfig,
        dates: &[NaiveDate],
        entities: &[&str],
        sources: &[&str],
    ) -> Truth {
        let catalog = Catalog::embedded();
        let mut totals = BTreeMap::new();
        let ids = (1..=settings.pims_sources)
            .map(|i| (SourceType::Pims, format!("p-{i:04}")))
            .chain(
                (1..=settings.supplier_sources)
                    .map(|i| (SourceType::Supplier, format!("s-{i:04}"))),
            );
        for (source, id) in ids {
            if !sources.is_empty() && !sources.contains(&id.as_str()) {
                continue;
            }
            for entity in catalog.for_source(source) {
                if !entities.is_empty() && !entities.contains(&entity.name.as_str()) {
                    continue;
                }
                for &date in dates {
                    let total = syncvet_emulator::record_count(settings, &id, &entity.name, date);
                    totals.insert(partition_path(source, &entity.name, &id, date), total);
                }
            }
        }
        Truth { totals }
    }

    /// The partition folders.
    pub fn partitions(&self) -> BTreeSet<PartitionPath> {
        self.totals.keys().cloned().collect()
    }

    /// Without the partitions of these sources.
    pub fn without_sources(mut self, ids: &[&str]) -> Truth {
        self.totals
            .retain(|path, _| !ids.iter().any(|id| path.contains(&format!("_id={id}/"))));
        self
    }
}

/// Consecutive dates from `first`.
pub fn dates(first: &str, days: u64) -> Vec<NaiveDate> {
    let first: NaiveDate = first.parse().expect("a YYYY-MM-DD date");
    (0..days).map(|d| first + chrono::Days::new(d)).collect()
}
