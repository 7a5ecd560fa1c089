//! Consistency of disk and database: `lazycas verify` rehashes every blob and quarantines what
//! fails; [`Store::reconcile`] (at daemon start) fixes what a crash can leave: a blob file
//! renamed into place whose row was never written (adopted: only verified bytes are ever renamed
//! there), and rows whose file is gone (forgotten).

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use super::{db, now_millis, Store, StoreError};
use crate::digest::{Digest, Hasher};

/// What `verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs whose bytes hash to their name.
    pub ok: usize,
    /// Blobs moved to `quarantine/` (digest, where they went).
    pub quarantined: Vec<(Digest, PathBuf)>,
    /// Rows whose file was missing (forgotten).
    pub missing: usize,
}

/// What `reconcile` fixed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Blob files adopted into the database.
    pub adopted: usize,
    /// Rows forgotten because their file is gone.
    pub forgotten: usize,
}

impl Store {
    /// Rehashes every complete blob; a blob whose bytes do not match its name is moved to
    /// `quarantine/` and forgotten.
    pub fn verify(&self, progress: &dyn Fn(u64)) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let mut done = 0u64;
        for b in self.blobs()? {
            let path = self.blob_path(&b.digest);
            let actual = match hash_file(&path, &mut |n| progress(done + n)) {
                Ok((d, _)) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.forget_blob(&b.digest)?;
                    report.missing += 1;
                    continue;
                }
                Err(source) => return Err(StoreError::Io { path, source }),
            };
            done += b.size;
            if actual == b.digest {
                report.ok += 1;
                continue;
            }
            let dest = self.root().join("quarantine").join(b.digest.hex());
            tracing::error!(
                "verify: {} hashes to {actual}; moved to {}",
                path.display(),
                dest.display()
            );
            self.forget_blob(&b.digest)?;
            fs::rename(&path, &dest).map_err(|source| StoreError::Io { path, source })?;
            report.quarantined.push((b.digest, dest));
        }
        Ok(report)
    }

    /// Brings the database in line with `blobs/` after a crash.
    pub fn reconcile(&self) -> Result<ReconcileReport, StoreError> {
        let mut report = ReconcileReport::default();
        let known: std::collections::HashSet<Digest> =
            self.blobs()?.into_iter().map(|b| b.digest).collect();
        let root = self.root().join("blobs/sha256");
        let mut on_disk = std::collections::HashSet::new();
        for shard in fs::read_dir(&root)
            .map_err(|source| StoreError::Io {
                path: root.clone(),
                source,
            })?
            .flatten()
        {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let Some(d) = f.file_name().to_str().and_then(|n| Digest::parse(n).ok()) else {
                    continue;
                };
                if known.contains(&d) {
                    on_disk.insert(d);
                    continue;
                }
                // A file the database does not know: renamed in just before a crash (so it was
                // verified), or put there by hand. Rehash it before trusting it.
                let path = f.path();
                match hash_file(&path, &mut |_| {}) {
                    Ok((actual, size)) if actual == d => {
                        self.with_db(|c| db::insert_complete(c, &d, size, now_millis()))?;
                        on_disk.insert(d);
                        report.adopted += 1;
                    }
                    Ok((actual, _)) => {
                        tracing::error!(
                            "{} holds content hashing to {actual}; quarantined",
                            path.display()
                        );
                        let dest = self.root().join("quarantine").join(d.hex());
                        fs::rename(&path, &dest)
                            .map_err(|source| StoreError::Io { path, source })?;
                    }
                    Err(e) => {
                        tracing::error!("{}: {e}; not adopted", path.display());
                    }
                }
            }
        }
        for d in known.difference(&on_disk) {
            self.forget_blob(d)?;
            report.forgotten += 1;
        }
        if report != ReconcileReport::default() {
            tracing::info!(
                adopted = report.adopted,
                forgotten = report.forgotten,
                "store reconciled with disk"
            );
        }
        Ok(report)
    }
}

/// The digest and size of a file's bytes.
fn hash_file(
    path: &std::path::Path,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<(Digest, u64)> {
    let mut f = fs::File::open(path)?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        progress(n);
    }
    Ok((h.finish(), n))
}
