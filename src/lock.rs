//! Directories that one run owns: an index build's `--out`, a gradient store, a training or
//! experiment run directory. [`DirLock::acquire`] takes an exclusive advisory lock (`flock`) on
//! `DIR/.familiar-lock`, which holds the owner's process id, so a second run into the same
//! directory fails at once with "in use by process N" instead of interleaving its files with the
//! first's. The lock is the kernel's: it ends with the process however the process ends (a
//! crash or `kill -9` leaves no stale lock), and the file is removed when the guard is dropped.
//!
//! ```no_run
//! # fn main() -> familiar::Result<()> {
//! let dir = std::path::Path::new("index");
//! std::fs::create_dir_all(dir).unwrap();
//! let _lock = familiar::lock::DirLock::acquire(dir, "index build")?;
//! // ... write into `dir` ...
//! # Ok(()) }
//! ```

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The lock file's name inside a locked directory. Readers and "is this directory empty?"
/// checks ignore it.
pub const LOCK_FILE: &str = ".familiar-lock";

/// Whether a directory entry is familiar's lock file (ignored by emptiness checks).
pub fn is_lock_file(name: &std::ffi::OsStr) -> bool {
    name == LOCK_FILE
}

/// An exclusive lock on a directory, released (and its file removed) on drop.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    /// Locks `dir` (which must exist) for `what` (e.g. "index build"). Fails with
    /// [`Error::Config`] naming the directory and the owner's process id when another process
    /// holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        // A holder that is releasing removes the file after we opened it; then our lock is on
        // a file nobody else will see, so try again on the new one.
        for _ in 0..100 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let mut owner = String::new();
                    let _ = file.read_to_string(&mut owner);
                    let owner = owner.trim();
                    let by = if owner.is_empty() {
                        "another process".to_string()
                    } else {
                        format!("process {owner}")
                    };
                    return Err(Error::Config(format!(
                        "{} is in use by {by} (another {what} or run writing into it; its lock is {}); \
                         wait for it to finish or choose another directory",
                        dir.display(),
                        path.display()
                    )));
                }
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            if !same_file(&file, &path) {
                continue;
            }
            file.set_len(0).map_err(|e| Error::io(&path, e))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| Error::io(&path, e))?;
            writeln!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
            return Ok(DirLock { file, path });
        }
        Err(Error::Config(format!(
            "{}: could not take the lock (it kept being replaced)",
            path.display()
        )))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Remove while still holding the lock, so that whoever opens the path next gets a new
        // file (and whoever opened the old one sees that it was replaced).
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_naming_the_owner_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(dir.path(), "test").unwrap();
        let e = DirLock::acquire(dir.path(), "test")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("in use by process {}", std::process::id())),
            "{e}"
        );
        drop(a);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let _b = DirLock::acquire(dir.path(), "test").unwrap();
    }

    #[test]
    fn missing_directory_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = DirLock::acquire(&dir.path().join("nope"), "test")
            .unwrap_err()
            .to_string();
        assert!(e.contains(".familiar-lock"), "{e}");
    }
}
