//! The error type of the models crate: what goes wrong computing with a model — the compute
//! device failing, a model output that is not finite — beside what goes wrong with files, inputs
//! and options ([`familiar::Error`], wrapped as [`Error::Core`]).
//!
//! A failing device is the user's to act on (a smaller batch, another device or another build
//! may do), not a bug in familiar: [`crate::model::transformer::candle_error`] sorts candle's
//! errors into [`Error::OutOfMemory`], [`Error::Device`] and (shapes, dtypes, indices: familiar's
//! own mistakes) [`familiar::Error::Bug`].

use std::path::Path;

/// Result alias of the models crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong measuring, training or attributing with a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The compute device ran out of memory (a GPU's memory, or an allocation on the host).
    #[error("out of memory on the device: {0}")]
    OutOfMemory(String),
    /// The compute device failed otherwise: a CUDA or Metal error, a backend this build lacks,
    /// tensors on different devices.
    #[error("device error: {0}")]
    Device(String),
    /// A model computed a value that is not finite (NaN or ±∞): its weights overflow in floating
    /// point or are damaged, or training diverged. The message names the item (query, document,
    /// probe, training step) and the value; see [`crate::model::finite`].
    #[error("non-finite model output: {0}")]
    NonFinite(String),
    /// Files, inputs, options and everything else below the models.
    #[error(transparent)]
    Core(#[from] familiar::Error),
}

impl Error {
    /// [`familiar::Error::Config`]: a setting out of range or contradictory.
    pub fn config(message: impl Into<String>) -> Error {
        Error::Core(familiar::Error::Config(message.into()))
    }

    /// [`familiar::Error::Query`]: a request that cannot be answered as asked.
    pub fn query(message: impl Into<String>) -> Error {
        Error::Core(familiar::Error::Query(message.into()))
    }

    /// [`familiar::Error::Conflict`]: an output directory that belongs to another run.
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::Core(familiar::Error::Conflict(message.into()))
    }

    /// [`familiar::Error::Bug`]: an invariant familiar should have kept.
    pub fn bug(message: impl Into<String>) -> Error {
        Error::Core(familiar::Error::Bug(message.into()))
    }

    /// [`familiar::Error::io`].
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Core(familiar::Error::io(path, source))
    }

    /// [`familiar::Error::corrupt`].
    pub fn corrupt(path: impl AsRef<Path>, reason: impl Into<String>) -> Error {
        Error::Core(familiar::Error::corrupt(path, reason))
    }

    /// [`familiar::Error::input`].
    pub fn input(path: impl AsRef<Path>, line: u64, reason: impl Into<String>) -> Error {
        Error::Core(familiar::Error::input(path, line, reason))
    }

    /// The wrapped [`familiar::Error`], if this is one.
    pub fn core(&self) -> Option<&familiar::Error> {
        match self {
            Error::Core(e) => Some(e),
            _ => None,
        }
    }
}
