use syncvet_client::ClientError;
use syncvet_lake::LakeError;
use syncvet_model::CatalogError;

/// Why a run could not start or had to stop as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// A configuration value is wrong; `key` is its dotted name (`sync.concurrency`).
    #[error("config{}: {problem}", if key.is_empty() { String::new() } else { format!(" key `{key}`") })]
    Config {
        /// The dotted key, empty when the error is about the file as a whole.
        key: String,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// The entity catalog could not be loaded.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The API refused the credentials or could not be reached at start.
    #[error("API")]
    Api(#[from] ClientError),
    /// The lake could not be opened or read.
    #[error("lake")]
    Lake(#[from] LakeError),
    /// The in-process emulator or the daemon's HTTP endpoint could not start.
    #[error("{what}")]
    Io {
        /// What was being started.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The daemon's cron scheduler failed.
    #[error("the cron scheduler")]
    Scheduler(#[source] tokio_cron_scheduler::JobSchedulerError),
    /// `report` was asked for a run that the lake does not hold.
    #[error("no run report `{0}` in the lake")]
    NoSuchRun(String),
}

impl RunnerError {
    pub(crate) fn config(key: &str, problem: impl Into<String>) -> RunnerError {
        RunnerError::Config {
            key: key.into(),
            problem: problem.into(),
        }
    }
}
