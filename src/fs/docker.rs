//! `docker/` ([`Docker`], keys `Top` and `Path`): container images by reference, resolved on
//! first access with nothing registered first.
//!
//! `docker/<registry>/<repo parts...>/<name>:<tag>/` and `.../<name>@sha256:<hex>/` are image
//! directories; the components before them are directories accepted lazily (any valid registry
//! or repository component). An image directory holds `manifest.json` and `config.json` (which
//! answer once the manifest and config are fetched, before any layer) and `rootfs/`, whose first
//! access fetches and indexes the layers and merges them ([`Content::open_image`]); its members
//! are [`ImageTree`] nodes. A tag is resolved again once `tag_ttl_secs` have passed, so names
//! under a tag answer with a short TTL while the members (by manifest digest) are immutable.
//! Listing `docker/` and the directories below it shows the images resolved so far.

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use fuser::FileType;

use super::blob_file;
use super::image_tree::ImageTree;
use super::namespace::{
    list_from, Attr, DirEntry, Entry, Key, Namespace, Need, NodeRef, NsError, OpenFile, Ttl, Wait,
    Xattrs,
};
use super::resolutions::{image_xattrs, Resolutions};
use crate::content::{Content, Readers, ResolvedImage};
use crate::digest::Digest;
use crate::oci::reference::{is_path_component, ImageReference};
use crate::oci::whiteout::NodeId;
use crate::source::Source;

const MANIFEST_FILE: &str = "manifest.json";
const CONFIG_FILE: &str = "config.json";
const ROOTFS_DIR: &str = "rootfs";

/// What a key of this namespace names.
enum Place<'a> {
    Top,
    /// A registry or a repository prefix.
    Dir(&'a str),
    /// An image directory: its path under `docker/` and its reference.
    Image(&'a str, ImageReference),
    /// `manifest.json` or `config.json` of an image.
    File(&'a str, ImageReference, ImageFile),
    /// `rootfs/` of an image.
    Rootfs(&'a str, ImageReference),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ImageFile {
    Manifest,
    Config,
}

/// The `docker/` directory.
pub struct Docker {
    content: Arc<Content>,
    images: Arc<ImageTree>,
    /// Image directory path → what it resolved to, and when.
    resolved: Arc<Resolutions>,
    started: SystemTime,
    me: Weak<Docker>,
}

impl Docker {
    /// `docker/` over `content`, showing root filesystems as `images` nodes.
    pub fn new(content: Arc<Content>, images: Arc<ImageTree>) -> Arc<Docker> {
        Arc::new_cyclic(|me| Docker {
            content,
            images,
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

    fn path_node(&self, path: &str) -> NodeRef {
        self.node(Key::Path(Arc::from(path)))
    }

    /// What `key` names; `NotFound` for a path that is no image, image file or directory.
    fn place(key: &Key) -> Result<Place<'_>, NsError> {
        let path = match key {
            Key::Top => return Ok(Place::Top),
            Key::Path(p) => &**p,
            _ => return Err(NsError::NotFound),
        };
        let Some(image_end) = image_root_end(path) else {
            return Ok(Place::Dir(path));
        };
        let root = &path[..image_end];
        let reference = ImageReference::from_mount_path(&format!("docker/{root}"))
            .map_err(|_| NsError::NotFound)?;
        match path[image_end..].trim_start_matches('/') {
            "" => Ok(Place::Image(root, reference)),
            MANIFEST_FILE => Ok(Place::File(root, reference, ImageFile::Manifest)),
            CONFIG_FILE => Ok(Place::File(root, reference, ImageFile::Config)),
            ROOTFS_DIR => Ok(Place::Rootfs(root, reference)),
            _ => Err(NsError::NotFound),
        }
    }

    /// What image directory `root` resolved to, if that is still current.
    fn current(&self, root: &str, reference: &ImageReference) -> Option<Arc<ResolvedImage>> {
        self.resolved
            .current(root, reference, self.content.tag_ttl())
    }

    /// What `root` resolved to last, however old (for attributes between resolutions).
    fn last(&self, root: &str) -> Option<Arc<ResolvedImage>> {
        self.resolved.last(root)
    }

    /// The wait that resolves `root` (and opens its image when `open` is set).
    fn resolve(&self, root: &str, reference: ImageReference, open: bool) -> Wait {
        let resolved = self.resolved.clone();
        let content = self.content.clone();
        let root = root.to_string();
        Box::pin(async move {
            let image = content.resolve_image(&reference).await?;
            resolved.record(root, image.clone());
            if open {
                content.open_image(&image).await?;
            }
            Ok(())
        })
    }

    /// The open image behind `rootfs/` of `root`.
    fn open_image(&self, root: &str) -> Result<Arc<crate::content::OpenImage>, NsError> {
        let image = self.last(root).ok_or(NsError::NotFound)?;
        self.content
            .images()
            .get(&image.manifest.digest)
            .ok_or(NsError::NotFound)
    }

    fn file_blob(image: &ResolvedImage, file: ImageFile) -> (Digest, u64) {
        match file {
            ImageFile::Manifest => (image.manifest.digest, image.manifest.size),
            ImageFile::Config => (image.config.digest, image.config.size),
        }
    }

    /// The names under directory `prefix` (empty: `docker/` itself) of the images resolved.
    fn listed_under(&self, prefix: &str) -> Vec<String> {
        self.resolved.names_under(prefix)
    }

    /// The image directory node of `reference` (`docker/<registry>/<repo>:<tag>`): preparing
    /// it for its children resolves the reference without fetching layers.
    pub fn image_of(&self, reference: &ImageReference) -> NodeRef {
        self.path_node(&image_root(reference))
    }

    /// The `rootfs/` node of image `reference` (`docker/<registry>/<repo>:<tag>/rootfs`), for
    /// another namespace showing the image (a set's image member) through this one.
    pub fn rootfs_of(&self, reference: &ImageReference) -> NodeRef {
        self.path_node(&format!("{}/{ROOTFS_DIR}", image_root(reference)))
    }

    /// `attr` of a node that shows image `reference` elsewhere than under its image directory
    /// (a set's image member), gated as that directory is: for a registry with credentials,
    /// owned by the daemon's user and readable by it (and the configured group) only.
    pub fn gated(&self, reference: &ImageReference, attr: Attr) -> Attr {
        match self.content.registry_readers(reference.registry()) {
            Readers::Everyone => attr,
            readers => Attr {
                uid: Attr::dir(attr.mtime).uid,
                ..attr
            }
            .readable_by(readers),
        }
    }

    /// What `reference` resolved to last, if it has been resolved.
    pub fn last_resolved(&self, reference: &ImageReference) -> Option<Arc<ResolvedImage>> {
        self.last(&image_root(reference))
    }
}

/// The image directory's path under `docker/` for `reference`.
fn image_root(reference: &ImageReference) -> String {
    let path = reference.mount_path();
    let namespace = reference.kind().mount_namespace();
    path.strip_prefix(namespace)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or(&path)
        .to_string()
}

/// The length of the image part of `path` (`<registry>/<repo...>/<name>:<tag>`): up to the first
/// component after the registry (which may carry a port) with a tag or a digest.
pub(super) fn image_root_end(path: &str) -> Option<usize> {
    let mut end = 0;
    for (i, part) in path.split('/').enumerate() {
        end += part.len() + usize::from(i > 0);
        if i > 0 && (part.contains(':') || part.contains('@')) {
            return Some(end);
        }
    }
    None
}

/// True for a name a registry or repository directory may have.
pub(super) fn is_dir_name(parent_is_top: bool, name: &str) -> bool {
    if parent_is_top {
        !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    } else {
        is_path_component(name)
    }
}

impl Namespace for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn prepare(&self, key: &Key, need: Need) -> Option<Wait> {
        match (Docker::place(key).ok()?, need) {
            (Place::Image(root, r), Need::Children) | (Place::File(root, r, _), Need::Open) => {
                match self.current(root, &r) {
                    Some(_) => None,
                    None => Some(self.resolve(root, r, false)),
                }
            }
            (Place::Rootfs(root, r), _) => match self.current(root, &r) {
                Some(image) if self.content.images().get(&image.manifest.digest).is_some() => None,
                _ => Some(self.resolve(root, r, true)),
            },
            _ => None,
        }
    }

    fn getattr(&self, key: &Key) -> Result<(Attr, Ttl), NsError> {
        let dir = (Attr::dir(self.started), Ttl::Catalog);
        match Docker::place(key)? {
            Place::Top | Place::Dir(_) => Ok(dir),
            // What a registry with credentials gives is private: the image directory is the
            // gate (its files and rootfs are reached through it).
            Place::Image(_, r) => Ok((
                dir.0
                    .readable_by(self.content.registry_readers(r.registry())),
                Ttl::Catalog,
            )),
            Place::File(root, _, file) => match self.last(root) {
                Some(image) => {
                    let (_, size) = Docker::file_blob(&image, file);
                    Ok((Attr::file(size, self.started), Ttl::Catalog))
                }
                None => Ok((Attr::file(0, self.started), Ttl::Unsettled)),
            },
            Place::Rootfs(root, _) => match self.open_image(root) {
                Ok(image) => Ok((ImageTree::attr_in(&image, NodeId::ROOT)?, Ttl::Catalog)),
                Err(_) => Ok((Attr::dir(self.started), Ttl::Unsettled)),
            },
        }
    }

    fn lookup(&self, parent: &Key, name: &[u8]) -> Result<Entry, NsError> {
        let name = std::str::from_utf8(name).map_err(|_| NsError::NotFound)?;
        if name.contains('/') {
            return Err(NsError::NotFound);
        }
        let child = match Docker::place(parent)? {
            Place::Top if is_dir_name(true, name) => name.to_string(),
            Place::Dir(p)
                if name.contains(':') || name.contains('@') || is_dir_name(false, name) =>
            {
                format!("{p}/{name}")
            }
            Place::Image(root, _) if [MANIFEST_FILE, CONFIG_FILE, ROOTFS_DIR].contains(&name) => {
                format!("{root}/{name}")
            }
            Place::Rootfs(root, r) => {
                let image = self.open_image(root)?;
                let mut entry = self
                    .images
                    .lookup_in(&image, NodeId::ROOT, name.as_bytes())?;
                if r.digest().is_none() {
                    // The tag may move: the kernel must ask again for the top names, which then
                    // lead into the new image's tree.
                    entry.ttl = Ttl::Catalog;
                }
                return Ok(entry);
            }
            Place::File(..) => return Err(NsError::NotDir),
            _ => return Err(NsError::NotFound),
        };
        let node = self.path_node(&child);
        // A name with a tag or digest must parse as a reference to be shown.
        Docker::place(&node.key)?;
        Ok(Entry::of(node.clone(), self.getattr(&node.key)?))
    }

    fn readdir(
        &self,
        dir: &Key,
        after: u64,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> Result<(), NsError> {
        let (prefix, names, kinds): (String, Vec<String>, Vec<FileType>) = match Docker::place(dir)?
        {
            Place::Top => {
                let names = self.listed_under("");
                let kinds = vec![FileType::Directory; names.len()];
                (String::new(), names, kinds)
            }
            Place::Dir(p) => {
                let names = self.listed_under(p);
                let kinds = vec![FileType::Directory; names.len()];
                (format!("{p}/"), names, kinds)
            }
            Place::Image(root, _) => (
                format!("{root}/"),
                vec![CONFIG_FILE.into(), MANIFEST_FILE.into(), ROOTFS_DIR.into()],
                vec![
                    FileType::RegularFile,
                    FileType::RegularFile,
                    FileType::Directory,
                ],
            ),
            Place::Rootfs(root, _) => {
                let image = self.open_image(root)?;
                return self.images.readdir_in(&image, NodeId::ROOT, after, add);
            }
            Place::File(..) => return Err(NsError::NotDir),
        };
        list_from(names.into_iter().zip(kinds), after, add, |(name, kind)| {
            let node = self.path_node(&format!("{prefix}{name}"));
            (name.into_bytes(), kind, node)
        });
        Ok(())
    }

    fn open(&self, key: &Key) -> Result<Box<dyn OpenFile>, NsError> {
        match Docker::place(key)? {
            Place::File(root, _, file) => {
                let image = self.last(root).ok_or(NsError::NotFound)?;
                let (digest, _) = Docker::file_blob(&image, file);
                blob_file::open(&self.content, &Source::stored(digest))
            }
            _ => Err(NsError::IsDir),
        }
    }

    fn xattrs(&self, key: &Key) -> Result<Xattrs, NsError> {
        let (root, file) = match Docker::place(key)? {
            Place::Top | Place::Dir(_) => return Ok(Vec::new()),
            Place::Image(root, _) | Place::Rootfs(root, _) => (root, None),
            Place::File(root, _, file) => (root, Some(file)),
        };
        let Some(image) = self.last(root) else {
            return Ok(Vec::new());
        };
        let (digest, blobs) = match file {
            Some(f) => {
                let blob = Docker::file_blob(&image, f);
                (blob.0, vec![blob])
            }
            None => (image.manifest.digest, image.served_blobs()),
        };
        Ok(image_xattrs(&self.content, &image, digest, &blobs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> Key {
        Key::Path(Arc::from(p))
    }

    #[test]
    fn paths_name_directories_images_and_their_files() {
        assert!(matches!(
            Docker::place(&key("127.0.0.1:5000")).unwrap(),
            Place::Dir("127.0.0.1:5000")
        ));
        assert!(matches!(
            Docker::place(&key("127.0.0.1:5000/team/sub")).unwrap(),
            Place::Dir(_)
        ));
        match Docker::place(&key("127.0.0.1:5000/team/app:1.4")).unwrap() {
            Place::Image(root, r) => {
                assert_eq!(root, "127.0.0.1:5000/team/app:1.4");
                assert_eq!(r.repository(), "team/app");
                assert_eq!(r.tag(), Some("1.4"));
            }
            _ => panic!("not an image"),
        }
        assert!(matches!(
            Docker::place(&key("127.0.0.1:5000/team/app:1.4/manifest.json")).unwrap(),
            Place::File(_, _, ImageFile::Manifest)
        ));
        assert!(matches!(
            Docker::place(&key("127.0.0.1:5000/app:1/rootfs")).unwrap(),
            Place::Rootfs(..)
        ));
        let hex = "a".repeat(64);
        assert!(matches!(
            Docker::place(&key(&format!("docker.io/library/alpine@sha256:{hex}"))).unwrap(),
            Place::Image(..)
        ));
        assert!(Docker::place(&key("127.0.0.1:5000/app:1/other")).is_err());
        let pinned =
            ImageReference::parse(&format!("docker://127.0.0.1:5000/a/b:1@sha256:{hex}")).unwrap();
        let rootfs = format!("{}/rootfs", image_root(&pinned));
        match Docker::place(&key(&rootfs)).unwrap() {
            Place::Rootfs(root, r) => {
                assert_eq!(root, format!("127.0.0.1:5000/a/b:1@sha256:{hex}"));
                assert_eq!(r, pinned);
            }
            _ => panic!("not a rootfs"),
        }
        assert!(Docker::place(&key("127.0.0.1:5000/App:bad tag")).is_err());
    }
}
