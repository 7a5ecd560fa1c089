//! Archives opened from a published index (the catalog pins `index_sha256`, `lazycas index`
//! wrote it): browsable before a byte of the archive is fetched, read span by span.
//!
//! The index (a chunk index cut at the archive's span starts, carrying its seek index) is
//! fetched once and checked against its pin by [`Chunked`](super::super::Chunked); its seek
//! index is checked and saved to SQLite as if this process had built it, so listing, `stat`
//! and `readlink` need nothing else. The blob is a `PartialBlob` over the spans: a member read
//! first fetches the spans it decodes in one batch ([`ArchiveSpans::fetch_for_read`]), each
//! verified against its sha256 before it is decoded, and the archive reader then decodes from
//! the checkpoint at the span's start. A span that fails to verify fails the reads that need
//! it (EIO) and nothing else. Once every span is present the blob is assembled, checked whole
//! and committed like any chunked blob.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{Archives, OpenArchive};
use crate::archive::{published, ArchiveError, ArchiveIndex, ArchiveReader, MemberId, SpanMap};
use crate::chunk::ChunkIndex;
use crate::content::{Content, ContentError, PartialBlob};
use crate::digest::Digest;
use crate::source::{IndexPin, Source};
use crate::store::{BlobInfo, BlobRead};

/// The spans of an archive read before it is all here.
pub struct ArchiveSpans {
    map: SpanMap,
    blob: Arc<PartialBlob>,
}

impl ArchiveSpans {
    /// Bytes of the archive held so far.
    pub fn resident(&self) -> u64 {
        self.blob.resident()
    }

    /// Fetches, in one batch, the spans a read of `len` bytes at `offset` of member `id`
    /// decodes (blocking, like the read itself).
    pub fn fetch_for_read(
        &self,
        index: &ArchiveIndex,
        id: MemberId,
        offset: u64,
        len: u32,
    ) -> Result<(), ArchiveError> {
        if let Some(range) = self.map.member_read(index, id, offset, len)? {
            self.blob.fetch_range(range);
        }
        Ok(())
    }
}

impl Archives {
    /// Opens archive `src` from its pinned index `pin`, fetching no byte of the archive.
    pub(super) async fn open_from_index(
        &self,
        content: &Content,
        src: &Source,
        pin: &IndexPin,
    ) -> Result<Arc<OpenArchive>, ContentError> {
        let fetcher = content.fetcher.read().clone();
        let index = content
            .chunked
            .ensure_index(src, pin, &fetcher)
            .await
            .map_err(ContentError::Shared)?;
        let digest = index.file_digest();
        if let Some(a) = self.get(&digest) {
            return Ok(a);
        }
        let (store, label, chunks) = (self.store.clone(), src.label.clone(), index.clone());
        let (archive_index, map) = tokio::task::spawn_blocking(move || {
            let _in_archive = tracing::warn_span!("archive", name = %label).entered();
            let conn = store.connect_db()?;
            let saved = save_published(&conn, &store.db_path(), &digest, &chunks);
            saved.map_err(|source| ContentError::Archive { label, source })
        })
        .await
        .map_err(|e| ContentError::Task {
            label: src.label.clone(),
            message: format!("archive index task failed: {e}"),
        })??;
        if src.expected.is_none() {
            // The pinned index vouches for the digest as a sha256 pin would.
            if let Some(reference) = src.reference_key() {
                let info = BlobInfo {
                    digest,
                    size: index.size(),
                };
                self.store.record_reference(&reference, &info)?;
            }
        }
        let blob = content.chunked.open(src, index.clone(), fetcher)?;
        blob.stop_readahead();
        let archive_index = Arc::new(archive_index);
        let read_blob: Arc<dyn BlobRead> = blob.clone();
        let opened = Arc::new(OpenArchive {
            digest,
            source: src.location.describe(),
            size: index.size(),
            reader: ArchiveReader::new(archive_index.clone(), read_blob, self.cache.clone()),
            index: archive_index,
            spans: Some(ArchiveSpans { map, blob }),
            store: self.store.clone(),
            kept: Mutex::new(self.kept_members(&digest)?),
        });
        tracing::info!(asset = %src.label, "archive {} browsable from its index", digest.short());
        Ok(self.open.lock().entry(digest).or_insert(opened).clone())
    }
}

/// Saves the seek index `chunks` carries under `digest` (unless an index for it is stored
/// already) and opens it, with the map of its spans.
fn save_published(
    conn: &rusqlite::Connection,
    db_path: &std::path::Path,
    digest: &Digest,
    chunks: &ChunkIndex,
) -> Result<(ArchiveIndex, SpanMap), ArchiveError> {
    let payload = chunks
        .hints()
        .archive
        .as_ref()
        .ok_or(crate::archive::PublishedIndexError::Missing)?;
    let map = SpanMap::from_published(&payload.0, chunks)?;
    if !ArchiveIndex::exists(conn, digest)? {
        let built = published::decode(&payload.0, chunks)?;
        ArchiveIndex::save(conn, digest, built)?;
    }
    Ok((ArchiveIndex::open(db_path, digest)?, map))
}
