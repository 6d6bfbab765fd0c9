//! The `[lake]` section of the configuration.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::LakeError;

/// Where and how the lake is written (`[lake]` in the config file).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LakeConfig {
    /// Root of the lake: a plain path (created if missing), `file:///abs/path`,
    /// `s3://bucket/prefix`, `az://container/prefix`,
    /// `abfs://container@account.dfs.core.windows.net/prefix` or `gs://bucket/prefix`.
    /// Credentials and endpoints come from the environment as object_store
    /// reads them (`AWS_*`, `AZURE_*`, `GOOGLE_*`) and from `options`.
    pub url: String,
    /// Rows per Parquet row group; one row group per file is what the writer
    /// holds in memory.
    pub row_group_rows: usize,
    /// A data file is closed and the next one started once it reaches this
    /// size (checked after each row group, so files end slightly larger).
    pub max_file_bytes: u64,
    /// Parts of one file uploaded at the same time.
    pub upload_concurrency: usize,
    /// zstd compression level of the Parquet pages (1..=22). 1 by default:
    /// on dictionary-encoded pages it compresses as well as 3 (1.1M
    /// `patients`: 66.7 MB against 68.0 MB) and the run is 11% faster;
    /// readers decompress every level at the same speed.
    pub zstd_level: i32,
    /// How long a failing store request is retried (connection refused,
    /// 5xx, 429) before the error surfaces.
    pub retry_timeout_secs: u64,
    /// The longest pause between two retries of a store request.
    pub retry_max_backoff_secs: u64,
    /// The most retries of one store request.
    pub max_retries: usize,
    /// A run commits the batches it finishes in groups: once the oldest
    /// waiting batch has waited this long (and at the end of the run). A
    /// crash loses at most this much work, which the re-run redoes; the
    /// commits per table in a night are about the night's length over this.
    pub commit_interval_secs: f64,
    /// ... or once this many batches are waiting, whichever comes first.
    pub commit_group_batches: usize,
    /// A run maintains the tables it wrote (see `syncvet-etl maintain`):
    /// between group commits, days with 64 small files are compacted; once
    /// its batches are committed, the days it landed, then vacuum.
    pub maintain_after_run: bool,
    /// The files a run compacts: those under this size, whose number is
    /// what slows readers and whose rewrite costs little. Bigger ones (a
    /// large practice's batch) are left to `syncvet-etl maintain`, which
    /// compacts every file under `max_file_bytes`: rewriting them in every
    /// run would double its Parquet work (4 sources of 250k records:
    /// 180k records/s against 317k).
    pub run_compacts_below_bytes: u64,
    /// `maintain` vacuums the files that no table version of this many
    /// past hours refers to: readers can time-travel this far back, and a
    /// writer's files not yet committed are never this old. Shorter than
    /// the longest run is unsafe.
    pub vacuum_retention_hours: f64,
    /// object_store options (`aws_endpoint`, `azure_storage_account_key`, …),
    /// applied over the environment. Values are never logged.
    pub options: BTreeMap<String, String>,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            url: "./lake".into(),
            row_group_rows: 65_536,
            max_file_bytes: 256 * 1024 * 1024,
            upload_concurrency: 2,
            zstd_level: 1,
            retry_timeout_secs: 120,
            retry_max_backoff_secs: 5,
            max_retries: 60,
            commit_interval_secs: 60.0,
            commit_group_batches: 1000,
            maintain_after_run: true,
            run_compacts_below_bytes: 8 * 1024 * 1024,
            vacuum_retention_hours: 7.0 * 24.0,
            options: BTreeMap::new(),
        }
    }
}

impl LakeConfig {
    /// A default config writing to `url`.
    pub fn with_url(url: impl Into<String>) -> Self {
        LakeConfig {
            url: url.into(),
            ..LakeConfig::default()
        }
    }

    /// Checks the values without touching the store.
    pub fn validate(&self) -> Result<(), LakeError> {
        let bad = |m: String| Err(LakeError::InvalidConfig(m));
        if self.url.trim().is_empty() {
            return bad("url is empty".into());
        }
        if self.row_group_rows == 0 {
            return bad("row_group_rows must be at least 1".into());
        }
        if self.max_file_bytes == 0 {
            return bad("max_file_bytes must be at least 1".into());
        }
        if !(self.commit_interval_secs >= 0.0 && self.commit_interval_secs.is_finite()) {
            return bad(format!(
                "commit_interval_secs is {}, must be a number of seconds >= 0",
                self.commit_interval_secs
            ));
        }
        if !(self.vacuum_retention_hours >= 0.0 && self.vacuum_retention_hours.is_finite()) {
            return bad(format!(
                "vacuum_retention_hours is {}, must be a number of hours >= 0",
                self.vacuum_retention_hours
            ));
        }
        if self.commit_group_batches == 0 {
            return bad("commit_group_batches must be at least 1".into());
        }
        if self.upload_concurrency == 0 {
            return bad("upload_concurrency must be at least 1".into());
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad(format!(
                "zstd_level is {}, must be 1 to 22",
                self.zstd_level
            ));
        }
        Ok(())
    }
}

/// Option values may be keys or secrets: show the keys only.
impl fmt::Debug for LakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LakeConfig")
            .field("url", &crate::store::redact_url(&self.url))
            .field("row_group_rows", &self.row_group_rows)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("upload_concurrency", &self.upload_concurrency)
            .field("zstd_level", &self.zstd_level)
            .field("retry_timeout_secs", &self.retry_timeout_secs)
            .field("retry_max_backoff_secs", &self.retry_max_backoff_secs)
            .field("max_retries", &self.max_retries)
            .field("commit_interval_secs", &self.commit_interval_secs)
            .field("commit_group_batches", &self.commit_group_batches)
            .field("maintain_after_run", &self.maintain_after_run)
            .field("run_compacts_below_bytes", &self.run_compacts_below_bytes)
            .field("vacuum_retention_hours", &self.vacuum_retention_hours)
            .field(
                "options",
                &self
                    .options
                    .keys()
                    .map(|k| (k.as_str(), "<redacted>"))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design_and_unknown_keys_are_refused() {
        let c: LakeConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, LakeConfig::default());
        assert_eq!(c.url, "./lake");
        assert_eq!(c.row_group_rows, 65_536);
        assert_eq!(c.max_file_bytes, 268_435_456);
        c.validate().unwrap();
        let err = serde_json::from_str::<LakeConfig>(r#"{"row_group_size": 1}"#).unwrap_err();
        assert!(err.to_string().contains("row_group_size"), "{err}");
    }

    #[test]
    fn validate_names_the_bad_value() {
        let mut c = LakeConfig {
            upload_concurrency: 0,
            ..LakeConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("upload_concurrency")
        );
        c.upload_concurrency = 2;
        c.zstd_level = 30;
        assert!(c.validate().unwrap_err().to_string().contains("zstd_level"));
    }

    #[test]
    fn debug_hides_option_values_and_url_credentials() {
        let mut c = LakeConfig::with_url("s3://user:pw-secret@bucket/prefix");
        c.options
            .insert("aws_secret_access_key".into(), "s3cr3t-value".into());
        let shown = format!("{c:?}");
        assert!(shown.contains("aws_secret_access_key"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("pw-secret"), "{shown}");
    }
}
