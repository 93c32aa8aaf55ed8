//! The crate's error type.
//!
//! Every error that concerns a file carries its path, so that a batch run can
//! print one line per failed scan (`path: what went wrong`) and go on.

use std::path::{Path, PathBuf};

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem with one input or output file: unreadable, malformed or unsupported.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },

    /// An I/O failure on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An invalid argument or configuration value, with what to do about it.
    #[error("{0}")]
    Invalid(String),

    /// A tensor computation failed (shape mismatch, device error).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl Error {
    /// Builds a file-level error, shown as `path: message`.
    pub fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// Builds an I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// Builds an invalid-value error, with the fix in the message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }
}
