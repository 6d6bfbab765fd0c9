//! Planning: which (source, entity, date) partitions a run syncs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, Utc};
use syncvet_client::ApiClient;
use syncvet_lake::PartitionKey;
use syncvet_model::{Catalog, Entity, SourceType};
use tracing::{info, warn};

use crate::RunnerError;
use crate::config::SyncConfig;
use crate::report::SourceFailure;

/// The longest date range one backfill may cover, so that a typo in a year
/// does not plan a million partitions.
const MAX_BACKFILL_DAYS: u64 = 3660;

/// A data source the run reads (a practice or a supplier).
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The id the API knows it by.
    pub id: String,
    /// PIMS or supplier.
    pub source_type: SourceType,
    /// Its time zone, which decides what "yesterday" means for it.
    pub time_zone: chrono_tz::Tz,
}

/// The sources to read: listed by the API, narrowed to `requested` (empty:
/// `sync.practices`, or all) and to the shard. Requested ids the API does
/// not list, and sources of an unknown type, fail.
pub(crate) async fn discover(
    client: &ApiClient,
    sync: &SyncConfig,
    shard: Option<Shard>,
    requested: &[String],
) -> Result<(Vec<Source>, Vec<SourceFailure>), RunnerError> {
    let listed = client.practices().await?;
    let wanted = if requested.is_empty() {
        &sync.practices
    } else {
        requested
    };
    let in_shard = |id: &str| shard.is_none_or(|s| s.contains(id));
    let mut failures = Vec::new();
    for id in wanted {
        if in_shard(id) && !listed.iter().any(|p| &p.id == id) {
            failures.push(SourceFailure {
                source_id: id.clone(),
                error: "not listed by the API's practices".into(),
            });
        }
    }
    let mut sources = Vec::new();
    for practice in listed {
        if !(wanted.is_empty() || wanted.contains(&practice.id)) || !in_shard(&practice.id) {
            continue;
        }
        let Some(source_type) = SourceType::from_api(&practice.data_source_type) else {
            failures.push(SourceFailure {
                source_id: practice.id,
                error: format!("unknown dataSourceType `{}`", practice.data_source_type),
            });
            continue;
        };
        if !practice.batch_sync_enabled {
            info!(practice = %practice.id, "batch sync disabled for this source; skipped");
            continue;
        }
        let time_zone = match practice
            .time_zone
            .as_deref()
            .map(str::parse::<chrono_tz::Tz>)
        {
            Some(Ok(tz)) => tz,
            Some(Err(_)) => {
                warn!(practice = %practice.id, "unknown time zone; using sync.default_timezone");
                sync.default_timezone
            }
            None => sync.default_timezone,
        };
        sources.push(Source {
            id: practice.id,
            source_type,
            time_zone,
        });
    }
    Ok((sources, failures))
}

/// Which batch dates a run covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dates {
    /// One date for every source (`run --date`).
    Single(NaiveDate),
    /// Every date from the first to the last, both included.
    Range(NaiveDate, NaiveDate),
    /// The last `days` dates up to today minus `lag_days`, in each source's
    /// time zone: what `run` without `--date` and the daemon sync, so a
    /// missed night is caught up (done partitions are skipped).
    Recent {
        /// How many dates, at least 1.
        days: u32,
    },
}

impl Dates {
    /// The dates of `run`: `--date` when given; else the last
    /// `catch_up_days`, or with `--force` only the latest one, because
    /// rewriting a whole window every night would be a backfill nobody
    /// asked for (`backfill --force` is the tool for that).
    pub fn for_run(date: Option<NaiveDate>, force: bool, catch_up_days: u32) -> Dates {
        match date {
            Some(date) => Dates::Single(date),
            None if force => Dates::Recent { days: 1 },
            None => Dates::Recent {
                days: catch_up_days.max(1),
            },
        }
    }

    /// The dates for `source` at `now`.
    pub fn for_source(&self, source: &Source, now: DateTime<Utc>, lag_days: u32) -> Vec<NaiveDate> {
        match *self {
            Dates::Single(date) => vec![date],
            Dates::Recent { days } => {
                let last = now.with_timezone(&source.time_zone).date_naive()
                    - Days::new(u64::from(lag_days));
                let first = last - Days::new(u64::from(days.max(1) - 1));
                Dates::Range(first, last).for_source(source, now, lag_days)
            }
            Dates::Range(from, to) => from.iter_days().take_while(|d| *d <= to).collect(),
        }
    }

    /// Checks a range: first before last, and not absurdly long.
    pub fn validate(&self) -> Result<(), RunnerError> {
        if let Dates::Range(from, to) = *self {
            if from > to {
                return Err(RunnerError::config(
                    "--from",
                    format!("{from} is after --to {to}"),
                ));
            }
            let days = (to - from).num_days() as u64 + 1;
            if days > MAX_BACKFILL_DAYS {
                return Err(RunnerError::config(
                    "--from",
                    format!(
                        "the range covers {days} days; at most {MAX_BACKFILL_DAYS} in one backfill"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// One slice of the sources, for runs spread over several processes:
/// `--shard 0/4` takes the sources whose stable hash is 0 modulo 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's slice, from 0.
    pub index: u32,
    /// How many slices there are.
    pub count: u32,
}

impl Shard {
    /// Whether `source_id` belongs to this shard. FNV-1a, so the split is
    /// the same on every machine and every release.
    pub fn contains(&self, source_id: &str) -> bool {
        syncvet_model::fnv1a(source_id.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => Err(format!(
                "`{s}` is not a shard INDEX/COUNT with 0 <= INDEX < COUNT (for example 0/4)"
            )),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One partition to sync.
#[derive(Debug, Clone)]
pub struct PartitionJob {
    /// Where it lands.
    pub key: PartitionKey,
    /// Its entity.
    pub entity: Arc<Entity>,
}

/// The partitions of one source, in date then entity order.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// The source.
    pub source: Source,
    /// Its partitions.
    pub jobs: Vec<PartitionJob>,
}

/// The entities named by `names` (all of the catalog when empty), or an
/// error naming the first unknown one.
pub fn select_entities(
    catalog: &Catalog,
    names: &[String],
) -> Result<Vec<Arc<Entity>>, RunnerError> {
    if names.is_empty() {
        return Ok(catalog.entities().cloned().collect());
    }
    names
        .iter()
        .map(|name| {
            catalog.entity(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = catalog.entities().map(|e| e.name.as_str()).collect();
                RunnerError::config(
                    "sync.entities",
                    format!(
                        "unknown entity `{name}`; the catalog has {}",
                        known.join(", ")
                    ),
                )
            })
        })
        .collect()
}

/// Every partition of `sources` × `entities` × dates, each source with the
/// entities its type serves.
pub fn plan(
    sources: &[Source],
    entities: &[Arc<Entity>],
    dates: Dates,
    now: DateTime<Utc>,
    lag_days: u32,
) -> Result<Vec<SourcePlan>, RunnerError> {
    let mut plans = Vec::with_capacity(sources.len());
    for source in sources {
        let mut jobs = Vec::new();
        for date in dates.for_source(source, now, lag_days) {
            for entity in entities.iter().filter(|e| e.source == source.source_type) {
                let key = PartitionKey::new(source.source_type, &entity.name, &source.id, date)?;
                jobs.push(PartitionJob {
                    key,
                    entity: entity.clone(),
                });
            }
        }
        plans.push(SourcePlan {
            source: source.clone(),
            jobs,
        });
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str, tz: chrono_tz::Tz) -> Source {
        Source {
            id: id.into(),
            source_type: SourceType::Pims,
            time_zone: tz,
        }
    }

    #[test]
    fn yesterday_is_taken_in_each_source_time_zone() {
        // 03:00 UTC on the 28th is still the 27th in Chicago.
        let now = "2026-11-28T03:00:00Z".parse().unwrap();
        let chicago = source("a", chrono_tz::America::Chicago);
        let london = source("b", chrono_tz::Europe::London);
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let latest = Dates::Recent { days: 1 };
        assert_eq!(latest.for_source(&chicago, now, 1), vec![d("2026-11-26")]);
        assert_eq!(latest.for_source(&london, now, 1), vec![d("2026-11-27")]);
        assert_eq!(latest.for_source(&london, now, 0), vec![d("2026-11-28")]);
        assert_eq!(
            Dates::Range(d("2026-11-01"), d("2026-11-07"))
                .for_source(&london, now, 1)
                .len(),
            7
        );
        let recent = Dates::Recent { days: 3 }.for_source(&chicago, now, 1);
        assert_eq!(
            recent,
            vec![d("2026-11-24"), d("2026-11-25"), d("2026-11-26")]
        );
    }

    #[test]
    fn run_without_a_date_covers_the_catch_up_window_and_force_only_the_latest() {
        // 03:00 UTC on the 28th: Chicago is on the 27th, London on the 28th.
        let now = "2026-11-28T03:00:00Z".parse().unwrap();
        let chicago = source("a", chrono_tz::America::Chicago);
        let london = source("b", chrono_tz::Europe::London);
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let days = |from: &str, to: &str| Dates::Range(d(from), d(to)).for_source(&london, now, 1);

        let run = Dates::for_run(None, false, 7);
        assert_eq!(run, Dates::Recent { days: 7 });
        assert_eq!(
            run.for_source(&london, now, 1),
            days("2026-11-21", "2026-11-27")
        );
        assert_eq!(
            run.for_source(&chicago, now, 1),
            days("2026-11-20", "2026-11-26")
        );
        assert_eq!(
            run.for_source(&london, now, 2),
            days("2026-11-20", "2026-11-26")
        );

        // --force without --date: the latest date only.
        let forced = Dates::for_run(None, true, 7);
        assert_eq!(forced.for_source(&london, now, 1), vec![d("2026-11-27")]);
        assert_eq!(forced.for_source(&chicago, now, 1), vec![d("2026-11-26")]);

        // --date wins, with or without --force.
        for force in [false, true] {
            assert_eq!(
                Dates::for_run(Some(d("2026-10-03")), force, 7).for_source(&chicago, now, 1),
                vec![d("2026-10-03")]
            );
        }
        // A window of 0 is refused by the config; here it still means one date.
        assert_eq!(Dates::for_run(None, false, 0), Dates::Recent { days: 1 });
    }

    #[test]
    fn ranges_are_checked() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert!(
            Dates::Range(d("2026-11-02"), d("2026-11-01"))
                .validate()
                .is_err()
        );
        assert!(
            Dates::Range(d("2000-01-01"), d("2026-11-01"))
                .validate()
                .is_err()
        );
        assert!(
            Dates::Range(d("2026-11-01"), d("2026-11-01"))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn shards_partition_the_sources_exactly() {
        let ids: Vec<String> = (0..500).map(|i| format!("p-{i:04}")).collect();
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        let mut sizes = [0; 3];
        for id in &ids {
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].contains(id)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| n > 120), "{sizes:?}");
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().unwrap_err().contains("INDEX/COUNT"));
    }

    #[test]
    fn each_source_gets_the_entities_of_its_type() {
        let catalog = Catalog::embedded();
        let entities = select_entities(&catalog, &[]).unwrap();
        let sources = [
            source("p-1", chrono_tz::UTC),
            Source {
                source_type: SourceType::Supplier,
                ..source("s-1", chrono_tz::UTC)
            },
        ];
        let d = "2026-11-27".parse().unwrap();
        let plans = plan(&sources, &entities, Dates::Single(d), Utc::now(), 1).unwrap();
        assert_eq!(plans[0].jobs.len(), 13);
        assert_eq!(plans[1].jobs.len(), 3);
        assert!(
            select_entities(&catalog, &["pets".into()])
                .unwrap_err()
                .to_string()
                .contains("pets")
        );
    }

    #[test]
    fn unsafe_source_ids_are_refused() {
        let catalog = Catalog::embedded();
        let entities = select_entities(&catalog, &["patients".into()]).unwrap();
        let d = "2026-11-27".parse().unwrap();
        for bad in ["../etc", "a=b", "a/b"] {
            assert!(
                plan(
                    &[source(bad, chrono_tz::UTC)],
                    &entities,
                    Dates::Single(d),
                    Utc::now(),
                    1
                )
                .is_err(),
                "{bad}"
            );
        }
    }
}
