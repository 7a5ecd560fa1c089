//! Test content: reproducible pseudo-random bytes and their sha256.
//!
//! Random (incompressible, never-repeating) bytes make a wrong offset or a mixed-up blob show as
//! a byte mismatch. Content is generated from a seed with xorshift so it is fast for large files.

use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Lowercase hex sha256 of a file's contents, read in a stream.
pub fn sha256_file(path: &Path) -> String {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// `len` pseudo-random bytes determined by `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    // xorshift64* seeded through splitmix so nearby seeds give unrelated streams.
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    if x == 0 {
        x = 1;
    }
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A seed no other call in this process returns, so parallel tests get distinct content.
pub fn unique_seed() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A file placed in an origin's docroot.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Path relative to the docroot, without a leading slash (`"dir/a.bin"`).
    pub rel: String,
    /// Where the file lies on disk.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Lowercase hex sha256 of `bytes`.
    pub sha256: String,
}

impl Blob {
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The request path an origin logs for this file (`"/dir/a.bin"`).
    pub fn uri(&self) -> String {
        format!("/{}", self.rel)
    }
}

/// A blob's bytes, so `assert_reads(path, &blob)` compares with them.
impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Writes `bytes` to `docroot/rel`, creating directories, and returns it as a `Blob`.
pub fn write_blob(docroot: &Path, rel: &str, bytes: Vec<u8>) -> Blob {
    let rel = rel.trim_start_matches('/').to_string();
    let path = docroot.join(&rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create docroot subdirectory");
    }
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let sha256 = sha256_hex(&bytes);
    Blob {
        rel,
        path,
        bytes,
        sha256,
    }
}
