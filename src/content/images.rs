//! Container images made ready to browse ([`OpenImage`]): every layer of a
//! [`ResolvedImage`] fetched (in parallel), verified and indexed through [`super::Archives`]
//! (so a layer is stored and indexed once per digest, whatever image or tag names it), then the
//! layers merged as the OCI image spec says ([`crate::oci::whiteout::merge_layers`]) into one
//! tree, built once per manifest digest and kept for the mount's life.
//!
//! gzip and plain tar layers are archives as they are. A zstd layer (`+zstd`) is decoded once,
//! whole, into a store blob of its uncompressed tar, verified against the config's
//! `rootfs.diff_ids` entry, and that tar is indexed: the archive module reads gzip and tar only.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;

use parking_lot::Mutex;

use super::registry::{RegistryError, ResolvedImage};
use super::{Content, ContentError, OpenArchive, SingleFlight};
use crate::digest::{Digest, Hasher};
use crate::oci::manifest::{Compression, Layer, LayerFormat};
use crate::oci::whiteout::{merge_layers, MergedTree};
use crate::source::{Location, Source};
use crate::store::{BlobInfo, BlobRead, StoreError};

/// An image whose layers are open and merged.
pub struct OpenImage {
    /// The image manifest's digest.
    pub digest: Digest,
    /// The reference it was opened by (for `user.lazycas.source` and log lines).
    pub reference: String,
    /// The layer archives, bottom first (positions match [`crate::oci::whiteout::Origin`]).
    pub layers: Vec<Arc<OpenArchive>>,
    /// The flattened tree.
    pub tree: MergedTree,
    /// Every blob of the image the store holds (manifest, config, compressed layers), open
    /// so that no eviction, here or by `lazycas gc`, removes them while the image is open.
    pub kept_open: Vec<Arc<dyn BlobRead>>,
}

/// Open images of one process, by manifest digest.
#[derive(Default)]
pub struct Images {
    open: Mutex<HashMap<Digest, Arc<OpenImage>>>,
    flights: SingleFlight<Digest, Result<Arc<OpenImage>, Arc<ContentError>>>,
    decodes: SingleFlight<Digest, Result<(), Arc<ContentError>>>,
}

impl Images {
    /// The image if it is already open (never fetches).
    pub fn get(&self, manifest: &Digest) -> Option<Arc<OpenImage>> {
        self.open.lock().get(manifest).cloned()
    }
}

impl Content {
    /// Open images.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// Opens `image`: fetches and indexes its layers (in parallel) and merges them, once
    /// however many callers ask at the same time.
    pub async fn open_image(
        &self,
        image: &ResolvedImage,
    ) -> Result<Arc<OpenImage>, Arc<ContentError>> {
        let digest = image.manifest.digest;
        if let Some(open) = self.images.get(&digest) {
            return Ok(open);
        }
        self.images
            .flights
            .run(digest, async {
                self.open_image_uncached(image).await.map_err(Arc::new)
            })
            .await
    }

    async fn open_image_uncached(
        &self,
        image: &ResolvedImage,
    ) -> Result<Arc<OpenImage>, ContentError> {
        let digest = image.manifest.digest;
        if let Some(open) = self.images.get(&digest) {
            return Ok(open);
        }
        let started = std::time::Instant::now();
        let opens = (0..image.layers.len()).map(|i| self.open_layer(image, i));
        let layers = futures_util::future::try_join_all(opens).await?;
        let indexes: Vec<_> = layers.iter().map(|a| a.index.clone()).collect();
        let label = image.reference.to_string();
        let tree = tokio::task::spawn_blocking(move || merge_layers(indexes))
            .await
            .map_err(|e| ContentError::Task {
                label: label.clone(),
                message: format!("merging layers failed: {e}"),
            })?
            .map_err(|source| ContentError::Archive {
                label: label.clone(),
                source,
            })?;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            layers = layers.len(),
            nodes = tree.len(),
            "opened {label} ({})",
            digest.short()
        );
        let opened = Arc::new(OpenImage {
            digest,
            reference: label,
            layers,
            tree,
            kept_open: self.keep_open(image)?,
        });
        Ok(self
            .images
            .open
            .lock()
            .entry(digest)
            .or_insert(opened)
            .clone())
    }

    /// Bytes of `blobs` (digest, size) the store holds, and their total size.
    pub fn resident_of(&self, blobs: &[(Digest, u64)]) -> Result<(u64, u64), ContentError> {
        let mut resident = 0;
        for (d, _) in blobs {
            resident += self.held(d)?.map_or(0, |info| info.size);
        }
        Ok((resident, blobs.iter().map(|(_, size)| size).sum()))
    }

    /// Opens every blob of `image` the store holds, so eviction leaves them alone.
    fn keep_open(&self, image: &ResolvedImage) -> Result<Vec<Arc<dyn BlobRead>>, ContentError> {
        let mut open = Vec::new();
        for blob in image.blobs() {
            match self.open_blob(&blob.digest) {
                Ok(b) => open.push(b),
                Err(ContentError::Store(StoreError::Missing(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(open)
    }

    /// Layer `i` of `image` as an open archive.
    async fn open_layer(
        &self,
        image: &ResolvedImage,
        i: usize,
    ) -> Result<Arc<OpenArchive>, ContentError> {
        let layer = &image.layers[i];
        let src = image.layer_source(i);
        let compression = match layer.format {
            LayerFormat::Tar { compression, .. } => compression,
            // resolve_image refuses SIF layers in images.
            LayerFormat::Sif => Compression::None,
        };
        let archive_src = match compression {
            Compression::None | Compression::Gzip => src,
            Compression::Zstd => {
                let diff_id = self.decoded_zstd_layer(image, i, &src).await?;
                Source {
                    label: src.label.clone(),
                    ..Source::stored(diff_id)
                }
            }
        };
        self.archives()
            .open(self, &archive_src)
            .await
            .map_err(ContentError::Shared)
    }

    /// Makes the uncompressed tar of zstd layer `i` a store blob (once per diff_id) and
    /// returns its digest.
    async fn decoded_zstd_layer(
        &self,
        image: &ResolvedImage,
        i: usize,
        src: &Source,
    ) -> Result<Digest, ContentError> {
        let label = image.reference.to_string();
        let layer = image.layers[i].blob.digest;
        let diff_id = *image.diff_ids.get(i).ok_or_else(|| RegistryError::Config {
            label: label.clone(),
            digest: image.config.digest,
            message: format!(
                "{} diff_ids for {} layers",
                image.diff_ids.len(),
                image.layers.len()
            ),
        })?;
        if self.held(&diff_id)?.is_some() {
            return Ok(diff_id);
        }
        self.images
            .decodes
            .run(diff_id, async {
                self.decode_zstd_once(src, layer, diff_id, &label)
                    .await
                    .map_err(Arc::new)
            })
            .await
            .map_err(ContentError::Shared)?;
        Ok(diff_id)
    }
}

impl Content {
    /// Fetches zstd layer `src` and decodes it into blob `diff_id`, unless held by now.
    async fn decode_zstd_once(
        &self,
        src: &Source,
        layer: Digest,
        diff_id: Digest,
        label: &str,
    ) -> Result<(), ContentError> {
        if self.held(&diff_id)?.is_some() {
            return Ok(());
        }
        let compressed = self
            .ensure_blob(src, None, &|_| {})
            .await
            .map_err(ContentError::Shared)?;
        let blob = self.open_blob(&compressed.digest)?;
        let store = self.store.clone();
        let owned_label = label.to_string();
        tokio::task::spawn_blocking(move || decode_zstd(&store, blob, layer, diff_id, &owned_label))
            .await
            .map_err(|e| ContentError::Task {
                label: label.to_string(),
                message: format!("zstd decoding task failed: {e}"),
            })?
    }
}

impl ResolvedImage {
    /// Where layer `i` (compressed, as the manifest names it) is fetched: the registry, or the
    /// http(s) `urls` a foreign (non-distributable) layer names, without the registry's
    /// credentials.
    pub fn layer_source(&self, i: usize) -> Source {
        let r = &self.reference;
        let layer: &Layer = &self.layers[i];
        let foreign: Vec<url::Url> = layer
            .urls
            .iter()
            .filter_map(|u| url::Url::parse(u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .collect();
        let short = layer.blob.digest.short();
        let distributable = !matches!(
            layer.format,
            LayerFormat::Tar {
                distributable: false,
                ..
            }
        );
        // A non-distributable layer without usable urls may still be in the registry (it
        // is asked), but a failure then says what kind of layer it was.
        let label = match (distributable, foreign.is_empty()) {
            (true, _) => format!("{r} layer {short}"),
            (false, true) => format!("{r} non-distributable layer {short} (no http urls)"),
            (false, false) => format!("{r} non-distributable layer {short}"),
        };
        let location = if foreign.is_empty() {
            Location::Registry {
                registry: r.registry().to_string(),
                repository: r.repository().to_string(),
                digest: layer.blob.digest,
            }
        } else {
            Location::Http { urls: foreign }
        };
        Source {
            label,
            location,
            expected: Some(layer.blob.digest),
            size_hint: Some(layer.blob.size),
            weak: None,
            index: None,
        }
    }
}

/// Decodes the zstd blob into a new store blob, which must hash to `diff_id`.
fn decode_zstd(
    store: &crate::store::Store,
    blob: Arc<dyn BlobRead>,
    layer: Digest,
    diff_id: Digest,
    label: &str,
) -> Result<(), ContentError> {
    let zstd_error = |source| RegistryError::Zstd {
        label: label.to_string(),
        layer,
        source,
    };
    let tmp = store.temp_file()?;
    let mut decoder =
        zstd::stream::read::Decoder::new(BlobReader { blob, offset: 0 }).map_err(zstd_error)?;
    let mut hasher = Hasher::new();
    let mut size = 0u64;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = decoder.read(&mut buf).map_err(zstd_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        out.write_all(&buf[..n]).map_err(|source| StoreError::Io {
            path: tmp.path().to_path_buf(),
            source,
        })?;
    }
    out.flush().map_err(|source| StoreError::Io {
        path: tmp.path().to_path_buf(),
        source,
    })?;
    drop(out);
    let actual = hasher.finish();
    if actual != diff_id {
        return Err(RegistryError::DiffIdMismatch {
            label: label.to_string(),
            layer,
            expected: diff_id,
            actual,
        }
        .into());
    }
    store.commit(
        tmp,
        &BlobInfo {
            digest: diff_id,
            size,
        },
    )?;
    tracing::info!(
        "{label}: decoded zstd layer {} ({size} bytes)",
        layer.short()
    );
    Ok(())
}

/// `std::io::Read` over a [`BlobRead`].
struct BlobReader {
    blob: Arc<dyn BlobRead>,
    offset: u64,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.blob.read_at(self.offset, buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}
