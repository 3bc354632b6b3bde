//! The error type of the shared library.
//!
//! Bad input (a corrupt file, a malformed corpus line, a query naming unknown tokens) is kept apart
//! from bugs in familiar itself ([`Error::Bug`]): the first is the user's to fix and the message says
//! where; the second is ours.

use std::path::{Path, PathBuf};

/// Result alias used throughout familiar.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading or writing familiar's files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on a file.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (shown in the message, so not also chained as a source).
        error: std::io::Error,
    },
    /// A file does not start with the magic bytes familiar writes.
    #[error("{}: not a familiar {expected} file (magic bytes {got:02x?})", path.display())]
    Magic {
        /// The file.
        path: PathBuf,
        /// What kind of file was expected.
        expected: String,
        /// The bytes found.
        got: Vec<u8>,
    },
    /// A file was written by a format version this build cannot read.
    #[error(
        "{}: format version {got} is not readable by this build (reads versions {oldest} to {current})",
        path.display()
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        got: u32,
        /// The oldest version this build reads.
        oldest: u32,
        /// The version this build writes.
        current: u32,
    },
    /// A file is shorter or longer than its header or manifest says.
    #[error("{}: {actual} bytes on disk but {expected} expected (truncated or appended to)", path.display())]
    Size {
        /// The file.
        path: PathBuf,
        /// Size the header or manifest implies.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// A checksum does not match the manifest.
    #[error("{}: checksum {got} does not match {expected} recorded in the manifest", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Recorded checksum.
        expected: String,
        /// Computed checksum.
        got: String,
    },
    /// A file's contents are inconsistent.
    #[error("{}: corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
    /// An input record is malformed (a corpus record, a query, an item …). `line` is 1-based (a
    /// row number for Parquet).
    #[error("{}: {reason}", location(path, *line))]
    Input {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line (JSONL) or row (Parquet) number; 0 when the whole file is at fault.
        line: u64,
        /// What was expected.
        reason: String,
    },
    /// A tokenizer could not be loaded or used.
    #[error("tokenizer {}: {reason}", path.display())]
    Tokenizer {
        /// The tokenizer.json.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A tokenizer differs from the one an index was built with.
    #[error(
        "tokenizer {} has hash {given}, but the index was built with a tokenizer of hash {index}",
        path.display()
    )]
    TokenizerMismatch {
        /// The tokenizer the user gave.
        path: PathBuf,
        /// Hash recorded by the index.
        index: String,
        /// Hash of the given tokenizer.
        given: String,
    },
    /// A query that cannot be answered as asked (unknown token ids, empty input, …).
    #[error("invalid query: {0}")]
    Query(String),
    /// A user-supplied setting is out of range or contradictory.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An output directory that belongs to another run, or holds something else.
    #[error("{0}")]
    Conflict(String),
    /// A long job stopped because its caller asked it to (what was finished is kept).
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A bug in familiar: an invariant that the code itself should have kept.
    #[error("internal error (a bug in familiar, please report it): {0}")]
    Bug(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            error: source,
        }
    }

    /// A corrupt-file error.
    pub fn corrupt(path: impl AsRef<Path>, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }

    /// A malformed-corpus-record error.
    pub fn input(path: impl AsRef<Path>, line: u64, reason: impl Into<String>) -> Error {
        Error::Input {
            path: path.as_ref().to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
}

/// `path:line`, or `path` alone for line 0 (the whole file).
fn location(path: &Path, line: u64) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}", path.display())
    }
}

/// Adds the path to an `io::Result`.
pub trait IoContext<T> {
    /// Maps the error to [`Error::Io`] naming `path`.
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
