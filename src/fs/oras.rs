//! `oras/` ([`Oras`], keys `Top` and `Path`): SIF files pushed with oras, by reference.
//!
//! `oras/<registry>/<repo parts...>/<name>:<tag>` (or `@sha256:<hex>`) is a read-only file: the
//! one `application/vnd.sylabs.sif.layer.v1.sif` layer of the artifact's manifest, fetched whole
//! and verified against its digest on first open (then passed through to the kernel like any
//! blob). Intermediate components are directories accepted lazily, as under `docker/`; a tag is
//! resolved again after `tag_ttl_secs`. The size shows once the manifest has been read.

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use fuser::FileType;

use super::blob_file;
use super::docker::{image_root_end, is_dir_name};
use super::namespace::{
    list_from, Attr, DirEntry, Entry, Key, Namespace, Need, NodeRef, NsError, OpenFile, Ttl, Wait,
    Xattrs,
};
use super::resolutions::{image_xattrs, Resolutions};
use crate::content::{Content, ResolvedImage};
use crate::oci::reference::ImageReference;

/// What a key of this namespace names.
enum Place<'a> {
    Top,
    /// A registry or a repository prefix.
    Dir(&'a str),
    /// An artifact file: its path under `oras/` and its reference.
    Artifact(&'a str, ImageReference),
}

/// The `oras/` directory.
pub struct Oras {
    content: Arc<Content>,
    /// Artifact path → what it resolved to, and when.
    resolved: Arc<Resolutions>,
    started: SystemTime,
    me: Weak<Oras>,
}

impl Oras {
    /// `oras/` over `content`.
    pub fn new(content: Arc<Content>) -> Arc<Oras> {
        Arc::new_cyclic(|me| Oras {
            content,
            resolved: Arc::default(),
            started: SystemTime::now(),
            me: me.clone(),
        })
    }

    /// The node of the directory itself.
    pub fn top(&self) -> NodeRef {
        self.node(Key::Top)
    }

    fn node(&self, key: Key) -> NodeRef {
        NodeRef::of(&self.me, key)
    }

    fn place(key: &Key) -> Result<Place<'_>, NsError> {
        let path = match key {
            Key::Top => return Ok(Place::Top),
            Key::Path(p) => &**p,
            _ => return Err(NsError::NotFound),
        };
        match image_root_end(path) {
            None => Ok(Place::Dir(path)),
            Some(end) if end == path.len() => {
                let r = ImageReference::from_mount_path(&format!("oras/{path}"))
                    .map_err(|_| NsError::NotFound)?;
                Ok(Place::Artifact(path, r))
            }
            Some(_) => Err(NsError::NotFound),
        }
    }

    /// What artifact `path` resolved to, if still current and its SIF blob is held.
    fn ready(&self, path: &str, reference: &ImageReference) -> bool {
        let ttl = self.content.tag_ttl();
        let Some(image) = self.resolved.current(path, reference, ttl) else {
            return false;
        };
        matches!(self.content.local(&image.layer_source(0)), Ok(Some(_)))
    }

    fn last(&self, path: &str) -> Option<Arc<ResolvedImage>> {
        self.resolved.last(path)
    }

    /// Resolves `path` and fetches its SIF layer.
    fn fetch(&self, path: &str, reference: ImageReference) -> Wait {
        let resolved = self.resolved.clone();
        let content = self.content.clone();
        let path = path.to_string();
        Box::pin(async move {
            let image = content.resolve_image(&reference).await?;
            resolved.record(path, image.clone());
            content
                .ensure_blob(&image.layer_source(0), None, &|_| {})
                .await?;
            Ok(())
        })
    }
}

impl Namespace for Oras {
    fn name(&self) -> &'static str {
        "oras"
    }

    fn prepare(&self, key: &Key, need: Need) -> Option<Wait> {
        match (Oras::place(key).ok()?, need) {
            (Place::Artifact(path, r), Need::Open) if !self.ready(path, &r) => {
                Some(self.fetch(path, r))
            }
            _ => None,
        }
    }

    fn getattr(&self, key: &Key) -> Result<(Attr, Ttl), NsError> {
        match Oras::place(key)? {
            Place::Top | Place::Dir(_) => Ok((Attr::dir(self.started), Ttl::Catalog)),
            Place::Artifact(path, r) => {
                let readers = self.content.registry_readers(r.registry());
                match self.last(path) {
                    Some(image) => {
                        let size = image.layers.first().map_or(0, |l| l.blob.size);
                        let attr = Attr::file(size, self.started).readable_by(readers);
                        Ok((attr, Ttl::Catalog))
                    }
                    None => Ok((
                        Attr::file(0, self.started).readable_by(readers),
                        Ttl::Unsettled,
                    )),
                }
            }
        }
    }

    fn lookup(&self, parent: &Key, name: &[u8]) -> Result<Entry, NsError> {
        let name = std::str::from_utf8(name).map_err(|_| NsError::NotFound)?;
        if name.contains('/') {
            return Err(NsError::NotFound);
        }
        let child = match Oras::place(parent)? {
            Place::Top if is_dir_name(true, name) => name.to_string(),
            Place::Dir(p)
                if name.contains(':') || name.contains('@') || is_dir_name(false, name) =>
            {
                format!("{p}/{name}")
            }
            Place::Artifact(..) => return Err(NsError::NotDir),
            _ => return Err(NsError::NotFound),
        };
        let node = self.node(Key::Path(Arc::from(child.as_str())));
        Oras::place(&node.key)?;
        Ok(Entry::of(node.clone(), self.getattr(&node.key)?))
    }

    fn readdir(
        &self,
        dir: &Key,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        let prefix = match Oras::place(dir)? {
            Place::Top => String::new(),
            Place::Dir(p) => p.to_string(),
            Place::Artifact(..) => return Err(NsError::NotDir),
        };
        let names = self.resolved.names_under(&prefix);
        list_from(names, after, add, |name| {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let kind = match image_root_end(&path) {
                Some(_) => FileType::RegularFile,
                None => FileType::Directory,
            };
            let node = self.node(Key::Path(Arc::from(path.as_str())));
            (name.into_bytes(), kind, node)
        });
        Ok(())
    }

    fn open(&self, key: &Key) -> Result<Box<dyn OpenFile>, NsError> {
        match Oras::place(key)? {
            Place::Artifact(path, _) => {
                let image = self.last(path).ok_or(NsError::NotFound)?;
                blob_file::open(&self.content, &image.layer_source(0))
            }
            _ => Err(NsError::IsDir),
        }
    }

    fn xattrs(&self, key: &Key) -> Result<Xattrs, NsError> {
        let Place::Artifact(path, _) = Oras::place(key)? else {
            return Ok(Vec::new());
        };
        let Some(image) = self.last(path) else {
            return Ok(Vec::new());
        };
        let Some(layer) = image.layers.first() else {
            return Ok(Vec::new());
        };
        let blob = (layer.blob.digest, layer.blob.size);
        Ok(image_xattrs(&self.content, &image, blob.0, &[blob])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_are_files_and_the_rest_directories() {
        let key = |p: &str| Key::Path(Arc::from(p));
        assert!(matches!(
            Oras::place(&key("127.0.0.1:5000/sif")).unwrap(),
            Place::Dir(_)
        ));
        match Oras::place(&key("127.0.0.1:5000/sif/app:1.0")).unwrap() {
            Place::Artifact(_, r) => assert_eq!(r.repository(), "sif/app"),
            _ => panic!("not an artifact"),
        }
        assert!(Oras::place(&key("127.0.0.1:5000/sif/app:1.0/x")).is_err());
    }
}
