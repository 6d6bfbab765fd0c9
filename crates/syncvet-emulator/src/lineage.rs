//! Which record each position of a batch holds: one created that day, a
//! changed version of one created earlier, or the deletion of one.
//!
//! A batch is one day of a practice's change history (`api-contract.md`),
//! so record `index` of the batch of day D is, drawn from the record's own
//! hash under a salt of its own (independent of its values, its dirt and
//! its drift):
//!
//! - a **deletion** with probability `delete_rate`, a **change** with
//!   `change_rate`: it carries the id of the new record j of an earlier day
//!   D' = D − 1 − below(`change_lookback_days`). The origin must be a *new*
//!   record, so every id served was first served as new; when the draw
//!   lands on a day too small for it (below) or on a change or deletion, it
//!   is drawn again, three draws in all, then the record falls back to new
//!   (so the observed rates sit a little below the switches);
//! - else **new**: id `{prefix}-{D}-{index}`.
//!
//! **Ids are unique in a batch.** j is not drawn freely per record
//! (`below(count(D'))` would let two changes of one batch draw the same
//! origin: in a batch of hundreds of changes over a short lookback, most
//! batches would repeat an id, and a reader could not order two versions
//! of one batch). It is `(index + shift(D, D')) mod count(D')`, with one
//! shift per pair of days and only for `index < count(D')`: for a given
//! D', distinct indices get distinct origins, and origins of distinct days
//! differ by their date. Over the records, j is still uniform.
//!
//! The kind of the origin needs only the origin's own hash (never the
//! origin's origin), so a change costs a few hashes and a day size
//! ([`BatchSizer`], a hash and a multiply), and nothing depends on the
//! page. What the draws do not rule out: a record changed again after it
//! was deleted on an earlier day, or deleted twice; a reader resolves them
//! by `lastModified`.

use chrono::NaiveDate;

use crate::EmulatorConfig;
use crate::hash::{Draws, combine, mix, unit};
use crate::page::days_since_epoch;
use crate::plan::embedded_catalog;
use crate::records::push_record_id;
use crate::sources::{BatchSizer, batch_prefix};

const KIND_SALT: u64 = 0xd1d7_0000_0000_0003;
const ORIGIN_SALT: u64 = 0xd1d7_0000_0000_0004;
const SHIFT_SALT: u64 = 0xd1d7_0000_0000_0005;
/// Draws of an origin before a change or deletion falls back to new.
const ORIGIN_DRAWS: u32 = 3;

/// What a record of a batch is in the practice's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Created on the batch date: its id embeds that date and its index.
    New,
    /// A later version of a record created on an earlier day (same id).
    Change,
    /// The deletion of a record created on an earlier day (same id,
    /// `"deleted": true`).
    Delete,
}

/// Who record `index` of a batch is: see [`record_identity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIdentity {
    /// The record's `id` (`pat-20261127-000042`).
    pub id: String,
    /// New, a change, or a deletion.
    pub kind: RecordKind,
    /// The date of the batch where this id was served as a new record (the
    /// batch date itself for a new record).
    pub created: NaiveDate,
    /// The index of that new record in its batch.
    pub created_index: u64,
}

/// The id and kind of record `index` of the batch of `entity` of
/// `source_id` for `date`, as the emulator serves it; `None` for an
/// unknown source, an entity not in the catalog or of the other source
/// type, or an index at or past [`record_count`](crate::record_count).
/// The render uses the same draws, so the two cannot disagree.
pub fn record_identity(
    config: &EmulatorConfig,
    source_id: &str,
    entity: &str,
    date: NaiveDate,
    index: u64,
) -> Option<RecordIdentity> {
    let sizer = BatchSizer::new(config, source_id, entity)?;
    sizer.entity_type?;
    let days = days_since_epoch(date);
    if index >= sizer.count(days) {
        return None;
    }
    let lineage = Lineage::new(config, source_id, entity);
    let origin = lineage.origin(days, combine(lineage.batch_hash(days), index), index);
    let mut id = Vec::with_capacity(24);
    let prefix = &embedded_catalog().entity(entity)?.id_prefix;
    push_record_id(&mut id, prefix, origin.days, origin.index);
    Some(RecordIdentity {
        id: String::from_utf8(id).expect("ids are ASCII"),
        kind: origin.kind,
        created: date - chrono::Days::new((days - origin.days) as u64),
        created_index: origin.index,
    })
}

/// The record whose id a record carries: itself for a new record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub kind: RecordKind,
    /// The day it was new, in days since 1970-01-01.
    pub days: i64,
    /// Its index in that day's batch.
    pub index: u64,
}

/// The history of one (source, entity) under one config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lineage {
    /// Hash of (seed, source, entity); a batch hash adds the day.
    prefix: u64,
    /// `None` for a source that serves no batch: no origin exists.
    sizer: Option<BatchSizer>,
    /// A kind draw below this is a deletion…
    delete_below: f64,
    /// …below this a change, else new.
    evolve_below: f64,
    lookback_days: u64,
}

impl Lineage {
    pub(crate) fn new(config: &EmulatorConfig, source_id: &str, entity: &str) -> Lineage {
        Lineage {
            prefix: batch_prefix(config, source_id, entity),
            sizer: BatchSizer::new(config, source_id, entity),
            delete_below: config.delete_rate,
            evolve_below: config.delete_rate + config.change_rate,
            lookback_days: u64::from(config.change_lookback_days.max(1)),
        }
    }

    /// The hash of the batch of day `days`: every record hash derives from it.
    #[inline]
    pub(crate) fn batch_hash(&self, days: i64) -> u64 {
        combine(self.prefix, days as u64)
    }

    /// The kind drawn for a record, before its origin is looked for.
    #[inline]
    fn drawn_kind(&self, record_hash: u64) -> RecordKind {
        let draw = unit(mix(record_hash ^ KIND_SALT));
        if draw < self.delete_below {
            RecordKind::Delete
        } else if draw < self.evolve_below {
            RecordKind::Change
        } else {
            RecordKind::New
        }
    }

    /// What record `index` of day `days` (whose hash is `record_hash`) is.
    #[inline]
    pub(crate) fn origin(&self, days: i64, record_hash: u64, index: u64) -> Origin {
        let new = Origin {
            kind: RecordKind::New,
            days,
            index,
        };
        if self.evolve_below <= 0.0 {
            return new;
        }
        let kind = self.drawn_kind(record_hash);
        let Some(sizer) = self.sizer.filter(|_| kind != RecordKind::New) else {
            return new;
        };
        let batch_hash = self.batch_hash(days);
        let mut d = Draws::new(mix(record_hash ^ ORIGIN_SALT));
        for _ in 0..ORIGIN_DRAWS {
            let origin_days = days - 1 - d.below(self.lookback_days) as i64;
            let count = sizer.count(origin_days);
            if index >= count {
                continue;
            }
            // One shift per (D, D'), so the map index → origin is one to one.
            let shift = below(combine(batch_hash ^ SHIFT_SALT, origin_days as u64), count);
            let origin_index = match index + shift {
                j if j >= count => j - count,
                j => j,
            };
            if self.drawn_kind(combine(self.batch_hash(origin_days), origin_index))
                == RecordKind::New
            {
                return Origin {
                    kind,
                    days: origin_days,
                    index: origin_index,
                };
            }
        }
        new
    }
}

/// A value in 0..n (n > 0) from a hash, by multiply-shift.
#[inline]
fn below(hash: u64, n: u64) -> u64 {
    ((u128::from(hash) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_count;

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    #[test]
    fn identities_are_none_outside_the_served_batches() {
        let config = EmulatorConfig::default();
        let total = record_count(&config, "p-0001", "patients", date());
        assert!(total > 0);
        assert!(record_identity(&config, "p-0001", "patients", date(), total - 1).is_some());
        assert_eq!(
            record_identity(&config, "p-0001", "patients", date(), total),
            None
        );
        assert_eq!(
            record_identity(&config, "p-0009", "patients", date(), 0),
            None
        );
        assert_eq!(
            record_identity(&config, "p-0001", "supplier_products", date(), 0),
            None
        );
        assert_eq!(
            record_identity(&config, "p-0001", "no_such_entity", date(), 0),
            None
        );
    }

    #[test]
    fn origins_are_new_records_of_earlier_days_within_the_lookback() {
        let config = EmulatorConfig {
            change_rate: 0.3,
            delete_rate: 0.1,
            change_lookback_days: 5,
            spread: 1.0,
            rows_per_day: 2000,
            ..EmulatorConfig::default()
        };
        let total = record_count(&config, "p-0002", "invoices", date());
        assert!(total > 1000, "{total}");
        let mut kinds = [0u64; 3];
        for index in 0..total {
            let identity = record_identity(&config, "p-0002", "invoices", date(), index).unwrap();
            kinds[identity.kind as usize] += 1;
            match identity.kind {
                RecordKind::New => {
                    assert_eq!((identity.created, identity.created_index), (date(), index));
                    assert!(identity.id.starts_with("inv-20261127-"), "{identity:?}");
                }
                _ => {
                    let back = (date() - identity.created).num_days();
                    assert!((1..=5).contains(&back), "{identity:?}");
                    let origin = record_identity(
                        &config,
                        "p-0002",
                        "invoices",
                        identity.created,
                        identity.created_index,
                    )
                    .unwrap();
                    assert_eq!(origin.kind, RecordKind::New, "{identity:?}");
                    assert_eq!(origin.id, identity.id);
                }
            }
        }
        assert!(kinds.iter().all(|&n| n > 0), "{kinds:?} of {total}");
    }

    #[test]
    fn ids_are_unique_in_a_batch_even_with_many_changes_over_a_short_lookback() {
        let config = EmulatorConfig {
            change_rate: 0.6,
            delete_rate: 0.2,
            change_lookback_days: 2,
            ..EmulatorConfig::default()
        };
        let mut evolved = 0;
        for source in ["p-0001", "p-0002", "p-0003"] {
            for day in 0..5 {
                let date = date() + chrono::Days::new(day);
                let total = record_count(&config, source, "medical_notes", date);
                let mut ids = std::collections::HashSet::new();
                for index in 0..total {
                    let identity =
                        record_identity(&config, source, "medical_notes", date, index).unwrap();
                    evolved += u64::from(identity.kind != RecordKind::New);
                    assert!(
                        ids.insert(identity.id.clone()),
                        "{source} {date}: {identity:?}"
                    );
                }
            }
        }
        assert!(evolved > 1000, "{evolved}");
    }

    #[test]
    fn every_catalog_entity_has_identities() {
        let config = EmulatorConfig::default();
        for entity in syncvet_model::Catalog::embedded().entities() {
            let source = match entity.source {
                syncvet_model::SourceType::Pims => "p-0001",
                syncvet_model::SourceType::Supplier => "s-0001",
            };
            let total = record_count(&config, source, &entity.name, date());
            for index in 0..total.min(50) {
                let identity = record_identity(&config, source, &entity.name, date(), index);
                assert!(identity.is_some(), "{} {index}", entity.name);
            }
        }
    }

    #[test]
    fn zero_rates_make_every_record_new() {
        let config = EmulatorConfig {
            change_rate: 0.0,
            delete_rate: 0.0,
            ..EmulatorConfig::default()
        };
        let total = record_count(&config, "p-0001", "clients", date());
        for index in 0..total {
            let identity = record_identity(&config, "p-0001", "clients", date(), index).unwrap();
            assert_eq!(identity.kind, RecordKind::New);
            assert_eq!(identity.id, format!("cli-20261127-{index:06}"));
        }
    }
}
