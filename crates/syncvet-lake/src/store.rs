//! Opening the object store named by the lake URL.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreScheme, RetryConfig};
use url::Url;

use crate::{LakeConfig, LakeError};

/// An opened store and the lake root inside it.
pub(crate) struct OpenedStore {
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
    /// Shown to people: the folder or the URL without credentials.
    pub display: String,
    /// The store delta-rs reads and commits through, and the lake root's URL
    /// and path in it: delta-rs resolves a table URL's path against the
    /// store's own root, so a local lake gives it the file system's root.
    pub delta_store: Arc<dyn ObjectStore>,
    pub delta_url: Url,
    pub delta_root: Path,
}

/// The URL with any user info and query (which may hold a SAS token) removed.
pub(crate) fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.has_host() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// True for something written as a path (`./lake`, `/srv/lake`, `C:\lake`)
/// rather than a URL.
fn is_plain_path(url: &str) -> bool {
    !url.contains("://") && !url.starts_with("file:")
}

fn retry_config(config: &LakeConfig) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(config.retry_max_backoff_secs.max(1)),
            base: 2.0,
        },
        max_retries: config.max_retries,
        retry_timeout: Duration::from_secs(config.retry_timeout_secs),
    }
}

pub(crate) fn open(config: &LakeConfig) -> Result<OpenedStore, LakeError> {
    config.validate()?;
    let shown = redact_url(&config.url);
    if is_plain_path(&config.url) {
        return open_local(std::path::Path::new(&config.url));
    }
    let invalid = |reason: String| LakeError::InvalidUrl {
        url: shown.clone(),
        reason,
    };
    let url = Url::parse(&config.url).map_err(|e| invalid(e.to_string()))?;
    if url.scheme() == "file" {
        if url
            .host_str()
            .is_some_and(|h| !h.is_empty() && h != "localhost")
        {
            return Err(invalid("a file URL is file:///absolute/path".into()));
        }
        let dir = url
            .to_file_path()
            .map_err(|()| invalid("not an absolute file path".into()))?;
        return open_local(&dir);
    }
    let scheme = url.scheme().to_owned();
    if !matches!(
        scheme.as_str(),
        "s3" | "s3a" | "az" | "azure" | "abfs" | "abfss" | "adl" | "gs"
    ) {
        return Err(LakeError::UnknownScheme { url: shown, scheme });
    }
    let (kind, root) = ObjectStoreScheme::parse(&url).map_err(|e| invalid(e.to_string()))?;
    let retry = retry_config(config);
    let store: Arc<dyn ObjectStore> = match kind {
        ObjectStoreScheme::AmazonS3 => {
            let b = AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_retry(retry);
            Arc::new(with_options(b, config, "S3", AmazonS3Builder::with_config)?.build()?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let b = MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry);
            Arc::new(with_options(b, config, "Azure", MicrosoftAzureBuilder::with_config)?.build()?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let b = GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry);
            Arc::new(
                with_options(b, config, "GCS", GoogleCloudStorageBuilder::with_config)?.build()?,
            )
        }
        _ => return Err(LakeError::UnknownScheme { url: shown, scheme }),
    };
    let mut delta_url = Url::parse(&shown).map_err(|e| invalid(e.to_string()))?;
    if !delta_url.path().ends_with('/') {
        delta_url.set_path(&format!("{}/", delta_url.path()));
    }
    Ok(OpenedStore {
        delta_store: store.clone(),
        delta_url,
        delta_root: root.clone(),
        store,
        root,
        display: shown,
    })
}

fn open_local(dir: &std::path::Path) -> Result<OpenedStore, LakeError> {
    let io = |source| LakeError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let dir = std::fs::canonicalize(dir).map_err(io)?;
    // Empty folders left by deleted files would look like partitions to a
    // folder-walking reader.
    let store = LocalFileSystem::new_with_prefix(&dir)?.with_automatic_cleanup(true);
    let delta_url = Url::from_directory_path(&dir).map_err(|()| LakeError::InvalidUrl {
        url: dir.display().to_string(),
        reason: "not an absolute folder".into(),
    })?;
    Ok(OpenedStore {
        store: Arc::new(store),
        root: Path::default(),
        display: dir.display().to_string(),
        delta_store: Arc::new(LocalFileSystem::new()),
        delta_root: Path::from_filesystem_path(&dir).map_err(|e| LakeError::InvalidUrl {
            url: dir.display().to_string(),
            reason: e.to_string(),
        })?,
        delta_url,
    })
}

/// Applies `[lake.options]` over what the builder read from the environment;
/// a key the store does not know is a configuration error naming it.
fn with_options<B, K: std::str::FromStr>(
    mut builder: B,
    config: &LakeConfig,
    store: &str,
    with_config: impl Fn(B, K, String) -> B,
) -> Result<B, LakeError> {
    for (key, value) in &config.options {
        let parsed = key.to_ascii_lowercase().parse().map_err(|_| {
            LakeError::InvalidConfig(format!(
                "option `{key}` is not an option of the {store} store"
            ))
        })?;
        builder = with_config(builder, parsed, value.clone());
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_and_file_urls_open_the_local_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/lake");
        let opened = open(&LakeConfig::with_url(dir.to_str().unwrap())).unwrap();
        assert!(dir.is_dir(), "the folder is created");
        assert_eq!(
            opened.delta_url.to_file_path().unwrap(),
            dir.canonicalize().unwrap()
        );
        let url = format!("file://{}", tmp.path().join("other").display());
        let opened = open(&LakeConfig::with_url(url)).unwrap();
        assert!(opened.display.ends_with("other"));
        assert!(
            opened.delta_url.as_str().ends_with("/other/"),
            "{}",
            opened.delta_url
        );
    }

    #[test]
    fn unknown_schemes_and_bad_urls_are_named() {
        let err = open(&LakeConfig::with_url("ftp://host/lake"))
            .err()
            .expect("fails");
        assert!(
            matches!(&err, LakeError::UnknownScheme { scheme, .. } if scheme == "ftp"),
            "{err}"
        );
        assert!(err.to_string().contains("ftp"));
        let err = open(&LakeConfig::with_url("file://remotehost/lake"))
            .err()
            .expect("fails");
        assert!(matches!(err, LakeError::InvalidUrl { .. }), "{err}");
    }

    #[test]
    fn cloud_urls_build_stores_with_the_prefix_as_root() {
        let mut c = LakeConfig::with_url("s3://bucket/some/prefix");
        c.options.insert("aws_region".into(), "us-east-1".into());
        c.options
            .insert("aws_endpoint".into(), "http://127.0.0.1:1".into());
        let opened = open(&c).unwrap();
        assert_eq!(opened.root.as_ref(), "some/prefix");
        assert_eq!(opened.delta_url.as_str(), "s3://bucket/some/prefix/");
        c.options.insert("no_such_option".into(), "x".into());
        let err = open(&c).err().expect("fails").to_string();
        assert!(err.contains("no_such_option"), "{err}");
        let mut az = LakeConfig::with_url("az://container/lake");
        az.options
            .insert("azure_storage_use_emulator".into(), "true".into());
        assert_eq!(open(&az).unwrap().root.as_ref(), "lake");
    }

    #[test]
    fn redaction_removes_user_info_and_query() {
        assert_eq!(
            redact_url("az://user:key@container/x?sig=abc"),
            "az://container/x"
        );
        assert_eq!(redact_url("./lake"), "./lake");
    }
}
