//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong configuring or starting the emulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// The config file could not be read.
    #[error("cannot read the emulator config file {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file or text is not valid TOML for [`crate::EmulatorConfig`].
    #[error("invalid emulator config ({origin}): {message}")]
    InvalidConfig {
        /// Where the text came from (a path, or `TOML`).
        origin: String,
        /// The parser's message (names the key).
        message: String,
    },
    /// A switch has a value outside its range.
    #[error("invalid emulator setting `{key}`: {problem}")]
    InvalidSetting {
        /// The switch.
        key: String,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// An admin patch names a switch that does not exist.
    #[error("unknown setting `{key}`")]
    UnknownSetting {
        /// The unknown key.
        key: String,
    },
    /// An admin patch is not an object or has a value of the wrong type.
    #[error("invalid config patch: {0}")]
    InvalidPatch(String),
    /// The listening socket could not be bound or served.
    #[error("emulator I/O")]
    Io(#[from] std::io::Error),
}
