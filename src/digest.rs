//! Content digests: the one place a `sha256:<hex>` or bare hex string is parsed or printed.
//!
//! A [`Digest`] names a blob in the store, pins a catalog asset and keys archive indexes.
//! Only SHA-256 exists today; the algorithm is part of the type so OCI's `sha512:` can be added
//! without touching callers.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A content digest (algorithm + raw bytes). Printed as `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    bytes: [u8; 32],
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestParseError {
    /// The `algo:` prefix names something other than sha256.
    #[error("unsupported digest algorithm {0:?} (only sha256)")]
    Algorithm(String),
    /// The hex part has the wrong length or characters.
    #[error("not a sha256 digest: {0:?} (want 64 hex digits)")]
    Hex(String),
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest {
            bytes: Sha256::digest(data).into(),
        }
    }

    /// Wraps raw SHA-256 output.
    pub fn from_sha256_bytes(bytes: [u8; 32]) -> Digest {
        Digest { bytes }
    }

    /// Parses bare hex (`3f…`, MedPerf style) or `sha256:3f…`. Uppercase hex is accepted and
    /// normalised; anything else is an error.
    pub fn parse(s: &str) -> Result<Digest, DigestParseError> {
        let hex_part = match s.split_once(':') {
            Some(("sha256", rest)) => rest,
            Some((algo, _)) => return Err(DigestParseError::Algorithm(algo.to_string())),
            None => s,
        };
        if hex_part.len() != 64 {
            return Err(DigestParseError::Hex(s.to_string()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes)
            .map_err(|_| DigestParseError::Hex(s.to_string()))?;
        Ok(Digest { bytes })
    }

    /// The 64-character lowercase hex, without the algorithm prefix (store file names).
    pub fn hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// A short form for log lines (`sha256:3f2a9c0d1e4b`).
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex()[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// Incremental SHA-256 that yields a [`Digest`].
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher::default()
    }

    /// Feeds the next bytes, in order.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest {
            bytes: self.inner.finalize().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_bare_and_prefixed_hex() {
        let a = Digest::parse(EMPTY).unwrap();
        let b = Digest::parse(&format!("sha256:{EMPTY}")).unwrap();
        let c = Digest::parse(&EMPTY.to_uppercase()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, Digest::of(b""));
        assert_eq!(a.to_string(), format!("sha256:{EMPTY}"));
        assert_eq!(a.hex(), EMPTY);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            Digest::parse(&format!("md5:{EMPTY}")),
            Err(DigestParseError::Algorithm(_))
        ));
        assert!(Digest::parse("abc").is_err());
        assert!(Digest::parse(&EMPTY.replace('e', "g")).is_err());
        assert!(Digest::parse(&format!("{EMPTY}00")).is_err());
    }

    #[test]
    fn hasher_matches_one_shot() {
        let mut h = Hasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }
}
