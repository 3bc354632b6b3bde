//! File checksums recorded in manifests: xxh3-64, written as `xxh3:<16 hex digits>`.

use std::io::Read;
use std::path::Path;

use crate::error::{IoContext, Result};

/// The checksum of a byte slice.
pub fn of_bytes(bytes: &[u8]) -> String {
    format!("xxh3:{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// The checksum and length of a file, read in a streaming pass.
pub fn of_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).at(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((format!("xxh3:{:016x}", hasher.digest()), len))
}
