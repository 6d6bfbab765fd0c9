use std::path::PathBuf;

/// A catalog file that cannot be used, with enough detail to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The catalog folder or one of its files could not be read.
    #[error("cannot read catalog file {path}")]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid TOML or does not have the catalog's shape.
    #[error("catalog file {file}: {message}")]
    Parse {
        /// The file, as given or as embedded (`embedded:pims/patients.toml`).
        file: String,
        /// What the TOML parser said, with the line and the key.
        message: String,
    },
    /// A field of an entity is wrong.
    #[error("catalog file {file}: field `{field}`: {problem}")]
    Field {
        /// The file.
        file: String,
        /// The field's JSON key.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The entity as a whole is wrong (a bad name, two fields with one column).
    #[error("catalog file {file}: {problem}")]
    Entity {
        /// The file.
        file: String,
        /// What is wrong.
        problem: String,
    },
}

/// A page whose `items` cannot be read at all. A bad record never causes
/// one: it becomes a [`Reject`](crate::Reject) and the rest of the page is kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not UTF-8 text.
    #[error("the page's items are not UTF-8 (invalid byte at offset {valid_up_to})")]
    NotUtf8 {
        /// How many bytes from the start are valid.
        valid_up_to: usize,
    },
    /// The text is JSON of another shape than an array (or empty).
    #[error("the page's items are not a JSON array but {found}")]
    NotAnArray {
        /// What was found instead (`an object`, `nothing`…).
        found: &'static str,
    },
    /// The text is not valid JSON (truncated, a stray byte, trailing data).
    #[error("the page's items are not valid JSON")]
    Malformed(#[from] serde_json::Error),
    /// The columns could not be assembled into the entity's schema (a bug).
    #[error("cannot assemble the Arrow batch")]
    Batch(#[from] arrow::error::ArrowError),
}

/// An error and its causes on one line (`outer: cause: cause`): how an
/// error becomes text for a person, in a report, a log line or the exit
/// message. Every error of the workspace names only its own level in its
/// `Display` and keeps its cause as `source()`, so each cause is printed
/// once. It lives in this crate because it is the one every crate that
/// writes errors as text (lake, runner, binary) depends on.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_each_cause_once() {
        let io = std::io::Error::other("disk full");
        let error = CatalogError::Read {
            path: "pims/patients.toml".into(),
            source: io,
        };
        assert_eq!(
            Chain(&error).to_string(),
            "cannot read catalog file pims/patients.toml: disk full"
        );
    }
}
