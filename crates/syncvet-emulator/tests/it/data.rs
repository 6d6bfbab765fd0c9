//! Records match the catalog (with the coercions the decoder must accept),
//! and dirty and drifted records come at about the rates set. The checker
//! here is independent of the emulator's generator.

use std::collections::BTreeMap;

use serde_json::Value;
use syncvet_emulator::{DRIFT_KEYS, EmulatorConfig};
use syncvet_model::{Catalog, Entity, FieldRole, FieldType};

use crate::common::start;

/// Why a record would be rejected, if it would.
fn problem(entity: &Entity, record: &serde_json::Map<String, Value>) -> Option<String> {
    for field in &entity.fields {
        let value = match field.key.split_once('.') {
            None => record.get(&field.key),
            Some((parent, leaf)) => match record.get(parent) {
                None | Some(Value::Null) => None,
                Some(Value::Object(inner)) => inner.get(leaf),
                Some(other) => return Some(format!("{parent} is not an object: {other}")),
            },
        };
        let value = match value {
            None | Some(Value::Null) if field.required => {
                return Some(format!("{} missing", field.key));
            }
            None | Some(Value::Null) => continue,
            Some(v) => v,
        };
        if !coercible(field.field_type, value) {
            return Some(format!(
                "{} = {value} is not a {}",
                field.key, field.field_type
            ));
        }
    }
    None
}

fn coercible(field_type: FieldType, value: &Value) -> bool {
    let numeric = |s: &str| s.parse::<f64>().is_ok();
    match field_type {
        FieldType::String => value.is_string(),
        FieldType::Int32 | FieldType::Int64 => {
            value.is_i64() || value.as_str().is_some_and(|s| s.parse::<i64>().is_ok())
        }
        FieldType::Float64 | FieldType::Decimal { .. } => {
            value.is_number() || value.as_str().is_some_and(numeric)
        }
        FieldType::Bool => {
            matches!(value, Value::Bool(_))
                || matches!(value.as_str(), Some("true" | "false"))
                || matches!(value.as_i64(), Some(0 | 1))
        }
        FieldType::Date => value
            .as_str()
            .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
        FieldType::Timestamp => value
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        FieldType::StringList => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string)),
    }
}

fn unknown_keys(entity: &Entity, record: &serde_json::Map<String, Value>) -> Vec<String> {
    record
        .keys()
        .filter(|k| {
            !entity
                .fields
                .iter()
                .any(|f| f.key == **k || f.key.split('.').next() == Some(k.as_str()))
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_records_of_every_entity_match_the_catalog() {
    let config = EmulatorConfig {
        pims_sources: 1,
        supplier_sources: 1,
        spread: 1.0,
        rows_per_day: 300,
        ..EmulatorConfig::default()
    };
    let h = start(config).await;
    let catalog = Catalog::embedded();
    let mut seen_coercions: BTreeMap<&str, u64> = BTreeMap::new();
    for entity in catalog.entities() {
        let source = match entity.source {
            syncvet_model::SourceType::Pims => "p-0001",
            syncvet_model::SourceType::Supplier => "s-0001",
        };
        let (_, items) = h.read_batch(source, &entity.name, 1000).await;
        assert!(
            !items.is_empty() || entity.name == "sites",
            "{} has no records",
            entity.name
        );
        let source_key = entity
            .fields
            .iter()
            .find(|f| f.role == FieldRole::SourceKey)
            .unwrap();
        for item in &items {
            let record = item.as_object().unwrap();
            assert_eq!(problem(entity, record), None, "{}: {item}", entity.name);
            assert!(
                unknown_keys(entity, record).is_empty(),
                "{}: {item}",
                entity.name
            );
            assert_eq!(record[&source_key.key], source, "{}", entity.name);
            for field in &entity.fields {
                match (field.field_type, record.get(&field.key)) {
                    (FieldType::Decimal { .. }, Some(Value::String(_))) => {
                        *seen_coercions.entry("decimal as string").or_default() += 1
                    }
                    (FieldType::Bool, Some(Value::String(_))) => {
                        *seen_coercions.entry("bool as string").or_default() += 1
                    }
                    (FieldType::Bool, Some(Value::Number(_))) => {
                        *seen_coercions.entry("bool as number").or_default() += 1
                    }
                    (FieldType::Timestamp, Some(Value::String(s))) if !s.ends_with('Z') => {
                        *seen_coercions.entry("timestamp with offset").or_default() += 1
                    }
                    (_, Some(Value::Null)) => *seen_coercions.entry("null").or_default() += 1,
                    (_, None) if !field.required => {
                        *seen_coercions.entry("absent").or_default() += 1
                    }
                    _ => {}
                }
            }
            if record.get("deleted") == Some(&Value::Bool(true)) {
                *seen_coercions.entry("deleted").or_default() += 1;
            }
            if let Some(Value::String(s)) = record.get("status")
                && let Some(status) = entity
                    .fields
                    .iter()
                    .find(|f| f.key == "status" && !f.values.is_empty())
            {
                assert!(status.values.contains(s), "{}: status {s}", entity.name);
            }
        }
    }
    for kind in [
        "decimal as string",
        "bool as string",
        "bool as number",
        "timestamp with offset",
        "null",
        "absent",
        "deleted",
    ] {
        assert!(
            seen_coercions.get(kind).is_some_and(|&n| n > 0),
            "never saw {kind}: {seen_coercions:?}"
        );
    }
    assert_eq!(h.emulator.stats().dirty_records_served, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_and_drift_rates_are_roughly_as_set() {
    let config = EmulatorConfig {
        pims_sources: 1,
        spread: 1.0,
        rows_per_day: 2500,
        dirty_rate: 0.1,
        drift_rate: 0.05,
        ..EmulatorConfig::default()
    };
    let h = start(config).await;
    let catalog = Catalog::embedded();
    let (mut total, mut dirty, mut drifted) = (0u64, 0u64, 0u64);
    let mut drift_names = std::collections::BTreeSet::new();
    let mut reasons = BTreeMap::new();
    for name in ["patients", "invoices", "appointments"] {
        let entity = catalog.entity(name).unwrap();
        let (_, items) = h.read_batch("p-0001", name, 2000).await;
        for item in &items {
            let record = item.as_object().unwrap();
            total += 1;
            if let Some(why) = problem(entity, record) {
                dirty += 1;
                let kind = if why.contains("missing") {
                    "missing"
                } else if why.contains("02-30") {
                    "impossible date"
                } else {
                    "wrong type"
                };
                *reasons.entry(kind).or_insert(0u64) += 1;
            }
            let unknown = unknown_keys(entity, record);
            if !unknown.is_empty() {
                drifted += 1;
                for key in unknown {
                    assert!(DRIFT_KEYS.contains(&key.as_str()), "{key}");
                    drift_names.insert(key);
                }
            }
        }
    }
    assert!(total > 5000, "{total}");
    let dirty_share = dirty as f64 / total as f64;
    let drift_share = drifted as f64 / total as f64;
    assert!((0.08..=0.12).contains(&dirty_share), "dirty {dirty_share}");
    assert!(
        (0.035..=0.065).contains(&drift_share),
        "drift {drift_share}"
    );
    assert!(drift_names.len() >= 3, "{drift_names:?}");
    assert_eq!(reasons.len(), 3, "every kind of dirt: {reasons:?}");
    // The emulator's own tally agrees with the independent checker: no
    // "dirty" record that a decoder would accept.
    let stats = h.emulator.stats();
    assert_eq!(stats.dirty_records_served, dirty);
    assert_eq!(stats.drift_records_served, drifted);
    assert_eq!(stats.records_served, total);
}
