//! Manifest documents as a registry returns them: parsed, verified, and reduced to what lazycas
//! needs (which manifest of an index fits this host; which layers, in which format; the config).
//!
//! [`parse_manifest`] takes the response's `Content-Type` and body. Four media types are known
//! ([`ManifestMediaType`]): OCI index, OCI manifest, Docker manifest list, Docker schema 2. The
//! JSON is read with the `oci-spec` types (Docker's documents have the same shape). The body is
//! refused when it is larger than [`MAX_MANIFEST_BYTES`], when its sha256 differs from the digest
//! the caller expected, or when its media type is unknown (the message names it). Layers become
//! [`Layer`]s whose [`LayerFormat`] says how to read them: a tar (gzip, zstd or none, maybe
//! non-distributable with `urls`), or an oras SIF file. [`Platform`] picks a manifest from an
//! index, by default the host's. Nothing here does I/O.

use std::fmt;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use crate::digest::Digest;

/// Largest manifest accepted (the distribution spec lets registries refuse above 4 MiB too).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// `application/vnd.oci.image.index.v1+json`.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.manifest.v1+json`.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.docker.distribution.manifest.list.v2+json`.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// `application/vnd.docker.distribution.manifest.v2+json`.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The SIF layer of an oras artifact.
pub const SIF_LAYER: &str = "application/vnd.sylabs.sif.layer.v1.sif";
/// The misspelt SIF layer type that old Singularity versions pushed.
pub const SIF_LAYER_LEGACY: &str = "appliciation/vnd.sylabs.sif.layer.tar";

/// The `Accept` header value for manifest requests: every type [`parse_manifest`] reads.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Why a manifest document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Over [`MAX_MANIFEST_BYTES`].
    #[error("manifest is {size} bytes, more than the {MAX_MANIFEST_BYTES} accepted")]
    TooLarge {
        /// Its size (from the body or from the descriptor pointing at it).
        size: u64,
    },
    /// The bytes do not hash to the digest asked for.
    #[error("sha256 mismatch for manifest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the reference or index named.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A media type lazycas does not read.
    #[error("unsupported manifest media type {0:?} (lazycas reads OCI index/manifest and Docker manifest list/schema 2)")]
    UnknownMediaType(String),
    /// The body's `mediaType` contradicts the `Content-Type`.
    #[error("manifest served as {content_type:?} but its mediaType is {body:?}")]
    MediaTypeMismatch {
        /// The response header.
        content_type: String,
        /// The field in the JSON.
        body: String,
    },
    /// Not JSON of the announced shape.
    #[error("malformed {media_type} manifest: {reason}")]
    Malformed {
        /// What it was served as.
        media_type: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A descriptor with a digest other than sha256.
    #[error("unsupported digest {0:?} in a manifest (only sha256)")]
    UnsupportedDigest(String),
    /// A layer whose media type is neither a tar layer nor a SIF.
    #[error("layer {digest} has unsupported media type {media_type:?}")]
    UnknownLayerType {
        /// The layer.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// An index with no manifest for the wanted platform.
    #[error("no manifest for platform {wanted} (the index has: {available})")]
    NoMatchingPlatform {
        /// What was asked for.
        wanted: Platform,
        /// What the index lists, comma-separated.
        available: String,
    },
    /// An index where a single image was needed, or the reverse.
    #[error("expected {expected}, got a {actual} manifest")]
    WrongKind {
        /// What the caller needed.
        expected: &'static str,
        /// The document's media type.
        actual: &'static str,
    },
    /// An oras reference whose manifest is not one SIF layer.
    #[error("not a SIF artifact: {0}")]
    NotSifArtifact(String),
}

/// The manifest media types lazycas reads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ManifestMediaType {
    /// OCI image index.
    OciIndex,
    /// OCI image manifest.
    OciManifest,
    /// Docker manifest list (fat manifest).
    DockerManifestList,
    /// Docker image manifest, schema 2.
    DockerManifest,
}

impl ManifestMediaType {
    /// Recognises a media type string (parameters after `;` ignored, case-insensitive).
    pub fn parse(media_type: &str) -> Option<ManifestMediaType> {
        let essence = media_type.split(';').next().unwrap_or("").trim();
        [
            ManifestMediaType::OciIndex,
            ManifestMediaType::OciManifest,
            ManifestMediaType::DockerManifestList,
            ManifestMediaType::DockerManifest,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(essence))
    }

    /// The media type string.
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestMediaType::OciIndex => OCI_INDEX,
            ManifestMediaType::OciManifest => OCI_MANIFEST,
            ManifestMediaType::DockerManifestList => DOCKER_MANIFEST_LIST,
            ManifestMediaType::DockerManifest => DOCKER_MANIFEST,
        }
    }

    /// True for the two index types (a list of per-platform manifests).
    pub fn is_index(self) -> bool {
        matches!(
            self,
            ManifestMediaType::OciIndex | ManifestMediaType::DockerManifestList
        )
    }
}

impl fmt::Display for ManifestMediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A manifest document, parsed and verified.
#[derive(Clone, Debug)]
pub struct ParsedManifest {
    /// sha256 of the bytes received (what a tag resolves to).
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Which of the four types it is.
    pub media_type: ManifestMediaType,
    /// The content.
    pub content: ManifestContent,
}

/// What a manifest holds: a list of manifests, or one image.
#[derive(Clone, Debug)]
pub enum ManifestContent {
    /// An index / manifest list.
    Index(Vec<IndexEntry>),
    /// One image (or artifact).
    Image(ImageContent),
}

/// One manifest an index lists.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IndexEntry {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its declared size.
    pub size: u64,
    /// Its media type, as the index declares it.
    pub media_type: String,
    /// The platform it is for, if the index says.
    pub platform: Option<Platform>,
}

/// What an image manifest points at.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ImageContent {
    /// The config blob.
    pub config: BlobRef,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// The manifest's `artifactType`, when set (oras artifacts).
    pub artifact_type: Option<String>,
}

/// A blob a manifest names: digest, size, media type.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BlobRef {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes, as declared.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
}

/// One layer of an image manifest.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Layer {
    /// Digest, size and media type of the layer blob (compressed, as stored).
    pub blob: BlobRef,
    /// How to read it.
    pub format: LayerFormat,
    /// Where a foreign or non-distributable layer may be fetched (`urls`), else empty.
    pub urls: Vec<String>,
}

/// How a layer blob is read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LayerFormat {
    /// A tar changeset.
    Tar {
        /// Its compression.
        compression: Compression,
        /// False for foreign / non-distributable layers (fetched from `urls` when given).
        distributable: bool,
    },
    /// A SIF file (oras artifacts), the blob itself.
    Sif,
}

/// Compression of a tar layer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl LayerFormat {
    /// The format a layer media type names, or `None` if it is not a layer lazycas reads.
    pub fn from_media_type(media_type: &str) -> Option<LayerFormat> {
        let tar = |compression, distributable| {
            Some(LayerFormat::Tar {
                compression,
                distributable,
            })
        };
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => tar(Compression::None, true),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => tar(Compression::Gzip, true),
            "application/vnd.oci.image.layer.v1.tar+zstd" => tar(Compression::Zstd, true),
            "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
                tar(Compression::None, false)
            }
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                tar(Compression::Gzip, false)
            }
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                tar(Compression::Zstd, false)
            }
            SIF_LAYER | SIF_LAYER_LEGACY => Some(LayerFormat::Sif),
            _ => None,
        }
    }
}

/// Parses a manifest response. `content_type` is the response header (may carry parameters;
/// `application/json` or empty defers to the body's `mediaType`); `expected`, when known (a
/// digest reference, an index entry, a `Docker-Content-Digest` the caller trusts), must match
/// the bytes' sha256.
pub fn parse_manifest(
    content_type: &str,
    bytes: &[u8],
    expected: Option<&Digest>,
) -> Result<ParsedManifest, ManifestError> {
    check_manifest_size(bytes.len() as u64)?;
    let digest = Digest::of(bytes);
    if let Some(expected) = expected {
        if *expected != digest {
            return Err(ManifestError::DigestMismatch {
                expected: *expected,
                actual: digest,
            });
        }
    }
    let media_type = media_type_of(content_type, bytes)?;
    let content = if media_type.is_index() {
        let index: ImageIndex = from_json(media_type, bytes)?;
        check_body_media_type(content_type, media_type, index.media_type().as_ref())?;
        ManifestContent::Index(index_entries(&index)?)
    } else {
        let manifest: ImageManifest = from_json(media_type, bytes)?;
        check_body_media_type(content_type, media_type, manifest.media_type().as_ref())?;
        ManifestContent::Image(image_content(&manifest)?)
    };
    Ok(ParsedManifest {
        digest,
        size: bytes.len() as u64,
        media_type,
        content,
    })
}

/// Refuses a manifest (or a descriptor announcing one) larger than [`MAX_MANIFEST_BYTES`].
pub fn check_manifest_size(size: u64) -> Result<(), ManifestError> {
    if size > MAX_MANIFEST_BYTES as u64 {
        return Err(ManifestError::TooLarge { size });
    }
    Ok(())
}

/// The media type from the header, or from the body when the header is generic.
fn media_type_of(content_type: &str, bytes: &[u8]) -> Result<ManifestMediaType, ManifestError> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let generic = essence.is_empty()
        || essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/octet-stream");
    if !generic {
        return ManifestMediaType::parse(essence)
            .ok_or_else(|| ManifestError::UnknownMediaType(essence.to_string()));
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed {
        media_type: "untyped",
        reason: e.to_string(),
    })?;
    let declared = probe
        .media_type
        .ok_or_else(|| ManifestError::UnknownMediaType(essence.to_string()))?;
    ManifestMediaType::parse(&declared).ok_or(ManifestError::UnknownMediaType(declared))
}

/// The body's `mediaType`, when present, must agree with what it was served as.
fn check_body_media_type(
    content_type: &str,
    served: ManifestMediaType,
    body: Option<&MediaType>,
) -> Result<(), ManifestError> {
    let Some(body) = body else {
        return Ok(());
    };
    let body = body.to_string();
    if ManifestMediaType::parse(&body) == Some(served) {
        return Ok(());
    }
    Err(ManifestError::MediaTypeMismatch {
        content_type: content_type.to_string(),
        body,
    })
}

fn from_json<T: serde::de::DeserializeOwned>(
    media_type: ManifestMediaType,
    bytes: &[u8],
) -> Result<T, ManifestError> {
    serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed {
        media_type: media_type.as_str(),
        reason: e.to_string(),
    })
}

fn index_entries(index: &ImageIndex) -> Result<Vec<IndexEntry>, ManifestError> {
    index
        .manifests()
        .iter()
        .map(|d| {
            Ok(IndexEntry {
                digest: digest_of(d)?,
                size: d.size(),
                media_type: d.media_type().to_string(),
                platform: d.platform().as_ref().map(|p| Platform {
                    os: p.os().to_string(),
                    architecture: p.architecture().to_string(),
                    variant: p.variant().clone().filter(|v| !v.is_empty()),
                }),
            })
        })
        .collect()
}

fn image_content(manifest: &ImageManifest) -> Result<ImageContent, ManifestError> {
    let layers = manifest
        .layers()
        .iter()
        .map(|d| {
            let blob = blob_ref(d)?;
            let format = LayerFormat::from_media_type(&blob.media_type).ok_or_else(|| {
                ManifestError::UnknownLayerType {
                    digest: blob.digest,
                    media_type: blob.media_type.clone(),
                }
            })?;
            Ok(Layer {
                blob,
                format,
                urls: d.urls().clone().unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, ManifestError>>()?;
    Ok(ImageContent {
        config: blob_ref(manifest.config())?,
        layers,
        artifact_type: manifest.artifact_type().as_ref().map(|t| t.to_string()),
    })
}

fn blob_ref(d: &Descriptor) -> Result<BlobRef, ManifestError> {
    Ok(BlobRef {
        digest: digest_of(d)?,
        size: d.size(),
        media_type: d.media_type().to_string(),
    })
}

fn digest_of(d: &Descriptor) -> Result<Digest, ManifestError> {
    let text = d.digest().to_string();
    match text.strip_prefix("sha256:") {
        Some(_) => Digest::parse(&text).map_err(|_| ManifestError::UnsupportedDigest(text.clone())),
        None => Err(ManifestError::UnsupportedDigest(text)),
    }
}

impl ParsedManifest {
    /// The index entries, or [`ManifestError::WrongKind`] for an image manifest.
    pub fn index(&self) -> Result<&[IndexEntry], ManifestError> {
        match &self.content {
            ManifestContent::Index(entries) => Ok(entries),
            ManifestContent::Image(_) => Err(ManifestError::WrongKind {
                expected: "an index",
                actual: self.media_type.as_str(),
            }),
        }
    }

    /// The image content, or [`ManifestError::WrongKind`] for an index.
    pub fn image(&self) -> Result<&ImageContent, ManifestError> {
        match &self.content {
            ManifestContent::Image(image) => Ok(image),
            ManifestContent::Index(_) => Err(ManifestError::WrongKind {
                expected: "an image manifest",
                actual: self.media_type.as_str(),
            }),
        }
    }

    /// The entry of this index for `wanted` (the first that fits, in index order).
    pub fn select_platform(&self, wanted: &Platform) -> Result<&IndexEntry, ManifestError> {
        let entries = self.index()?;
        entries
            .iter()
            .find(|e| e.platform.as_ref().is_some_and(|p| wanted.accepts(p)))
            .ok_or_else(|| ManifestError::NoMatchingPlatform {
                wanted: wanted.clone(),
                available: entries
                    .iter()
                    .map(|e| {
                        e.platform
                            .as_ref()
                            .map_or("(none)".into(), |p| p.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl ImageContent {
    /// The layers of a container image, bottom first; refuses SIF layers (not a filesystem
    /// changeset).
    pub fn rootfs_layers(&self) -> Result<&[Layer], ManifestError> {
        if let Some(sif) = self.layers.iter().find(|l| l.format == LayerFormat::Sif) {
            return Err(ManifestError::UnknownLayerType {
                digest: sif.blob.digest,
                media_type: sif.blob.media_type.clone(),
            });
        }
        Ok(&self.layers)
    }

    /// The one SIF layer of an oras artifact.
    pub fn sif_layer(&self) -> Result<&Layer, ManifestError> {
        match self.layers.as_slice() {
            [only] if only.format == LayerFormat::Sif => Ok(only),
            [only] => Err(ManifestError::NotSifArtifact(format!(
                "its layer {} is {:?}",
                only.blob.digest, only.blob.media_type
            ))),
            layers => Err(ManifestError::NotSifArtifact(format!(
                "{} layers, want exactly one",
                layers.len()
            ))),
        }
    }
}

/// An OS / CPU pair as indexes describe it (`linux/arm64/v8`).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Platform {
    /// GOOS value (`linux`).
    pub os: String,
    /// GOARCH value (`amd64`, `arm64`).
    pub architecture: String,
    /// CPU variant (`v7`, `v8`), if any.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the machine lazycas runs on (`linux/amd64`, `linux/arm64/v8`, …).
    pub fn host() -> Platform {
        Platform::from_rust_target(std::env::consts::OS, std::env::consts::ARCH)
    }

    /// Maps Rust's target names to the Go names images use.
    pub fn from_rust_target(os: &str, arch: &str) -> Platform {
        let (architecture, variant) = match arch {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?;
        let architecture = parts.next().filter(|p| !p.is_empty())?;
        let variant = parts.next().filter(|p| !p.is_empty());
        if parts.next().is_some() {
            return None;
        }
        Some(Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        })
    }

    /// True if an image built for `offered` runs where `self` is wanted. OS and architecture
    /// must be equal; a variant is compared only when both sides name one after filling in the
    /// defaults (`arm64` is `v8`, `arm` is `v7`), so `linux/arm64` takes `linux/arm64/v8`.
    pub fn accepts(&self, offered: &Platform) -> bool {
        self.os == offered.os
            && self.architecture == offered.architecture
            && match (self.normalised_variant(), offered.normalised_variant()) {
                (Some(w), Some(o)) => w == o,
                _ => true,
            }
    }

    fn normalised_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            (_, Some(v)) => Some(v),
            ("arm64", None) => Some("v8"),
            ("arm", None) => Some("v7"),
            _ => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn descriptor(media_type: &str, digest: &Digest, size: u64, extra: &str) -> String {
        format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{size}{extra}}}"#)
    }

    fn oci_manifest(layers: &[String]) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
            descriptor(
                "application/vnd.oci.image.config.v1+json",
                &d("config"),
                7,
                ""
            ),
            layers.join(",")
        )
    }

    fn index_doc(media_type: &str, entries: &[(&str, &str, Option<&str>)]) -> String {
        let manifests: Vec<String> = entries
            .iter()
            .map(|(os, arch, variant)| {
                let v = variant.map_or(String::new(), |v| format!(r#","variant":"{v}""#));
                descriptor(
                    OCI_MANIFEST,
                    &d(&format!("{os}{arch}{variant:?}")),
                    100,
                    &format!(r#","platform":{{"os":"{os}","architecture":"{arch}"{v}}}"#),
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{}]}}"#,
            manifests.join(",")
        )
    }

    #[test]
    fn parses_oci_manifest_layers_and_config() {
        let layers = [
            descriptor(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                &d("l1"),
                10,
                "",
            ),
            descriptor(
                "application/vnd.oci.image.layer.v1.tar+zstd",
                &d("l2"),
                20,
                "",
            ),
            descriptor("application/vnd.oci.image.layer.v1.tar", &d("l3"), 30, ""),
            descriptor(
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                &d("l4"),
                40,
                r#","urls":["https://example.com/l4"]"#,
            ),
        ];
        let body = oci_manifest(&layers);
        let m = parse_manifest(OCI_MANIFEST, body.as_bytes(), Some(&d(&body))).unwrap();
        assert_eq!(m.digest, d(&body));
        assert_eq!(m.size, body.len() as u64);
        assert_eq!(m.media_type, ManifestMediaType::OciManifest);
        let img = m.image().unwrap();
        assert_eq!(img.config.digest, d("config"));
        assert_eq!(img.config.size, 7);
        let formats: Vec<LayerFormat> = img.layers.iter().map(|l| l.format).collect();
        let tar = |compression, distributable| LayerFormat::Tar {
            compression,
            distributable,
        };
        assert_eq!(
            formats,
            [
                tar(Compression::Gzip, true),
                tar(Compression::Zstd, true),
                tar(Compression::None, true),
                tar(Compression::Gzip, false),
            ]
        );
        assert_eq!(img.layers[3].urls, ["https://example.com/l4"]);
        assert!(img.layers[0].urls.is_empty());
        assert_eq!(img.layers[1].blob.digest, d("l2"));
        assert_eq!(img.rootfs_layers().unwrap().len(), 4);
        assert!(matches!(m.index(), Err(ManifestError::WrongKind { .. })));
        assert!(img.sif_layer().is_err());
    }

    #[test]
    fn parses_docker_schema2_with_foreign_layer() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{},"layers":[{},{}]}}"#,
            descriptor(
                "application/vnd.docker.container.image.v1+json",
                &d("c"),
                3,
                ""
            ),
            descriptor(
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                &d("win"),
                5,
                r#","urls":["https://mcr.example/win"]"#
            ),
            descriptor(
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                &d("l"),
                6,
                ""
            ),
        );
        let m = parse_manifest(
            "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8",
            body.as_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(m.media_type, ManifestMediaType::DockerManifest);
        let img = m.image().unwrap();
        assert_eq!(
            img.layers[0].format,
            LayerFormat::Tar {
                compression: Compression::Gzip,
                distributable: false
            }
        );
        assert_eq!(img.layers[0].urls, ["https://mcr.example/win"]);
        assert_eq!(
            img.config.media_type,
            "application/vnd.docker.container.image.v1+json"
        );
    }

    #[test]
    fn verifies_digest() {
        let body = oci_manifest(&[]);
        let wrong = d("something else");
        match parse_manifest(OCI_MANIFEST, body.as_bytes(), Some(&wrong)) {
            Err(ManifestError::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, d(&body));
                let msg = ManifestError::DigestMismatch { expected, actual }.to_string();
                assert!(msg.contains(&wrong.to_string()) && msg.contains(&actual.to_string()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_unknown_media_types_naming_them() {
        let body = oci_manifest(&[]);
        let schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws";
        let err = parse_manifest(schema1, body.as_bytes(), None).unwrap_err();
        assert!(matches!(&err, ManifestError::UnknownMediaType(t) if t == schema1));
        assert!(err.to_string().contains(schema1));

        // Generic content type: the body's mediaType decides.
        let m = parse_manifest("application/json", body.as_bytes(), None).unwrap();
        assert_eq!(m.media_type, ManifestMediaType::OciManifest);
        let untyped = r#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert!(matches!(
            parse_manifest("", untyped.as_bytes(), None),
            Err(ManifestError::UnknownMediaType(_))
        ));
        let helm = body.replace(OCI_MANIFEST, "application/vnd.cncf.helm.chart.v1");
        let err = parse_manifest("application/json", helm.as_bytes(), None).unwrap_err();
        assert!(err
            .to_string()
            .contains("application/vnd.cncf.helm.chart.v1"));

        // Served as one type, claiming another.
        let err = parse_manifest(DOCKER_MANIFEST, body.as_bytes(), None).unwrap_err();
        assert!(
            matches!(err, ManifestError::MediaTypeMismatch { .. }),
            "{err}"
        );

        let layer = descriptor("application/vnd.example.weird", &d("w"), 1, "");
        let body = oci_manifest(&[layer]);
        let err = parse_manifest(OCI_MANIFEST, body.as_bytes(), None).unwrap_err();
        assert!(
            err.to_string().contains("application/vnd.example.weird"),
            "{err}"
        );
    }

    #[test]
    fn bounds_size_and_refuses_garbage() {
        let mut big = oci_manifest(&[]).into_bytes();
        big.resize(MAX_MANIFEST_BYTES + 1, b' ');
        assert!(matches!(
            parse_manifest(OCI_MANIFEST, &big, None),
            Err(ManifestError::TooLarge { size }) if size == MAX_MANIFEST_BYTES as u64 + 1
        ));
        assert!(check_manifest_size(MAX_MANIFEST_BYTES as u64).is_ok());
        for garbage in [
            &b""[..],
            b"{",
            b"[]",
            b"null",
            b"{\"layers\":5}",
            &[0xff, 0xfe],
        ] {
            assert!(parse_manifest(OCI_MANIFEST, garbage, None).is_err());
            assert!(parse_manifest(OCI_INDEX, garbage, None).is_err());
            assert!(parse_manifest("application/json", garbage, None).is_err());
        }
        let sha512 = oci_manifest(&[]).replace(
            &format!("\"{}\"", d("config")),
            &format!("\"sha512:{}\"", "ab".repeat(64)),
        );
        assert!(matches!(
            parse_manifest(OCI_MANIFEST, sha512.as_bytes(), None),
            Err(ManifestError::UnsupportedDigest(_))
        ));
    }

    #[test]
    fn selects_platforms() {
        let body = index_doc(
            DOCKER_MANIFEST_LIST,
            &[
                ("linux", "arm", Some("v6")),
                ("linux", "arm", Some("v7")),
                ("linux", "arm64", Some("v8")),
                ("unknown", "unknown", None),
                ("linux", "amd64", None),
                ("windows", "amd64", None),
            ],
        );
        let m = parse_manifest(DOCKER_MANIFEST_LIST, body.as_bytes(), None).unwrap();
        assert_eq!(m.index().unwrap().len(), 6);
        let pick = |p: &str| {
            let wanted = Platform::parse(p).unwrap();
            m.select_platform(&wanted)
                .map(|e| e.platform.clone().unwrap().to_string())
        };
        assert_eq!(pick("linux/amd64").unwrap(), "linux/amd64");
        assert_eq!(pick("windows/amd64").unwrap(), "windows/amd64");
        assert_eq!(pick("linux/arm64").unwrap(), "linux/arm64/v8");
        assert_eq!(pick("linux/arm64/v8").unwrap(), "linux/arm64/v8");
        assert_eq!(pick("linux/arm/v7").unwrap(), "linux/arm/v7");
        assert_eq!(pick("linux/arm").unwrap(), "linux/arm/v7");
        assert_eq!(pick("linux/arm/v6").unwrap(), "linux/arm/v6");
        let err = pick("linux/s390x").unwrap_err();
        assert!(err.to_string().contains("linux/s390x"));
        assert!(
            err.to_string().contains("linux/arm/v6, linux/arm/v7"),
            "{err}"
        );
        assert!(m.image().is_err());

        let oci = index_doc(OCI_INDEX, &[("linux", "amd64", None)]);
        let m = parse_manifest(OCI_INDEX, oci.as_bytes(), None).unwrap();
        assert_eq!(m.media_type, ManifestMediaType::OciIndex);
        let e = m
            .select_platform(&Platform::from_rust_target("linux", "x86_64"))
            .unwrap();
        assert_eq!(e.digest, d("linuxamd64None"));
        assert_eq!(e.size, 100);
        assert_eq!(e.media_type, OCI_MANIFEST);
    }

    #[test]
    fn host_platform() {
        let host = Platform::host();
        assert_eq!(host.os, std::env::consts::OS);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(host.to_string(), "linux/amd64");
        assert_eq!(
            Platform::from_rust_target("linux", "aarch64").to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(Platform::parse("linux/arm/v7/x"), None);
        assert_eq!(Platform::parse("linux"), None);
        assert_eq!(Platform::parse("/amd64"), None);
        assert!(!Platform::parse("linux/arm64/v9")
            .unwrap()
            .accepts(&Platform::parse("linux/arm64").unwrap()));
    }

    #[test]
    fn recognises_sif_artifacts() {
        for media_type in [SIF_LAYER, SIF_LAYER_LEGACY] {
            let layer = descriptor(media_type, &d("sif"), 1234, "");
            let body = oci_manifest(&[layer]);
            let m = parse_manifest(OCI_MANIFEST, body.as_bytes(), None).unwrap();
            let img = m.image().unwrap();
            let sif = img.sif_layer().unwrap();
            assert_eq!(sif.blob.digest, d("sif"));
            assert_eq!(sif.blob.size, 1234);
            assert!(img.rootfs_layers().is_err());
        }
        let two = oci_manifest(&[
            descriptor(SIF_LAYER, &d("a"), 1, ""),
            descriptor(SIF_LAYER, &d("b"), 1, ""),
        ]);
        let m = parse_manifest(OCI_MANIFEST, two.as_bytes(), None).unwrap();
        assert!(matches!(
            m.image().unwrap().sif_layer(),
            Err(ManifestError::NotSifArtifact(_))
        ));
    }

    #[test]
    fn accept_header_lists_every_known_type() {
        for t in [
            OCI_INDEX,
            OCI_MANIFEST,
            DOCKER_MANIFEST_LIST,
            DOCKER_MANIFEST,
        ] {
            assert!(MANIFEST_ACCEPT.contains(t));
            assert_eq!(ManifestMediaType::parse(t).map(|m| m.as_str()), Some(t));
        }
    }
}
