//! [`Resolutions`]: the image references a namespace (`docker/`, `oras/`) has resolved, by
//! path, with when. A reference by digest never goes stale; one by tag is current for
//! `tag_ttl_secs`, after which the namespace resolves it again (the last answer keeps showing
//! attributes meanwhile, and serving when the registry cannot be reached).
//!
//! [`image_xattrs`]: the `user.lazycas.*` attributes both namespaces give a node of an image.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::namespace::Xattrs;
use crate::content::{Content, ContentError, ResolvedImage};
use crate::digest::Digest;
use crate::oci::reference::ImageReference;

/// Resolved references by path.
#[derive(Default)]
pub struct Resolutions {
    by_path: Mutex<HashMap<String, (Arc<ResolvedImage>, Instant)>>,
}

impl Resolutions {
    /// What `path` resolved to, if that is still current for `reference` under `ttl`.
    pub fn current(
        &self,
        path: &str,
        reference: &ImageReference,
        ttl: Duration,
    ) -> Option<Arc<ResolvedImage>> {
        let by_path = self.by_path.lock();
        let (image, at) = by_path.get(path)?;
        let fresh = reference.digest().is_some() || at.elapsed() < ttl;
        fresh.then(|| image.clone())
    }

    /// What `path` resolved to last, however old.
    pub fn last(&self, path: &str) -> Option<Arc<ResolvedImage>> {
        self.by_path
            .lock()
            .get(path)
            .map(|(image, _)| image.clone())
    }

    /// Records that `path` resolved to `image` now.
    pub fn record(&self, path: String, image: Arc<ResolvedImage>) {
        self.by_path.lock().insert(path, (image, Instant::now()));
    }

    /// The names directly under directory `prefix` (empty: the top) of the paths resolved.
    pub fn names_under(&self, prefix: &str) -> Vec<String> {
        let by_path = self.by_path.lock();
        let names: BTreeSet<String> = by_path
            .keys()
            .filter_map(|path| {
                let rest = if prefix.is_empty() {
                    path.as_str()
                } else {
                    path.strip_prefix(prefix)?.strip_prefix('/')?
                };
                rest.split('/').next().map(str::to_string)
            })
            .collect();
        names.into_iter().collect()
    }
}

/// `user.lazycas.digest` (`digest`: the node's blob, or the manifest for a directory),
/// `.source` (the reference), `.manifest` (the image manifest's digest) and `.cached` (bytes of
/// `blobs` held / their size) of a node of `image`.
pub fn image_xattrs(
    content: &Content,
    image: &ResolvedImage,
    digest: Digest,
    blobs: &[(Digest, u64)],
) -> Result<Xattrs, ContentError> {
    let (resident, size) = content.resident_of(blobs)?;
    Ok(vec![
        (
            b"user.lazycas.digest".to_vec(),
            digest.to_string().into_bytes(),
        ),
        (
            b"user.lazycas.source".to_vec(),
            image.reference.to_string().into_bytes(),
        ),
        (
            b"user.lazycas.manifest".to_vec(),
            image.manifest.digest.to_string().into_bytes(),
        ),
        (
            b"user.lazycas.cached".to_vec(),
            format!("{resident}/{size}").into_bytes(),
        ),
    ])
}
