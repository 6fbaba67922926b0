//! The one error type of the crate (mapped to Python exceptions in `python.rs`).
use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug)]
pub enum Error {
    /// An invalid argument or value (mapped to `ValueError`).
    Invalid(String),
    /// A file of a saved store is missing, truncated, corrupt or mismatched
    /// (mapped to `ValueError`, or `FileNotFoundError` when `missing`).
    Format { file: PathBuf, msg: String, missing: bool },
    /// An operating-system error while reading or writing `path` (mapped to `OSError`).
    Io { path: PathBuf, err: std::io::Error },
    /// An allocation the request needs is larger than this machine's memory or
    /// failed (mapped to `MemoryError`); nothing was changed.
    Memory(String),
    /// `save` refused to replace `path` because it is not a store nor an empty
    /// directory (mapped to `FileExistsError`); nothing was changed.
    Exists { path: PathBuf, msg: String },
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    pub(crate) fn format(file: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { file: file.into(), msg: msg.into(), missing: false }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io { path: path.into(), err }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(m) => write!(f, "{m}"),
            Error::Format { file, msg, .. } => write!(f, "{}: {msg}", file.display()),
            Error::Io { path, err } => write!(f, "{}: {err}", path.display()),
            Error::Memory(m) => write!(f, "{m}"),
            Error::Exists { path, msg } => write!(f, "{}: {msg}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::Invalid(format!($($arg)*))) };
}
pub(crate) use bail;
