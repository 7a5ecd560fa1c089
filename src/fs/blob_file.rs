//! Files whose bytes are one whole blob (file-kind catalog entries, `sha256/<hex>`): what
//! opening one needs ready, the open itself, and reads. Shared by every namespace that shows
//! blobs as files.

use std::sync::Arc;

use super::namespace::{NsError, OpenFile, Wait};
use crate::content::Content;
use crate::source::Source;
use crate::store::BlobRead;

/// Nothing when `src`'s bytes are local (counted as a hit), else the download to wait for;
/// for a source with a pinned chunk index, only the index and the image's metadata chunks.
pub fn prepare_open(content: &Arc<Content>, src: &Source) -> Option<Wait> {
    match content.local_hit(src) {
        Ok(Some(_)) => None,
        Ok(None) if src.index.is_some() => {
            if content.chunked_ready(src) {
                return None;
            }
            let (content, src) = (content.clone(), src.clone());
            Some(Box::pin(async move {
                content.prepare_chunked(&src).await?;
                Ok(())
            }))
        }
        Ok(None) => {
            let (content, src) = (content.clone(), src.clone());
            Some(Box::pin(async move {
                content.ensure_blob(&src, None, &|_| {}).await?;
                Ok(())
            }))
        }
        Err(e) => {
            let e = NsError::from(e);
            Some(Box::pin(async move { Err(e) }))
        }
    }
}

/// Opens `src`'s local blob (after [`prepare_open`]), or reads it chunk by chunk when it has a
/// pinned index and is not all here yet.
pub fn open(content: &Content, src: &Source) -> Result<Box<dyn OpenFile>, NsError> {
    if let Some(info) = content.local(src)? {
        return Ok(Box::new(BlobFile(content.open_blob(&info.digest)?)));
    }
    if src.index.is_some() {
        return Ok(Box::new(BlobFile(content.open_chunked(src)?)));
    }
    Err(NsError::NotFound)
}

/// A file over one complete blob (an archive member kept decoded): passthrough when offered.
pub fn complete(blob: Arc<dyn BlobRead>) -> Box<dyn OpenFile> {
    Box::new(BlobFile(blob))
}

/// An open blob.
struct BlobFile(Arc<dyn BlobRead>);

impl OpenFile for BlobFile {
    fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>, NsError> {
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match self.0.read_at(offset + filled as u64, &mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    return Err(NsError::from(crate::content::ContentError::Store(
                        crate::store::StoreError::Io {
                            path: format!("blob {}", self.0.digest()).into(),
                            source: e,
                        },
                    )))
                }
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    fn blob(&self) -> Option<&Arc<dyn BlobRead>> {
        Some(&self.0)
    }
}
