//! The lake side of the runner, without the API: the upkeep of the tables
//! a run wrote (current tables merged, days compacted), and the
//! `maintain` and `rebuild-current` commands, which open only the catalog
//! and the lake.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::NaiveDate;
use futures::StreamExt;
use syncvet_lake::{CurrentUpdate, Lake, TableMaintenance};
use syncvet_model::{Catalog, Chain, Entity, SourceType};
use tracing::warn;

use crate::RunnerError;
use crate::config::Config;
use crate::plan::select_entities;
use crate::report::{PartitionReport, RunMaintenance};

/// Current tables merged at once: each merge is one core's work.
const CURRENT_MERGES: usize = 2;

/// One entity's current table after `rebuild-current`, or why it failed.
#[derive(Debug, Clone)]
pub struct CurrentRebuilt {
    /// The entity (`patients`).
    pub entity: String,
    /// What was done.
    pub done: CurrentUpdate,
}

/// One table's maintenance, or why it failed.
#[derive(Debug, Clone)]
pub struct TableMaintained {
    /// The table, relative to the lake root (`pims/patients`).
    pub table: String,
    /// What was done (nothing, when a step failed).
    pub done: TableMaintenance,
    /// The failure, if any.
    pub error: Option<String>,
}

/// The catalog and the lake.
pub struct Tables {
    catalog: Catalog,
    lake: Lake,
    /// `sync.entities`: what "every entity" means when none is named.
    entities: Vec<String>,
}

impl Tables {
    /// Loads the catalog and opens the lake (a local lake's folder is created).
    pub fn open(config: &Config) -> Result<Tables, RunnerError> {
        Ok(Tables {
            catalog: Catalog::load(config.sync.catalog_dir.as_deref())?,
            lake: Lake::open(&config.lake)?,
            entities: config.sync.entities.clone(),
        })
    }

    /// The lake.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The entity catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Maintains the tables the run wrote, compacting the days it landed;
    /// a failure leaves the data as committed and is reported.
    pub(crate) async fn maintain_landed(&self, partitions: &[PartitionReport]) -> RunMaintenance {
        let mut days: BTreeMap<(SourceType, &str), BTreeSet<NaiveDate>> = BTreeMap::new();
        for p in partitions.iter().filter(|p| p.status.is_committed()) {
            let Some(source) = SourceType::from_api(&p.source_type) else {
                continue;
            };
            days.entry((source, &p.entity))
                .or_default()
                .insert(p.batch_date);
        }
        let mut total = RunMaintenance::default();
        for ((source, entity), days) in days {
            let tables = match self.lake.maintain(source, entity, Some(&days)).await {
                Ok(tables) => tables,
                Err(e) => vec![(entity.to_owned(), Err(e))],
            };
            for (table, result) in tables {
                match result {
                    Ok(done) => {
                        total.compacted += done.compacted;
                        total.files_vacuumed += done.files_vacuumed;
                    }
                    Err(e) => {
                        warn!(table, error = %Chain(&e), "maintenance failed; the data is committed");
                        total.errors.push(format!("{table}: {}", Chain(&e)));
                    }
                }
            }
        }
        total
    }

    /// Brings the current tables of `entities` up to their history tables
    /// (rebuilds them from it when `rebuild`); a failure leaves the
    /// history as committed and the batches pending, and is reported.
    pub(crate) async fn update_current(
        &self,
        entities: &[Arc<Entity>],
        rebuild: bool,
    ) -> CurrentUpdate {
        let updates: Vec<CurrentUpdate> = futures::stream::iter(entities.to_vec())
            .map(|entity| {
                // A task each, so that two merges use two cores (the
                // futures of one task take turns on one thread).
                let lake = self.lake.clone();
                let name = entity.name.clone();
                let merge = tokio::spawn(async move {
                    match rebuild {
                        false => lake.update_current(entity.source, &entity.name).await,
                        true => lake.rebuild_current(entity.source, &entity.name).await,
                    }
                    .map_err(|e| {
                        (
                            format!("current/{}/{}", entity.source.as_str(), entity.name),
                            Chain(&e).to_string(),
                        )
                    })
                });
                async move {
                    let (table, error) = match merge.await {
                        Ok(Ok(update)) => return update,
                        Ok(Err(failed)) => failed,
                        Err(e) => (
                            format!("current table of {name}"),
                            format!("the merge task failed: {e}"),
                        ),
                    };
                    warn!(
                        table,
                        error, "the current table could not be updated; the history is committed"
                    );
                    CurrentUpdate {
                        errors: vec![format!("{table}: {error}")],
                        ..CurrentUpdate::default()
                    }
                }
            })
            .buffered(CURRENT_MERGES)
            .collect()
            .await;
        let mut total = CurrentUpdate::default();
        for update in updates {
            total.absorb(update);
        }
        total
    }

    /// The catalog entities of `names` (empty: those of `sync.entities`, or all).
    fn named(&self, names: &[String]) -> Result<Vec<Arc<Entity>>, RunnerError> {
        let names = if names.is_empty() {
            &self.entities
        } else {
            names
        };
        select_entities(&self.catalog, names)
    }

    /// `syncvet-etl rebuild-current`: the current tables of `entities`
    /// (empty: those of `sync.entities`, or all) rebuilt from the history
    /// tables alone.
    pub async fn rebuild_current(
        &self,
        entities: &[String],
    ) -> Result<Vec<CurrentRebuilt>, RunnerError> {
        let mut rows = Vec::new();
        for entity in self.named(entities)? {
            let done = self
                .update_current(std::slice::from_ref(&entity), true)
                .await;
            rows.push(CurrentRebuilt {
                entity: entity.name.clone(),
                done,
            });
        }
        Ok(rows)
    }

    /// `syncvet-etl maintain`: compaction, checkpoints and vacuum of every
    /// table of `entities` (empty: those of `sync.entities`, or all).
    pub async fn maintain(&self, entities: &[String]) -> Result<Vec<TableMaintained>, RunnerError> {
        let mut rows = Vec::new();
        for entity in self.named(entities)? {
            for (table, result) in self
                .lake
                .maintain(entity.source, &entity.name, None)
                .await?
            {
                let (done, error) = match result {
                    Ok(done) => (done, None),
                    Err(e) => {
                        warn!(table, error = %Chain(&e), "maintenance of a table failed");
                        (TableMaintenance::default(), Some(Chain(&e).to_string()))
                    }
                };
                rows.push(TableMaintained { table, done, error });
            }
        }
        Ok(rows)
    }
}
