//! Rendering one record: a pure function of (batch, record index), written
//! straight into the page buffer.
//!
//! The valid coercions the decoder must accept appear on purpose: decimals
//! sometimes as strings (`"12.50"`), booleans sometimes as `"true"` or `0/1`,
//! timestamps sometimes with an offset or milliseconds, optional fields
//! sometimes `null` or absent. Whether a record is dirty or drifted, and
//! whether it is new, a change or a deletion ([`lineage`](crate::lineage)),
//! is drawn from its own hash, apart from its values, so changing
//! `dirty_rate` changes which records are broken but not what the clean ones
//! contain.

use syncvet_model::FieldType;

use crate::hash::{Draws, combine, mix, unit};
use crate::json::{
    civil_from_days, push_date_raw, push_decimal, push_float, push_int, push_padded, push_str,
    push_timestamp,
};
use crate::lineage::{Lineage, Origin, RecordKind};
use crate::plan::{EntityPlan, FIRST_NAMES, Gen, LAST_NAMES, Slot, SlotMember, Text};

const DIRTY_SALT: u64 = 0xd1d7_0000_0000_0001;
const DRIFT_SALT: u64 = 0xd1f7_0000_0000_0002;
const OFFSETS_MINUTES: [i32; 6] = [-300, -360, -420, -480, 60, 600];
/// The unknown keys of drifted records.
pub const DRIFT_KEYS: [&str; 4] = ["legacyId", "pimsInternalCode", "syncHint", "extensionData"];

/// Everything fixed for one batch (source, entity, date) under one config.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    pub plan: &'a EntityPlan,
    /// Hash of (seed, source, entity, date): every record hash derives from it.
    pub hash: u64,
    /// The batch date, in days since 1970-01-01.
    pub date_days: i64,
    /// `"p-0001"` with its quotes.
    pub source_json: Vec<u8>,
    /// `"pat-20261127-` : the id of a new record up to its index.
    pub id_head: Vec<u8>,
    /// Which records are new, changed or deleted, and whose ids they carry.
    pub lineage: Lineage,
    pub pims_sources: u32,
    /// How many ids a reference draws from per day.
    pub population: u64,
    pub dirty_rate: f64,
    pub drift_rate: f64,
}

/// Counters of one rendered page.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RecordTally {
    pub records: u64,
    pub dirty: u64,
    pub drift: u64,
    /// Changed versions of earlier records.
    pub changed: u64,
    /// Deletions of earlier records.
    pub deleted: u64,
}

/// What the fields of the record being rendered depend on besides the draws.
#[derive(Clone, Copy)]
struct Current {
    origin: Origin,
    dirt: Option<(Dirt, usize)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Dirt {
    WrongType,
    ImpossibleDate,
    Missing,
}

impl Batch<'_> {
    /// Appends record `index` of the batch as one JSON object.
    pub(crate) fn render(&self, out: &mut Vec<u8>, index: u64, tally: &mut RecordTally) {
        let record_hash = combine(self.hash, index);
        let mut d = Draws::new(record_hash);
        let dirt = (self.dirty_rate > 0.0 && unit(mix(record_hash ^ DIRTY_SALT)) < self.dirty_rate)
            .then(|| self.pick_dirt(record_hash))
            .flatten();
        let drift = self.drift_rate > 0.0 && unit(mix(record_hash ^ DRIFT_SALT)) < self.drift_rate;
        let origin = self.lineage.origin(self.date_days, record_hash, index);
        tally.records += 1;
        tally.dirty += u64::from(dirt.is_some());
        tally.drift += u64::from(drift);
        tally.changed += u64::from(origin.kind == RecordKind::Change);
        tally.deleted += u64::from(origin.kind == RecordKind::Delete);
        let current = Current { origin, dirt };

        out.push(b'{');
        let mut first = true;
        let mut slot_no = 0usize;
        for member in &self.plan.members {
            match member {
                SlotMember::Field(slot) => {
                    self.render_slot(out, &mut first, slot, slot_no, current, &mut d);
                    slot_no += 1;
                }
                SlotMember::Object(key, slots) => {
                    let all_optional = slots.iter().all(|s| !s.required);
                    let hit =
                        dirt.is_some_and(|(_, n)| (slot_no..slot_no + slots.len()).contains(&n));
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(key);
                    if all_optional && !hit && d.below(100) < 5 {
                        out.extend_from_slice(b"null");
                    } else {
                        out.push(b'{');
                        let mut inner_first = true;
                        for (i, slot) in slots.iter().enumerate() {
                            self.render_slot(
                                out,
                                &mut inner_first,
                                slot,
                                slot_no + i,
                                current,
                                &mut d,
                            );
                        }
                        out.push(b'}');
                    }
                    slot_no += slots.len();
                }
            }
        }
        if drift {
            self.render_drift(out, record_hash);
        }
        out.push(b'}');
    }

    fn pick_dirt(&self, record_hash: u64) -> Option<(Dirt, usize)> {
        let mut d = Draws::new(mix(record_hash ^ DIRTY_SALT));
        let kinds = [Dirt::WrongType, Dirt::ImpossibleDate, Dirt::Missing];
        let start = d.below(3) as usize;
        // Fall through to another kind when the entity has no target for it.
        (0..3).map(|i| (start + i) % 3).find_map(|k| {
            let targets = &self.plan.dirty_targets[k];
            (!targets.is_empty())
                .then(|| (kinds[k], targets[d.below(targets.len() as u64) as usize]))
        })
    }

    fn render_slot(
        &self,
        out: &mut Vec<u8>,
        first: &mut bool,
        slot: &Slot,
        slot_no: usize,
        current: Current,
        d: &mut Draws,
    ) {
        let dirt_here = current
            .dirt
            .and_then(|(kind, n)| (n == slot_no).then_some(kind));
        if dirt_here == Some(Dirt::Missing) {
            return;
        }
        // 5% of optional values are absent and 10% null; `deleted` is absent
        // from 10% of records but never null, and always there on a
        // deletion; the source key is always there. The draw is made either
        // way, so a record's other values do not depend on its kind.
        let presence = match slot.generator {
            _ if dirt_here.is_some() => 100,
            Gen::SourceKey => 100,
            Gen::Deleted if d.below(10) == 0 && current.origin.kind != RecordKind::Delete => {
                return;
            }
            Gen::Deleted => 100,
            _ if slot.required => 100,
            _ => d.below(100),
        };
        if presence < 5 {
            return;
        }
        if !*first {
            out.push(b',');
        }
        *first = false;
        out.extend_from_slice(&slot.key);
        match dirt_here {
            Some(Dirt::WrongType) => out.extend_from_slice(wrong_type(slot.field_type)),
            Some(Dirt::ImpossibleDate) => out.extend_from_slice(match slot.field_type {
                FieldType::Date => b"\"2026-02-30\"",
                _ => b"\"2026-02-30T10:00:00Z\"",
            }),
            _ if presence < 15 => out.extend_from_slice(b"null"),
            _ => self.render_value(out, &slot.generator, current.origin, d),
        }
    }

    fn render_value(&self, out: &mut Vec<u8>, generator: &Gen, origin: Origin, d: &mut Draws) {
        match generator {
            Gen::Text(text) => self.render_text(out, text, origin, d),
            Gen::SourceKey => out.extend_from_slice(&self.source_json),
            Gen::Deleted => {
                // One draw all the same, so the values after it do not
                // depend on how the flag is decided.
                d.next();
                out.extend_from_slice(if origin.kind == RecordKind::Delete {
                    b"true"
                } else {
                    b"false"
                });
            }
            Gen::LastModified => {
                let secs = self.date_days * 86_400 + d.below(86_400) as i64;
                render_instant(out, secs, d);
            }
            Gen::Int(lo, hi) => push_int(out, lo + d.below((hi - lo + 1) as u64) as i64),
            Gen::Float(max) => push_float(out, (unit(d.next()) * max * 100.0).round() / 100.0),
            Gen::Decimal { scale, max_units } => {
                let units = d.below(max_units + 1) as i64;
                if d.below(8) == 0 {
                    out.push(b'"');
                    push_decimal(out, units, *scale);
                    out.push(b'"');
                } else {
                    push_decimal(out, units, *scale);
                }
            }
            Gen::Bool => {
                let value = d.next() & 1 == 1;
                out.extend_from_slice(match (d.below(100), value) {
                    (0..84, true) => b"true",
                    (0..84, false) => b"false",
                    (84..92, true) => b"\"true\"",
                    (84..92, false) => b"\"false\"",
                    (_, true) => b"1",
                    (_, false) => b"0",
                });
            }
            Gen::Date(lo, hi) => {
                out.push(b'"');
                push_date_raw(
                    out,
                    self.date_days + lo + d.below((hi - lo + 1) as u64) as i64,
                );
                out.push(b'"');
            }
            Gen::Timestamp(lo, hi) => {
                let day = self.date_days + lo + d.below((hi - lo + 1) as u64) as i64;
                render_instant(out, day * 86_400 + d.below(86_400) as i64, d);
            }
            Gen::List(words) => {
                out.push(b'[');
                for i in 0..d.below(4) {
                    if i > 0 {
                        out.push(b',');
                    }
                    push_str(out, d.pick(words));
                }
                out.push(b']');
            }
        }
    }

    fn render_text(&self, out: &mut Vec<u8>, text: &Text, origin: Origin, d: &mut Draws) {
        match text {
            Text::RecordId if origin.days == self.date_days => {
                out.extend_from_slice(&self.id_head);
                push_index(out, origin.index);
                out.push(b'"');
            }
            Text::RecordId => {
                out.push(b'"');
                push_record_id(out, &self.plan.id_prefix, origin.days, origin.index);
                out.push(b'"');
            }
            Text::Reference(prefix) => {
                out.push(b'"');
                out.extend_from_slice(prefix.as_bytes());
                out.push(b'-');
                push_compact_date(out, self.date_days - d.below(365) as i64);
                out.push(b'-');
                push_index(out, d.below(self.population));
                out.push(b'"');
            }
            Text::CustomerPractice => {
                out.extend_from_slice(b"\"p-");
                push_padded(
                    out,
                    1 + d.below(u64::from(self.pims_sources.max(1))) as u32,
                    4,
                );
                out.push(b'"');
            }
            Text::Listed(values) => push_str(out, &values[d.below(values.len() as u64) as usize]),
            Text::Word(list) => push_str(out, d.pick(list)),
            Text::Prose(min, max) => {
                out.push(b'"');
                let n = u64::from(*min) + d.below(u64::from(max - min + 1));
                for i in 0..n {
                    if i > 0 {
                        out.push(b' ');
                    }
                    out.extend_from_slice(d.pick(crate::plan::WORDS).as_bytes());
                }
                out.extend_from_slice(b".\"");
            }
            Text::PersonName => {
                out.push(b'"');
                out.extend_from_slice(d.pick(FIRST_NAMES).as_bytes());
                out.push(b' ');
                out.extend_from_slice(d.pick(LAST_NAMES).as_bytes());
                out.push(b'"');
            }
            Text::Email => {
                out.push(b'"');
                let start = out.len();
                out.extend_from_slice(d.pick(FIRST_NAMES).as_bytes());
                out.push(b'.');
                out.extend_from_slice(d.pick(LAST_NAMES).as_bytes());
                out[start..].make_ascii_lowercase();
                push_int(out, d.below(100));
                out.extend_from_slice(b"@example.com\"");
            }
            Text::Phone => {
                out.extend_from_slice(b"\"+1-555-");
                push_padded(out, d.below(1000) as u32, 3);
                out.push(b'-');
                push_padded(out, d.below(10_000) as u32, 4);
                out.push(b'"');
            }
            Text::Street => {
                out.push(b'"');
                push_int(out, 1 + d.below(9999));
                out.push(b' ');
                out.extend_from_slice(d.pick(crate::plan::STREETS).as_bytes());
                out.extend_from_slice(b" St\"");
            }
            Text::PostalCode => {
                out.push(b'"');
                push_padded(out, d.below(100_000) as u32, 5);
                out.push(b'"');
            }
            Text::Code(prefix, digits) => {
                out.push(b'"');
                out.extend_from_slice(prefix.as_bytes());
                let mut v = d.next();
                for _ in 0..*digits {
                    out.push(b'0' + (v % 10) as u8);
                    v /= 10;
                }
                out.push(b'"');
            }
        }
    }

    fn render_drift(&self, out: &mut Vec<u8>, record_hash: u64) {
        let mut d = Draws::new(mix(record_hash ^ DRIFT_SALT));
        let first = d.below(DRIFT_KEYS.len() as u64) as usize;
        let count = 1 + d.below(2) as usize;
        for k in 0..count {
            let key = DRIFT_KEYS[(first + k) % DRIFT_KEYS.len()];
            out.push(b',');
            push_str(out, key);
            out.push(b':');
            match key {
                "legacyId" => {
                    out.extend_from_slice(b"\"L");
                    push_int(out, d.below(1_000_000));
                    out.push(b'"');
                }
                "pimsInternalCode" => push_int(out, d.below(100_000)),
                "syncHint" => out.extend_from_slice(b"\"v2\""),
                _ => out.extend_from_slice(b"{\"source\":\"migration\",\"version\":3}"),
            }
        }
    }
}

/// A value of the wrong JSON type for `field_type`, that no coercion accepts.
fn wrong_type(field_type: FieldType) -> &'static [u8] {
    match field_type {
        FieldType::String => b"{\"unexpected\":true}",
        FieldType::Int32 | FieldType::Int64 => b"\"many\"",
        FieldType::Float64 => b"\"n/a\"",
        FieldType::Decimal { .. } => b"\"twelve\"",
        FieldType::Bool => b"\"maybe\"",
        FieldType::Date | FieldType::Timestamp => b"true",
        FieldType::StringList => b"42",
    }
}

/// An instant, mostly in UTC, sometimes with an offset or milliseconds.
fn render_instant(out: &mut Vec<u8>, unix_secs: i64, d: &mut Draws) {
    let style = d.below(100);
    let offset = if style < 75 {
        0
    } else {
        OFFSETS_MINUTES[(style % 6) as usize]
    };
    let millis = style.is_multiple_of(3).then(|| d.below(1000) as u32);
    push_timestamp(out, unix_secs, millis, offset);
}

/// `pat-20261127-000042`: the id of new record `index` of the day `days`.
pub(crate) fn push_record_id(out: &mut Vec<u8>, prefix: &str, days: i64, index: u64) {
    out.extend_from_slice(prefix.as_bytes());
    out.push(b'-');
    push_compact_date(out, days);
    out.push(b'-');
    push_index(out, index);
}

/// A record index, zero-padded to six digits.
fn push_index(out: &mut Vec<u8>, index: u64) {
    if index < 1_000_000 {
        push_padded(out, index as u32, 6);
    } else {
        push_int(out, index);
    }
}

/// `YYYYMMDD` of a day count.
pub(crate) fn push_compact_date(out: &mut Vec<u8>, days: i64) {
    let (y, m, dd) = civil_from_days(days);
    push_padded(out, y.clamp(0, 9999) as u32, 4);
    push_padded(out, m, 2);
    push_padded(out, dd, 2);
}
