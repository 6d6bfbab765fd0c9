//! The data sources the emulator serves and how big each batch is.
//!
//! Id scheme: PIMS sources are `p-0001` … `p-{pims_sources}`, supplier
//! sources `s-0001` … `s-{supplier_sources}` (1-based, zero-padded to four
//! digits, wider past 9999). Sizes are log-uniform between the smallest and
//! the largest source of a type (`spread` apart), rotated by the seed so the
//! biggest is not always the first, and normalised so the mean over sources
//! is `rows_per_day` times the entity's weight.

use chrono::NaiveDate;
use syncvet_model::SourceType;

use crate::EmulatorConfig;
use crate::hash::{combine, hash_str, mix, unit};
use crate::page::{UNIX_EPOCH_DAYS_FROM_CE, days_since_epoch};
use crate::plan::embedded_catalog;

/// One data source as `GET /api/practices` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Practice {
    /// `p-0001` (PIMS) or `s-0001` (supplier).
    pub id: String,
    /// A display name.
    pub name: String,
    /// PIMS or Supplier.
    pub source_type: SourceType,
    /// The PIMS product (`AVImark`…); `None` for a supplier.
    pub pims_name: Option<String>,
    /// IANA time zone of the source.
    pub time_zone: String,
    /// Always true: forbidden sources are listed too and answer 403.
    pub batch_sync_enabled: bool,
    /// Size of this source relative to the mean (1.0 = `rows_per_day`).
    pub size_factor: f64,
}

const PLACES: &[&str] = &[
    "Riverside",
    "Oak Hill",
    "Maple Grove",
    "Cedar Creek",
    "Lakeside",
    "Prairie",
    "Harbor",
    "Summit",
    "Willow Bend",
    "Pine Ridge",
    "Fox Run",
    "Brookfield",
    "Stonebridge",
    "Sunset",
];
const KINDS: &[&str] = &[
    "Animal Hospital",
    "Veterinary Clinic",
    "Pet Care Center",
    "Veterinary Hospital",
    "Animal Clinic",
    "Emergency Vets",
];
const SUPPLIER_KINDS: &[&str] = &["Veterinary Supply", "Animal Health", "Vet Distribution"];
const PIMS: &[&str] = &[
    "AVImark",
    "Cornerstone",
    "ImproMed",
    "eVetPractice",
    "ezyVet",
    "Pulse",
    "Provet Cloud",
];
const ZONES: &[&str] = &[
    "America/Chicago",
    "America/New_York",
    "America/Denver",
    "America/Los_Angeles",
    "America/Phoenix",
    "Europe/London",
    "Australia/Sydney",
];

/// The id of the `index`-th (1-based) source of a type.
pub fn source_id(source_type: SourceType, index: u32) -> String {
    match source_type {
        SourceType::Pims => format!("p-{index:04}"),
        SourceType::Supplier => format!("s-{index:04}"),
    }
}

/// The type and 1-based index of a source id that exists under `config`.
pub fn parse_source_id(config: &EmulatorConfig, id: &str) -> Option<(SourceType, u32)> {
    let (source_type, digits, count) = if let Some(d) = id.strip_prefix("p-") {
        (SourceType::Pims, d, config.pims_sources)
    } else if let Some(d) = id.strip_prefix("s-") {
        (SourceType::Supplier, d, config.supplier_sources)
    } else {
        return None;
    };
    if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: u32 = digits.parse().ok()?;
    // One spelling per source: `p-01` or `p-00001` are other (unknown) ids.
    (index >= 1 && index <= count && source_id(source_type, index) == id)
        .then_some((source_type, index))
}

fn type_tag(source_type: SourceType) -> u64 {
    match source_type {
        SourceType::Pims => 0x5049_4d53,
        SourceType::Supplier => 0x5355_5050,
    }
}

/// Size of the `index`-th of `count` sources relative to the mean.
fn size_factor(config: &EmulatorConfig, source_type: SourceType, index: u32, count: u32) -> f64 {
    if count <= 1 || config.spread <= 1.0 {
        return 1.0;
    }
    let n = u64::from(count);
    let rotation = mix(config.seed ^ type_tag(source_type)) % n;
    let rank = (u64::from(index - 1) + rotation) % n;
    let ratio = config.spread.powf(1.0 / (n - 1) as f64);
    // Mean of ratio^k for k in 0..n (a geometric series), so sizes average 1.
    let mean = (ratio.powf(n as f64) - 1.0) / ((ratio - 1.0) * n as f64);
    ratio.powf(rank as f64) / mean
}

/// Every source under `config`: PIMS first, then suppliers, by id.
pub fn sources(config: &EmulatorConfig) -> Vec<Practice> {
    let pims = (1..=config.pims_sources).map(|i| practice(config, SourceType::Pims, i));
    let suppliers =
        (1..=config.supplier_sources).map(|i| practice(config, SourceType::Supplier, i));
    pims.chain(suppliers).collect()
}

/// The source of that id, if it exists under `config`.
pub fn source(config: &EmulatorConfig, id: &str) -> Option<Practice> {
    parse_source_id(config, id).map(|(t, i)| practice(config, t, i))
}

fn practice(config: &EmulatorConfig, source_type: SourceType, index: u32) -> Practice {
    let h = combine(
        combine(config.seed, type_tag(source_type)),
        u64::from(index),
    );
    let pick =
        |list: &[&str], salt: u64| list[(combine(h, salt) % list.len() as u64) as usize].to_owned();
    let count = match source_type {
        SourceType::Pims => config.pims_sources,
        SourceType::Supplier => config.supplier_sources,
    };
    let (name, pims_name) = match source_type {
        SourceType::Pims => (
            format!("{} {}", pick(PLACES, 1), pick(KINDS, 2)),
            Some(pick(PIMS, 3)),
        ),
        SourceType::Supplier => (
            format!("{} {}", pick(PLACES, 1), pick(SUPPLIER_KINDS, 2)),
            None,
        ),
    };
    Practice {
        id: source_id(source_type, index),
        name,
        source_type,
        pims_name,
        time_zone: pick(ZONES, 4),
        batch_sync_enabled: true,
        size_factor: size_factor(config, source_type, index, count),
    }
}

/// The weight of an entity (mean 1 over its source type), and its type if known.
fn entity_weight(entity: &str) -> (f64, Option<SourceType>) {
    let catalog = embedded_catalog();
    let Some(found) = catalog.entity(entity) else {
        return (1.0, None);
    };
    let (sum, n) = catalog
        .for_source(found.source)
        .fold((0.0, 0.0), |(s, n), e| (s + e.daily_weight, n + 1.0));
    (found.daily_weight * n / sum, Some(found.source))
}

/// The number of records in the batch of `entity` of `source_id` for
/// `date`: the `totalCount` the emulator reports and the number of records
/// its pages hold. 0 for an unknown source or an entity of the other type.
pub fn record_count(
    config: &EmulatorConfig,
    source_id: &str,
    entity: &str,
    date: NaiveDate,
) -> u64 {
    BatchSizer::new(config, source_id, entity)
        .map_or(0, |sizer| sizer.count(days_since_epoch(date)))
}

/// The sizes of every batch of one (source, entity), with the per-source
/// work (parsing, the size factor's powers) done once: the lineage of
/// changed records asks for the size of an earlier day per record, so a
/// day's size must cost a hash and a multiply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSizer {
    /// Hash of (seed, source, entity); the day is combined into it.
    prefix: u64,
    /// `rows_per_day` × source factor × entity weight.
    base: f64,
    /// The source type of a catalog entity; `None` for an entity the
    /// weights do not know (sized with weight 1).
    pub entity_type: Option<SourceType>,
}

impl BatchSizer {
    /// `None` for an unknown source or an entity of the other source type.
    pub(crate) fn new(
        config: &EmulatorConfig,
        source_id: &str,
        entity: &str,
    ) -> Option<BatchSizer> {
        let (source_type, index) = parse_source_id(config, source_id)?;
        let (weight, entity_type) = entity_weight(entity);
        if entity_type.is_some_and(|t| t != source_type) {
            return None;
        }
        let count = match source_type {
            SourceType::Pims => config.pims_sources,
            SourceType::Supplier => config.supplier_sources,
        };
        let factor = size_factor(config, source_type, index, count);
        Some(BatchSizer {
            prefix: batch_prefix(config, source_id, entity),
            base: config.rows_per_day as f64 * factor * weight,
            entity_type,
        })
    }

    /// The record count of the batch of the day `days` (since 1970-01-01).
    #[inline]
    pub(crate) fn count(&self, days: i64) -> u64 {
        let day = combine(self.prefix, (days + UNIX_EPOCH_DAYS_FROM_CE) as u64);
        // ±30% from night to night, so consecutive batches differ.
        let jitter = 0.7 + 0.6 * unit(day);
        (self.base * jitter).round() as u64
    }
}

/// Hash of (seed, source, entity): batch hashes and day sizes derive from it.
pub(crate) fn batch_prefix(config: &EmulatorConfig, source_id: &str, entity: &str) -> u64 {
    combine(combine(config.seed, hash_str(source_id)), hash_str(entity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    #[test]
    fn ids_follow_the_scheme_and_parse_back_strictly() {
        let config = EmulatorConfig {
            pims_sources: 12,
            ..EmulatorConfig::default()
        };
        let all = sources(&config);
        assert_eq!(all.len(), 13);
        assert_eq!(all[0].id, "p-0001");
        assert_eq!(all[11].id, "p-0012");
        assert_eq!(all[12].id, "s-0001");
        assert_eq!(
            parse_source_id(&config, "p-0012"),
            Some((SourceType::Pims, 12))
        );
        assert_eq!(parse_source_id(&config, "p-0013"), None);
        assert_eq!(parse_source_id(&config, "p-12"), None);
        assert_eq!(parse_source_id(&config, "p-00012"), None);
        assert_eq!(parse_source_id(&config, "s-0002"), None);
    }

    #[test]
    fn sources_spread_as_configured_and_average_rows_per_day() {
        let config = EmulatorConfig {
            pims_sources: 20,
            ..EmulatorConfig::default()
        };
        let factors: Vec<f64> = sources(&config)
            .iter()
            .filter(|p| p.source_type == SourceType::Pims)
            .map(|p| p.size_factor)
            .collect();
        let max = factors.iter().cloned().fold(f64::MIN, f64::max);
        let min = factors.iter().cloned().fold(f64::MAX, f64::min);
        assert!((max / min - 100.0).abs() < 1e-6, "{max} / {min}");
        let mean = factors.iter().sum::<f64>() / factors.len() as f64;
        assert!((mean - 1.0).abs() < 1e-9, "{mean}");

        let flat = EmulatorConfig {
            spread: 1.0,
            ..config.clone()
        };
        let counts: Vec<u64> = (1..=20)
            .map(|i| record_count(&flat, &source_id(SourceType::Pims, i), "patients", date()))
            .collect();
        assert!(
            counts.iter().all(|&c| (140..=260).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn counts_are_deterministic_and_respect_the_source_type() {
        let config = EmulatorConfig::default();
        let a = record_count(&config, "p-0001", "invoice_lines", date());
        assert_eq!(a, record_count(&config, "p-0001", "invoice_lines", date()));
        assert_eq!(
            record_count(&config, "p-0001", "supplier_products", date()),
            0
        );
        assert_eq!(record_count(&config, "p-0009", "patients", date()), 0);
        assert!(record_count(&config, "s-0001", "supplier_products", date()) > 0);
        let other = EmulatorConfig { seed: 43, ..config };
        let days: Vec<u64> = (0..10)
            .map(|d| record_count(&other, "p-0002", "patients", date() + chrono::Days::new(d)))
            .collect();
        assert!(days.windows(2).any(|w| w[0] != w[1]), "{days:?}");
    }
}
