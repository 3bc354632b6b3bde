//! The binary file format shared by every array file of an index.
//!
//! Each file is a 64-byte little-endian header followed by `count` elements of `width` bits,
//! packed little-endian (element `i` occupies bits `i·width .. (i+1)·width` of the body):
//!
//! | bytes  | field                                                         |
//! |--------|---------------------------------------------------------------|
//! | 0..8   | magic `FAMILIAR`                                              |
//! | 8..12  | kind: `TOKS` tokens, `SUFA` suffix array, `DOCO` doc offsets, `GRAD` gradient rows, `MOMS` gradient moments, `HFAC` output-head factor, `KRON` Kronecker factors, `EKFC` fitted EK-FAC |
//! | 12..16 | format version (u32)                                          |
//! | 16..20 | element width in bits (u32): tokens and gradient rows 16 or 32; moments and the head factor 64; others 1..=57 |
//! | 20..24 | flags (u32, zero in version 1)                                |
//! | 24..32 | element count (u64)                                           |
//! | 32..40 | `aux0` (u64): tokens: separator id; SA, offsets: text length; gradients: row length |
//! | 40..48 | `aux1` (u64): tokens: vocabulary size; offsets, gradients: first doc id |
//! | 48..56 | xxh3-64 of bytes 0..48, so a damaged header is caught at open |
//! | 56..64 | zero                                                          |
//!
//! Nothing is guessed from the file size: the header says what the file holds, and opening checks
//! that the size agrees exactly. The full specification is `schemas/index-format.md`.

use std::path::Path;

use crate::error::{Error, Result};

/// Magic bytes at the start of every array file.
pub const MAGIC: &[u8; 8] = b"FAMILIAR";
/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 1;
/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// Size of the header in bytes; the data that follows starts 64-byte aligned.
pub const HEADER_LEN: usize = 64;

/// Which array a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Token ids of the shard's documents, each followed by the separator.
    Tokens,
    /// Suffix array: token positions in the lexicographic order of their suffixes.
    SuffixArray,
    /// Start position of each document, plus the text length as a final entry.
    DocOffsets,
    /// Projected gradients of a gradient store: rows of f16 or f32.
    Gradients,
    /// Per-layer sums of outer products of a gradient store's rows (f64).
    Moments,
    /// Per-token sums of squared output gradients of a gradient store's output head (f64).
    HeadFactor,
    /// Per-layer token sums of the outer products of a gradient store's projected inputs and
    /// projected output gradients (f64): EK-FAC's Kronecker factors.
    KronFactors,
    /// A gradient store's fitted EK-FAC: per layer the Kronecker eigenbases and corrected
    /// eigenvalues (f64).
    Ekfac,
    /// A gradient store's optimizer correction: per layer the scales of the inputs and of the
    /// output gradients from the optimizer's second moment (f64).
    OptimizerScales,
}

impl FileKind {
    /// The 4-byte tag stored in the header.
    pub fn tag(self) -> [u8; 4] {
        match self {
            FileKind::Tokens => *b"TOKS",
            FileKind::SuffixArray => *b"SUFA",
            FileKind::DocOffsets => *b"DOCO",
            FileKind::Gradients => *b"GRAD",
            FileKind::Moments => *b"MOMS",
            FileKind::HeadFactor => *b"HFAC",
            FileKind::KronFactors => *b"KRON",
            FileKind::Ekfac => *b"EKFC",
            FileKind::OptimizerScales => *b"OPTS",
        }
    }

    /// Human-readable name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Tokens => "token",
            FileKind::SuffixArray => "suffix-array",
            FileKind::DocOffsets => "document-offset",
            FileKind::Gradients => "gradient",
            FileKind::Moments => "gradient-moment",
            FileKind::HeadFactor => "output-head factor",
            FileKind::KronFactors => "Kronecker-factor",
            FileKind::Ekfac => "EK-FAC",
            FileKind::OptimizerScales => "optimizer-correction",
        }
    }
}

/// The header of an array file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the file holds.
    pub kind: FileKind,
    /// Format version the file was written with.
    pub version: u32,
    /// Bytes per element.
    pub width: u32,
    /// Number of elements.
    pub count: u64,
    /// Kind-specific value (see the module docs).
    pub aux0: u64,
    /// Kind-specific value (see the module docs).
    pub aux1: u64,
}

impl Header {
    /// A header for the current format version.
    pub fn new(kind: FileKind, width: u32, count: u64, aux0: u64, aux1: u64) -> Header {
        Header {
            kind,
            version: FORMAT_VERSION,
            width,
            count,
            aux0,
            aux1,
        }
    }

    /// Serializes the header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.kind.tag());
        b[12..16].copy_from_slice(&self.version.to_le_bytes());
        b[16..20].copy_from_slice(&self.width.to_le_bytes());
        // 20..24: flags, zero.
        b[24..32].copy_from_slice(&self.count.to_le_bytes());
        b[32..40].copy_from_slice(&self.aux0.to_le_bytes());
        b[40..48].copy_from_slice(&self.aux1.to_le_bytes());
        let check = xxhash_rust::xxh3::xxh3_64(&b[0..48]);
        b[48..56].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Total file length this header implies, or `None` on overflow.
    pub fn file_len(&self) -> Option<u64> {
        let body = (u128::from(self.count) * u128::from(self.width)).div_ceil(8);
        u64::try_from(body).ok()?.checked_add(HEADER_LEN as u64)
    }

    /// Parses and checks the header at the start of `file`, whose full contents are `file`.
    ///
    /// Checks magic, kind, version, header checksum, and that `file.len()` is exactly what the
    /// header implies. `path` is only used for error messages.
    pub fn parse(file: &[u8], expected: FileKind, path: &Path) -> Result<Header> {
        if file.len() < HEADER_LEN {
            return Err(Error::Size {
                path: path.to_path_buf(),
                expected: HEADER_LEN as u64,
                actual: file.len() as u64,
            });
        }
        let b = &file[..HEADER_LEN];
        if &b[0..8] != MAGIC || b[8..12] != expected.tag() {
            return Err(Error::Magic {
                path: path.to_path_buf(),
                expected: expected.name().to_string(),
                got: b[0..12].to_vec(),
            });
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let version = u32_at(12);
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::Version {
                path: path.to_path_buf(),
                got: version,
                oldest: OLDEST_READABLE_VERSION,
                current: FORMAT_VERSION,
            });
        }
        let stored_check = u64_at(48);
        let check = xxhash_rust::xxh3::xxh3_64(&b[0..48]);
        if stored_check != check {
            return Err(Error::corrupt(
                path,
                "header checksum mismatch (the first 64 bytes are damaged)",
            ));
        }
        if b[56..64].iter().any(|&x| x != 0) {
            return Err(Error::corrupt(
                path,
                "reserved header bytes 56..64 are not zero",
            ));
        }
        let flags = u32_at(20);
        if flags != 0 {
            return Err(Error::corrupt(
                path,
                format!("unknown header flags {flags:#x}"),
            ));
        }
        let width = u32_at(16);
        if !(1..=64).contains(&width) {
            return Err(Error::corrupt(
                path,
                format!("element width {width} is not between 1 and 64 bits"),
            ));
        }
        let header = Header {
            kind: expected,
            version,
            width,
            count: u64_at(24),
            aux0: u64_at(32),
            aux1: u64_at(40),
        };
        let expected_len = header
            .file_len()
            .ok_or_else(|| Error::corrupt(path, "element count overflows the file size"))?;
        if expected_len != file.len() as u64 {
            return Err(Error::Size {
                path: path.to_path_buf(),
                expected: expected_len,
                actual: file.len() as u64,
            });
        }
        Ok(header)
    }
}

/// The fewest bits (at least 1) that hold every value in `0..=max`.
pub fn bits_for(max: u64) -> u32 {
    (64 - max.leading_zeros()).max(1)
}

/// The widest element a [`PackedArray`] reads with one unaligned 8-byte load (bit shift ≤ 7).
pub const MAX_PACKED_BITS: u32 = 57;

/// An array of unsigned integers of `width` bits each, packed little-endian, behind a header.
///
/// Generic over its bytes, so the caller owns the memory map and this type needs no `unsafe`.
/// Used for the suffix array and the document offsets, both stored at the narrowest width that
/// holds their largest value (28 bits for a 153 M-token shard instead of 4 bytes).
#[derive(Debug, Clone)]
pub struct PackedArray<D> {
    data: D,
    header: Header,
    mask: u64,
}

impl<D: AsRef<[u8]>> PackedArray<D> {
    /// Opens an array file's bytes, checking the header.
    pub fn new(data: D, kind: FileKind, path: &Path) -> Result<Self> {
        let header = Header::parse(data.as_ref(), kind, path)?;
        if header.width > MAX_PACKED_BITS {
            return Err(Error::corrupt(
                path,
                format!(
                    "element width {} bits exceeds {MAX_PACKED_BITS}",
                    header.width
                ),
            ));
        }
        // One encoding per array: the unused high bits of the last byte must be zero.
        let used = (u128::from(header.count) * u128::from(header.width) % 8) as u32;
        if used != 0 {
            if let Some(&last) = data.as_ref().last() {
                if last >> used != 0 {
                    return Err(Error::corrupt(
                        path,
                        "padding bits after the last element are not zero",
                    ));
                }
            }
        }
        let mask = (1u64 << header.width) - 1;
        Ok(PackedArray { data, header, mask })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.header.count
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    /// Element `i`, or `None` when `i` is out of range.
    #[inline]
    pub fn get(&self, i: u64) -> Option<u64> {
        if i >= self.header.count {
            return None;
        }
        let body = &self.data.as_ref()[HEADER_LEN..];
        // i < count and count · width fits the file (checked at open), so no overflow here.
        let bit = i * u64::from(self.header.width);
        let at = usize::try_from(bit / 8).ok()?;
        let shift = bit % 8;
        let word = match body.get(at..at + 8) {
            Some(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => {
                // The last few elements: fewer than 8 bytes remain.
                let tail = body.get(at..)?;
                let mut a = [0u8; 8];
                a[..tail.len()].copy_from_slice(tail);
                u64::from_le_bytes(a)
            }
        };
        Some((word >> shift) & self.mask)
    }

    /// The raw bytes of the file (header included).
    pub fn bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    /// The storage (e.g. the memory map, to advise the kernel about it).
    pub fn data(&self) -> &D {
        &self.data
    }
}

/// Writes integers packed at `width` bits (1..=57) to `out`, for any iterator of values. A value
/// that does not fit is an `InvalidInput` error.
pub fn write_packed<W: std::io::Write>(
    out: &mut W,
    width: u32,
    values: impl IntoIterator<Item = u64>,
) -> std::io::Result<()> {
    if !(1..=MAX_PACKED_BITS).contains(&width) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("packed width {width} is not 1..={MAX_PACKED_BITS} bits"),
        ));
    }
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut acc: u128 = 0;
    let mut nbits = 0u32;
    for v in values {
        if v >> width != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("value {v} does not fit in {width} bits"),
            ));
        }
        acc |= u128::from(v) << nbits;
        nbits += width;
        if nbits >= 64 {
            buf.extend_from_slice(&(acc as u64).to_le_bytes());
            acc >>= 64;
            nbits -= 64;
            if buf.len() >= (1 << 20) - 8 {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
    }
    let tail = nbits.div_ceil(8) as usize;
    buf.extend_from_slice(&(acc as u64).to_le_bytes()[..tail]);
    out.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(kind: FileKind, width: u32, values: &[u64]) -> Vec<u8> {
        let mut v = Header::new(kind, width, values.len() as u64, 7, 9)
            .to_bytes()
            .to_vec();
        write_packed(&mut v, width, values.iter().copied()).unwrap();
        v
    }

    #[test]
    fn widths() {
        assert_eq!(bits_for(0), 1);
        assert_eq!(bits_for(1), 1);
        assert_eq!(bits_for(255), 8);
        assert_eq!(bits_for(256), 9);
        assert_eq!(bits_for(153_000_000), 28);
        assert_eq!(bits_for(1 << 32), 33);
        assert_eq!(bits_for(u64::MAX), 64);
    }

    #[test]
    fn packed_roundtrip_every_width() {
        for width in 1..=MAX_PACKED_BITS {
            let max = (1u64 << width) - 1;
            for n in [1usize, 2, 7, 8, 9, 64, 65, 200] {
                let values: Vec<u64> = (0..n as u64)
                    .map(|i| match i % 4 {
                        0 => max,
                        1 => 0,
                        2 => max / 3,
                        _ => i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & max,
                    })
                    .collect();
                let f = file(FileKind::SuffixArray, width, &values);
                let expected_len = 64 + (n * width as usize).div_ceil(8);
                assert_eq!(f.len(), expected_len, "width {width}, {n} values");
                let a = PackedArray::new(f, FileKind::SuffixArray, Path::new("x")).unwrap();
                let got: Vec<u64> = (0..n as u64).map(|i| a.get(i).unwrap()).collect();
                assert_eq!(got, values, "width {width}, {n} values");
                assert_eq!(a.get(n as u64), None);
            }
        }
    }

    #[test]
    fn padding_bits_must_be_zero() {
        let mut f = file(FileKind::DocOffsets, 3, &[1, 2, 3]);
        assert!(PackedArray::new(&f[..], FileKind::DocOffsets, Path::new("x")).is_ok());
        *f.last_mut().unwrap() |= 0x80;
        assert!(PackedArray::new(&f[..], FileKind::DocOffsets, Path::new("x")).is_err());
    }

    #[test]
    fn values_that_do_not_fit_are_refused() {
        let mut out = Vec::new();
        assert!(write_packed(&mut out, 3, [7, 8]).is_err());
        assert!(write_packed(&mut out, 0, [0]).is_err());
        assert!(write_packed(&mut out, 58, [0]).is_err());
        let wide = Header::new(FileKind::SuffixArray, 58, 0, 0, 0).to_bytes();
        assert!(PackedArray::new(&wide[..], FileKind::SuffixArray, Path::new("x")).is_err());
    }

    #[test]
    fn header_damage_is_reported() {
        let good = file(FileKind::DocOffsets, 4, &[1, 2, 3]);
        let p = Path::new("offsets.bin");
        assert!(matches!(
            Header::parse(&good[..10], FileKind::DocOffsets, p),
            Err(Error::Size { .. })
        ));
        assert!(matches!(
            Header::parse(&good[..good.len() - 1], FileKind::DocOffsets, p),
            Err(Error::Size { .. })
        ));
        assert!(matches!(
            Header::parse(&good, FileKind::Tokens, p),
            Err(Error::Magic { .. })
        ));
        let mut bad = good.clone();
        bad[30] ^= 1;
        assert!(matches!(
            Header::parse(&bad, FileKind::DocOffsets, p),
            Err(Error::Corrupt { .. })
        ));
        let mut future = Header::new(FileKind::DocOffsets, 4, 0, 0, 0);
        future.version = 99;
        let err = Header::parse(&future.to_bytes(), FileKind::DocOffsets, p).unwrap_err();
        assert!(err.to_string().contains("format version 99"), "{err}");
    }
}
