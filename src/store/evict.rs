//! Making room: least-recently-used unpinned blobs (then the chunks fetched longest ago) are
//! removed when the store passes its quota or the disk passes its free-space floor, with
//! hysteresis (down to 90% of the quota, up to 110% of the floor) so eviction does not run on
//! every download.
//!
//! A blob some process has open is never evicted: readers hold a shared `flock` on the blob file
//! (see [`Store::open_blob`](super::Store::open_blob)) and eviction only removes a file it can
//! lock exclusively without waiting. That works across processes (daemon, `lazycas gc`).

use std::fs::File;
use std::path::Path;

use super::{db, Store, StoreError};
use crate::digest::Digest;

/// Limits the store keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Upper bound on the bytes held (complete blobs and chunks).
    pub quota: Option<u64>,
    /// Free bytes to keep on the store's file system.
    pub min_free: Option<u64>,
}

/// What an eviction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EvictReport {
    /// Blobs removed.
    pub removed: Vec<(Digest, u64)>,
    /// Bytes held afterwards.
    pub used_after: u64,
    /// Blobs skipped because a reader has them open.
    pub skipped_open: usize,
}

impl EvictReport {
    /// Bytes removed.
    pub fn freed(&self) -> u64 {
        self.removed.iter().map(|(_, s)| s).sum()
    }
}

/// Free bytes on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid path and st a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

impl Store {
    /// Bytes held: complete blobs and chunks of partly present ones.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.blob_bytes()? + self.chunks.used_bytes())
    }

    /// Bytes of complete blobs held.
    pub fn blob_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.blobs()?.iter().map(|b| b.size).sum())
    }

    /// Evicts if the quota or the free-space floor is crossed; `incoming` bytes are about to be
    /// written. Does nothing when both limits hold.
    pub fn enforce_limits(
        &self,
        limits: &Limits,
        incoming: u64,
    ) -> Result<EvictReport, StoreError> {
        let used = self.used_bytes()?;
        let over_quota = limits.quota.is_some_and(|q| used + incoming > q);
        let free = free_bytes(self.root()).unwrap_or(u64::MAX);
        let under_floor = limits
            .min_free
            .is_some_and(|m| free < m.saturating_add(incoming));
        if !over_quota && !under_floor {
            return Ok(EvictReport {
                used_after: used,
                ..EvictReport::default()
            });
        }
        let mut target = used;
        if let Some(q) = limits.quota {
            target = target.min((q / 10 * 9).saturating_sub(incoming));
        }
        if let Some(m) = limits.min_free {
            let want_free = (m / 10 * 11).saturating_add(incoming);
            target = target.min(used.saturating_sub(want_free.saturating_sub(free)));
        }
        let report = self.evict_to(target)?;
        if report.used_after > target {
            tracing::warn!(
                used = report.used_after,
                target,
                "store limit crossed but everything left is pinned or open"
            );
        }
        Ok(report)
    }

    /// Removes least-recently-used unpinned, unopened blobs, then the chunks fetched longest
    /// ago (not those of open blobs), until at most `target` bytes remain.
    pub fn evict_to(&self, target: u64) -> Result<EvictReport, StoreError> {
        // Access times of this process first, so LRU order sees the latest reads.
        self.flush_stats()?;
        let blobs = self.blobs()?;
        let mut used: u64 = blobs.iter().map(|b| b.size).sum::<u64>() + self.chunks.used_bytes();
        let mut report = EvictReport::default();
        for b in blobs.iter().filter(|b| !b.pinned) {
            if used <= target {
                break;
            }
            match self.remove_blob_if_unused(&b.digest)? {
                true => {
                    used -= b.size;
                    report.removed.push((b.digest, b.size));
                }
                false => report.skipped_open += 1,
            }
        }
        if used > target {
            let (chunks, freed) = self.chunks.evict(used - target);
            if chunks > 0 {
                used = used.saturating_sub(freed);
                self.stats.evicted(chunks, freed);
                tracing::info!(chunks, bytes = freed, "evicted chunks fetched longest ago");
            }
        }
        report.used_after = used;
        if !report.removed.is_empty() {
            self.stats.evicted(report.removed.len(), report.freed());
            self.flush_stats()?;
            tracing::info!(
                blobs = report.removed.len(),
                bytes = report.freed(),
                used_after = used,
                "evicted least-recently-used content"
            );
        }
        Ok(report)
    }

    /// Deletes one blob unless a reader holds it; returns whether it was removed.
    fn remove_blob_if_unused(&self, d: &Digest) -> Result<bool, StoreError> {
        if self.is_open(d) {
            return Ok(false);
        }
        let path = self.blob_path(d);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget_blob(d)?;
                return Ok(true);
            }
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        if !super::flock::try_lock_exclusive(&file) {
            return Ok(false);
        }
        // Forget first: a crash between the two leaves an orphan file, which is adopted or
        // removed at start, never a row pointing at nothing.
        self.forget_blob(d)?;
        std::fs::remove_file(&path).map_err(|source| StoreError::Io { path, source })?;
        Ok(true)
    }

    /// Removes a blob's row and everything derived from it (archive indexes, via hooks).
    pub(super) fn forget_blob(&self, d: &Digest) -> Result<(), StoreError> {
        let conn = self.db.lock();
        let tx = conn.unchecked_transaction()?;
        db::delete_blob(&tx, d)?;
        super::decoded::forget(&tx, d)?;
        for hook in self.forget_hooks.read().iter() {
            hook(&tx, d).map_err(|source| StoreError::Derived { digest: *d, source })?;
        }
        tx.commit()?;
        Ok(())
    }
}
