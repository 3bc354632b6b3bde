//! File checksums recorded in manifests: xxh3-64, written as `xxh3:<16 hex digits>`.

use std::io::Read;
use std::path::Path;

use crate::error::{IoContext, Result};

/// A 64-bit xxh3 digest written as a checksum: `xxh3:<16 hex digits>`.
pub fn format(digest: u64) -> String {
    format!("xxh3:{digest:016x}")
}

/// The checksum of a byte slice.
pub fn of_bytes(bytes: &[u8]) -> String {
    format(xxhash_rust::xxh3::xxh3_64(bytes))
}

/// The xxh3 digest and length of everything `reader` yields, read in 1 MiB blocks;
/// `on_read(n)` is told of each block (progress counters). `path` names the source in errors.
pub fn hash_reader(
    reader: &mut impl Read,
    path: &Path,
    mut on_read: impl FnMut(u64),
) -> Result<(u64, u64)> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = reader.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
        on_read(n as u64);
    }
    Ok((hasher.digest(), len))
}

/// The checksum and length of a file, read in a streaming pass.
pub fn of_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).at(path)?;
    let (digest, len) = hash_reader(&mut f, path, |_| {})?;
    Ok((format(digest), len))
}
