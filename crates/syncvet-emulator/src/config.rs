//! The emulator's switches: one serde struct, loaded from TOML, CLI flags and
//! `POST /__admin/config` (a JSON patch applied at once).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::EmulatorError;

/// The longest `change_lookback_days`: a century keeps every origin date a
/// date the ids can spell.
const MAX_CHANGE_LOOKBACK_DAYS: u32 = 36_525;

/// Every switch of the emulator (the contract's table, plus credentials and
/// data shape). Field names are the keys of the TOML file and of the admin
/// patch; the CLI flag of each is its kebab-case form (`--rate-limit-rps`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Data seed: the same seed gives the same sources, counts and bytes.
    pub seed: u64,
    /// How many PIMS sources (practices) there are: `p-0001`…
    pub pims_sources: u32,
    /// How many supplier sources there are: `s-0001`…
    pub supplier_sources: u32,
    /// Mean records per source per entity per day (entity weights and the
    /// source spread vary it around this mean).
    pub rows_per_day: u64,
    /// Ratio between the largest and the smallest source of a type
    /// (log-uniform in between); 1.0 makes every source the same size.
    pub spread: f64,
    /// The hidden rate limit: requests per second per client id (token
    /// bucket); 0 = no limit.
    pub rate_limit_rps: u32,
    /// Bucket size of the rate limit; 0 = the same as `rate_limit_rps`.
    pub burst: u32,
    /// The `Retry-After` (seconds) sent with a 429 of the token bucket or
    /// of the concurrency cap (at least 1 is sent).
    pub retry_after_secs: u64,
    /// Window limit: at most this many calls per client id per
    /// `window_secs`; 0 = no window limit.
    pub window_calls: u32,
    /// Length of the window of `window_calls`, in seconds.
    pub window_secs: u64,
    /// `false`: fixed windows aligned to the emulator's start (or to the
    /// last change of a limit switch); a 429's `Retry-After` is the rest of
    /// the window, rounded up. `true`: a trailing window; `Retry-After` is
    /// the time until its oldest call leaves it, rounded up.
    pub window_sliding: bool,
    /// Cap on the API requests in flight per client id; 0 = none.
    pub max_concurrent_requests: u32,
    /// A request is an early retry only if it arrived more than this many
    /// milliseconds after the 429 was sent (before that, the client could
    /// not have seen it).
    pub early_retry_grace_ms: u64,
    /// `expires_in` of issued tokens, in seconds; expired tokens get 401.
    pub token_ttl_secs: u64,
    /// Fraction (0..=1) of API requests answered 500.
    pub error_rate_500: f64,
    /// Fraction (0..=1) of API requests answered 503.
    pub error_rate_503: f64,
    /// Fraction (0..=1) of API requests answered 408.
    pub error_rate_408: f64,
    /// Fraction (0..=1) of API requests whose connection is closed with no
    /// response at all.
    pub drop_rate: f64,
    /// Fraction (0..=1) of 200 API bodies cut short: the full
    /// `Content-Length` is announced, part of the body sent, then the
    /// connection closed.
    pub truncate_rate: f64,
    /// Mean added latency of API requests in milliseconds (uniformly
    /// jittered over 0..2×mean); 0 = none.
    pub latency_ms: u64,
    /// A batch (source, entity, date) answers 202 this many times before it
    /// is ready.
    pub not_ready_polls: u32,
    /// Source ids whose batches are answered 403.
    pub forbidden_sources: Vec<String>,
    /// Fraction (0..=1) of records with a wrong type, an impossible date or
    /// a missing required field.
    pub dirty_rate: f64,
    /// Fraction (0..=1) of records with unknown extra keys (schema drift).
    pub drift_rate: f64,
    /// Fraction (0..=1) of a batch's records that are changed versions of
    /// records created on an earlier day: the same `id`, a `lastModified`
    /// within the batch date, other values drawn afresh.
    pub change_rate: f64,
    /// Fraction (0..=1) of a batch's records that are deletions of records
    /// created on an earlier day: that record's `id`, `"deleted": true`,
    /// the other fields present as in any record.
    pub delete_rate: f64,
    /// How many days back (1..=36525) the records changed or deleted in a
    /// batch were created: the day before the batch date at the latest.
    pub change_lookback_days: u32,
    /// Age in seconds after which a continuation token is expired (400
    /// `ContinuationTokenExpired`); 0 = tokens never expire and are a pure
    /// function of the position.
    pub continuation_ttl_secs: u64,
    /// The client id the token endpoint accepts.
    pub client_id: String,
    /// The client secret the token endpoint accepts (never in Debug output).
    pub client_secret: String,
    /// The scope the token endpoint accepts.
    pub scope: String,
    /// The largest `pageSize` accepted (more is a 400).
    pub max_page_size: u32,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            seed: 42,
            pims_sources: 3,
            supplier_sources: 1,
            rows_per_day: 200,
            spread: 100.0,
            rate_limit_rps: 0,
            burst: 0,
            retry_after_secs: 1,
            window_calls: 0,
            window_secs: 60,
            window_sliding: false,
            max_concurrent_requests: 0,
            early_retry_grace_ms: 100,
            token_ttl_secs: 3599,
            error_rate_500: 0.0,
            error_rate_503: 0.0,
            error_rate_408: 0.0,
            drop_rate: 0.0,
            truncate_rate: 0.0,
            latency_ms: 0,
            not_ready_polls: 0,
            forbidden_sources: Vec::new(),
            dirty_rate: 0.0,
            drift_rate: 0.0,
            change_rate: 0.10,
            delete_rate: 0.01,
            change_lookback_days: 90,
            continuation_ttl_secs: 0,
            client_id: "demo-client".into(),
            client_secret: "demo-secret".into(),
            scope: "https://consumerapi.sync.vet/.default".into(),
            max_page_size: 5000,
        }
    }
}

impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand so the client secret never reaches a log.
        f.debug_struct("EmulatorConfig")
            .field("seed", &self.seed)
            .field("pims_sources", &self.pims_sources)
            .field("supplier_sources", &self.supplier_sources)
            .field("rows_per_day", &self.rows_per_day)
            .field("spread", &self.spread)
            .field("rate_limit_rps", &self.rate_limit_rps)
            .field("burst", &self.burst)
            .field("retry_after_secs", &self.retry_after_secs)
            .field("window_calls", &self.window_calls)
            .field("window_secs", &self.window_secs)
            .field("window_sliding", &self.window_sliding)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("early_retry_grace_ms", &self.early_retry_grace_ms)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("error_rate_500", &self.error_rate_500)
            .field("error_rate_503", &self.error_rate_503)
            .field("error_rate_408", &self.error_rate_408)
            .field("drop_rate", &self.drop_rate)
            .field("truncate_rate", &self.truncate_rate)
            .field("latency_ms", &self.latency_ms)
            .field("not_ready_polls", &self.not_ready_polls)
            .field("forbidden_sources", &self.forbidden_sources)
            .field("dirty_rate", &self.dirty_rate)
            .field("drift_rate", &self.drift_rate)
            .field("change_rate", &self.change_rate)
            .field("delete_rate", &self.delete_rate)
            .field("change_lookback_days", &self.change_lookback_days)
            .field("continuation_ttl_secs", &self.continuation_ttl_secs)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scope", &self.scope)
            .field("max_page_size", &self.max_page_size)
            .finish()
    }
}

impl EmulatorConfig {
    /// Parses a TOML file's text; keys left out keep their defaults.
    pub fn from_toml(text: &str) -> Result<EmulatorConfig, EmulatorError> {
        let config: EmulatorConfig =
            toml::from_str(text).map_err(|e| EmulatorError::InvalidConfig {
                origin: "TOML".into(),
                message: e.message().to_owned(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values a user can get wrong (rates outside 0..=1, a fault
    /// mix or a change mix above 1, a zero page size, a spread below 1, a
    /// window of 0 s, a lookback of 0 days).
    pub fn validate(&self) -> Result<(), EmulatorError> {
        let invalid = |key: &str, problem: &str| {
            Err(EmulatorError::InvalidSetting {
                key: key.to_owned(),
                problem: problem.to_owned(),
            })
        };
        for (key, rate) in [
            ("error_rate_500", self.error_rate_500),
            ("error_rate_503", self.error_rate_503),
            ("error_rate_408", self.error_rate_408),
            ("drop_rate", self.drop_rate),
            ("truncate_rate", self.truncate_rate),
            ("dirty_rate", self.dirty_rate),
            ("drift_rate", self.drift_rate),
            ("change_rate", self.change_rate),
            ("delete_rate", self.delete_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return invalid(key, "must be a fraction between 0 and 1");
            }
        }
        if self.error_rate_500 + self.error_rate_503 + self.error_rate_408 + self.drop_rate > 1.0 {
            return invalid(
                "error_rate_500",
                "error_rate_500 + error_rate_503 + error_rate_408 + drop_rate must be at most 1",
            );
        }
        if self.change_rate + self.delete_rate > 1.0 {
            return invalid("change_rate", "change_rate + delete_rate must be at most 1");
        }
        if !(1..=MAX_CHANGE_LOOKBACK_DAYS).contains(&self.change_lookback_days) {
            return invalid(
                "change_lookback_days",
                "must be between 1 and 36525 days (100 years)",
            );
        }
        if !(self.spread >= 1.0 && self.spread.is_finite()) {
            return invalid("spread", "must be a finite ratio of at least 1.0");
        }
        if self.window_calls > 0 && self.window_secs == 0 {
            return invalid("window_secs", "must be at least 1 when window_calls is set");
        }
        if self.max_page_size == 0 {
            return invalid("max_page_size", "must be at least 1");
        }
        if self.client_id.is_empty() {
            return invalid("client_id", "must not be empty");
        }
        Ok(())
    }

    /// Applies a JSON object of switches (`{"drop_rate": 0.1}`) and returns
    /// the new configuration; an unknown key or a bad value is an error that
    /// names it, and leaves `self` as it was.
    pub fn patched(&self, patch: &serde_json::Value) -> Result<EmulatorConfig, EmulatorError> {
        let serde_json::Value::Object(patch) = patch else {
            return Err(EmulatorError::InvalidPatch(
                "the body must be a JSON object of switches".into(),
            ));
        };
        let mut current = serde_json::to_value(self).expect("the config serializes to JSON");
        let object = current.as_object_mut().expect("the config is an object");
        for (key, value) in patch {
            if !object.contains_key(key) {
                return Err(EmulatorError::UnknownSetting { key: key.clone() });
            }
            object.insert(key.clone(), value.clone());
        }
        let config: EmulatorConfig = serde_json::from_value(current)
            .map_err(|e| EmulatorError::InvalidPatch(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The names of every switch, as the TOML file and the admin patch use them.
    pub fn keys() -> Vec<String> {
        match serde_json::to_value(EmulatorConfig::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_the_secret() {
        let config = EmulatorConfig {
            client_secret: "hunter2-very-secret".into(),
            ..EmulatorConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("demo-client"));
    }

    #[test]
    fn an_empty_file_is_the_default() {
        assert_eq!(
            EmulatorConfig::from_toml("").unwrap(),
            EmulatorConfig::default()
        );
    }

    #[test]
    fn toml_keeps_defaults_for_missing_keys_and_rejects_unknown_ones() {
        let config = EmulatorConfig::from_toml("seed = 7\ndrop_rate = 0.25\n").unwrap();
        assert_eq!(config.seed, 7);
        assert_eq!(config.drop_rate, 0.25);
        assert_eq!(config.rows_per_day, 200);
        let err = EmulatorConfig::from_toml("drop_rat = 0.25\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("drop_rat"), "{err}");
        let err = EmulatorConfig::from_toml("dirty_rate = 2.0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dirty_rate"), "{err}");
    }

    #[test]
    fn patches_apply_known_keys_and_name_unknown_ones() {
        let base = EmulatorConfig::default();
        let next = base
            .patched(&serde_json::json!({"rate_limit_rps": 5, "forbidden_sources": ["p-0002"]}))
            .unwrap();
        assert_eq!(next.rate_limit_rps, 5);
        assert_eq!(next.forbidden_sources, vec!["p-0002".to_owned()]);
        let err = base
            .patched(&serde_json::json!({"rate_limit": 5}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate_limit"), "{err}");
        assert!(base.patched(&serde_json::json!({"seed": "x"})).is_err());
        assert!(
            base.patched(&serde_json::json!({"drop_rate": 1.5}))
                .is_err()
        );
    }

    #[test]
    fn limit_switches_default_patch_and_validate() {
        let base = EmulatorConfig::default();
        assert_eq!(
            (
                base.window_calls,
                base.window_secs,
                base.window_sliding,
                base.max_concurrent_requests,
                base.early_retry_grace_ms
            ),
            (0, 60, false, 0, 100)
        );
        let next = base
            .patched(&serde_json::json!({
                "window_calls": 10, "window_secs": 5, "window_sliding": true,
                "max_concurrent_requests": 4, "early_retry_grace_ms": 250
            }))
            .unwrap();
        assert_eq!(
            (
                next.window_calls,
                next.window_secs,
                next.window_sliding,
                next.max_concurrent_requests,
                next.early_retry_grace_ms
            ),
            (10, 5, true, 4, 250)
        );
        let err = base
            .patched(&serde_json::json!({"window_calls": 10, "window_secs": 0}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("window_secs"), "{err}");
        assert!(base.patched(&serde_json::json!({"window_secs": 0})).is_ok());
        let shown = format!("{next:?}");
        assert!(
            shown.contains("window_sliding: true") && shown.contains("early_retry_grace_ms: 250"),
            "{shown}"
        );
        let toml = EmulatorConfig::from_toml("window_calls = 3\nwindow_sliding = true\n").unwrap();
        assert_eq!(
            (toml.window_calls, toml.window_secs, toml.window_sliding),
            (3, 60, true)
        );
    }

    #[test]
    fn evolution_switches_default_patch_and_validate_naming_the_key() {
        let base = EmulatorConfig::default();
        assert_eq!(
            (
                base.change_rate,
                base.delete_rate,
                base.change_lookback_days
            ),
            (0.10, 0.01, 90)
        );
        let next = base
            .patched(&serde_json::json!({
                "change_rate": 0.3, "delete_rate": 0.05, "change_lookback_days": 7
            }))
            .unwrap();
        assert_eq!(
            (
                next.change_rate,
                next.delete_rate,
                next.change_lookback_days
            ),
            (0.3, 0.05, 7)
        );
        let shown = format!("{next:?}");
        assert!(
            shown.contains("change_rate: 0.3")
                && shown.contains("delete_rate: 0.05")
                && shown.contains("change_lookback_days: 7"),
            "{shown}"
        );
        for (patch, key) in [
            (serde_json::json!({"change_rate": 1.5}), "change_rate"),
            (serde_json::json!({"change_rate": -0.1}), "change_rate"),
            (serde_json::json!({"delete_rate": 2.0}), "delete_rate"),
            (
                serde_json::json!({"change_rate": 0.7, "delete_rate": 0.4}),
                "change_rate",
            ),
            (
                serde_json::json!({"change_lookback_days": 0}),
                "change_lookback_days",
            ),
            (
                serde_json::json!({"change_lookback_days": 40_000}),
                "change_lookback_days",
            ),
        ] {
            let err = base.patched(&patch).unwrap_err().to_string();
            assert!(err.contains(key), "{patch}: {err}");
        }
        assert!(
            base.patched(&serde_json::json!({"change_rate": 0.99, "delete_rate": 0.01}))
                .is_ok()
        );
        let toml = EmulatorConfig::from_toml("change_rate = 0.0\ndelete_rate = 0.0\n").unwrap();
        assert_eq!(
            (
                toml.change_rate,
                toml.delete_rate,
                toml.change_lookback_days
            ),
            (0.0, 0.0, 90)
        );
        let err = EmulatorConfig::from_toml("change_lookback_days = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("change_lookback_days"), "{err}");
    }

    #[test]
    fn every_contract_switch_is_a_key() {
        let keys = EmulatorConfig::keys();
        for key in [
            "seed",
            "pims_sources",
            "supplier_sources",
            "rows_per_day",
            "rate_limit_rps",
            "burst",
            "retry_after_secs",
            "window_calls",
            "window_secs",
            "window_sliding",
            "max_concurrent_requests",
            "early_retry_grace_ms",
            "token_ttl_secs",
            "error_rate_500",
            "error_rate_503",
            "error_rate_408",
            "drop_rate",
            "truncate_rate",
            "latency_ms",
            "not_ready_polls",
            "forbidden_sources",
            "dirty_rate",
            "drift_rate",
            "change_rate",
            "delete_rate",
            "change_lookback_days",
            "continuation_ttl_secs",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing");
        }
    }
}
