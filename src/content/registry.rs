//! The registry v2 client: image references resolved to verified manifests and configs, and
//! the URL and `Authorization` of a registry blob ([`crate::source::Location::Registry`]).
//!
//! Every request goes through the process's [`crate::fetch::Fetcher`] (proxies, deadlines,
//! retries). A 401 is answered the way its `WWW-Authenticate` challenge asks: a Bearer token from
//! the realm (anonymous, or with the `[registries."host"]` username and password), kept in a
//! [`TokenCache`] until it expires and fetched again when the registry refuses it mid-mount; Basic
//! credentials as configured; a configured `token` is sent as is. `insecure = true` means plain
//! http.
//!
//! Manifests and configs are verified against their digest (the pinned one, an index entry's,
//! or for a tag the `Docker-Content-Digest` the registry sent) and kept in the store as blobs,
//! so an image seen once answers without the registry. A tag is recorded with the time it was
//! resolved (the store's `refs` table) and asked again after `tag_ttl_secs`; when the registry
//! cannot be reached then, the last resolved digest keeps serving and the log says so.
//!
//! Private content: what a registry with credentials gave (manifests, configs, layers) is
//! recorded with who may read it ([`Readers`]; the daemon's user only, unless the registry's
//! table says `public = true` or `readers = "<group>"`), in the `registry_private` table, so the
//! namespaces show it with matching permissions across restarts.
//!
//! Not here: layer archives and the merged tree ([`super::images`]), formats ([`crate::oci`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use url::Url;

use super::{Content, ContentError, SingleFlight};
use crate::config::{Config, RegistryConfig};
use crate::digest::Digest;
use crate::fetch::{Document, DocumentRequest, FetchError};
use crate::oci::auth::{
    basic_authorization, pull_scope, AuthError, BearerChallenge, Challenge, TokenCache,
    TokenResponse, MAX_TOKEN_RESPONSE_BYTES,
};
use crate::oci::manifest::{
    parse_manifest, BlobRef, Layer, ManifestError, ParsedManifest, Platform, MANIFEST_ACCEPT,
    MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST,
};
use crate::oci::reference::{ImageReference, ReferenceKind, DOCKER_HUB, DOCKER_HUB_API_HOST};
use crate::store::{now_secs, BlobInfo};

/// Largest image config read (configs carry the image history; a few KiB usually).
pub const MAX_CONFIG_BYTES: usize = 16 << 20;

/// Why a registry could not give what an image needs. `Display` names the image.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The manifest is malformed, of an unknown type, or has no entry for this platform.
    #[error("{label}: {source}")]
    Manifest {
        /// The image reference.
        label: String,
        /// What the format layer said.
        source: ManifestError,
    },
    /// The registry's authentication challenge or token could not be used.
    #[error("{label}: {source}")]
    Auth {
        /// The registry or image.
        label: String,
        /// What was wrong.
        source: AuthError,
    },
    /// The registry has no such manifest (tag or digest).
    #[error("{label}: {url} answered HTTP 404 (no such manifest)")]
    NotFound {
        /// The image reference.
        label: String,
        /// The URL asked.
        url: String,
    },
    /// The registry or token endpoint answered an error status.
    #[error("{label}: {url} answered HTTP {status}")]
    Status {
        /// The image reference.
        label: String,
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
    },
    /// The image config is not what an image needs.
    #[error("{label}: image config {digest}: {message}")]
    Config {
        /// The image reference.
        label: String,
        /// The config's digest.
        digest: Digest,
        /// What is wrong.
        message: String,
    },
    /// A zstd layer decoded to other bytes than the config's `rootfs.diff_ids` entry.
    #[error("{label}: zstd layer {layer} decodes to {actual}, the image config says {expected}")]
    DiffIdMismatch {
        /// The image reference.
        label: String,
        /// The compressed layer.
        layer: Digest,
        /// The config's diff_id.
        expected: Digest,
        /// What the decoded bytes hash to.
        actual: Digest,
    },
    /// A zstd layer could not be decoded.
    #[error("{label}: decoding zstd layer {layer}: {source}")]
    Zstd {
        /// The image reference.
        label: String,
        /// The compressed layer.
        layer: Digest,
        /// What the decoder or the disk said.
        source: std::io::Error,
    },
}

impl RegistryError {
    /// True when the image or tag does not exist (ENOENT rather than EIO).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }
}

/// Registry settings in force: per-registry tables, the tag TTL and the platform wanted.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// `[registries."host"]` tables by registry name.
    pub registries: BTreeMap<String, RegistryConfig>,
    /// How long a resolved tag is trusted.
    pub tag_ttl: Duration,
    /// The platform picked from multi-platform images.
    pub platform: Platform,
}

impl RegistrySettings {
    /// Settings from the checked config, for the host's platform.
    pub fn from_config(c: &Config) -> RegistrySettings {
        RegistrySettings {
            registries: c.registries.clone(),
            tag_ttl: c.tag_ttl,
            platform: Platform::host(),
        }
    }
}

impl Default for RegistrySettings {
    fn default() -> RegistrySettings {
        RegistrySettings::from_config(&Config::default())
    }
}

/// Who may read content fetched from a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Every user of the node (no credentials were used, or the registry is `public`).
    Everyone,
    /// The daemon's user only.
    Owner,
    /// The daemon's user and the members of this group.
    Group(u32),
}

impl Readers {
    /// As stored: `NULL` for the owner only, else the gid.
    fn stored(self) -> Option<i64> {
        match self {
            Readers::Group(gid) => Some(i64::from(gid)),
            _ => None,
        }
    }

    fn from_stored(gid: Option<i64>) -> Readers {
        match gid.and_then(|g| u32::try_from(g).ok()) {
            Some(g) => Readers::Group(g),
            None => Readers::Owner,
        }
    }
}

const PRIVATE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS registry_private (
    digest TEXT PRIMARY KEY,   -- a blob fetched with credentials
    gid    INTEGER             -- the group that may read it too; NULL: the owner only
) WITHOUT ROWID;";

/// An image manifest resolved and verified, with what its config says about the layers.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference as asked (tag and/or digest).
    pub reference: ImageReference,
    /// The digest the reference resolved to (an index's, for a multi-platform image).
    pub resolved: Digest,
    /// The image manifest's digest (after platform choice): the image's identity.
    pub manifest: BlobInfo,
    /// The config blob (held in the store).
    pub config: BlobRef,
    /// The layers, bottom first (an oras artifact: its one SIF layer).
    pub layers: Vec<Layer>,
    /// The config's `rootfs.diff_ids`: each layer's uncompressed digest (empty for oras).
    pub diff_ids: Vec<Digest>,
}

/// Registry state of one process: settings, tokens, challenges seen, resolutions in flight.
pub struct Registries {
    settings: RwLock<RegistrySettings>,
    tokens: TokenCache,
    /// The last Bearer or Basic challenge of each registry (scope removed), so a request after
    /// a token expired asks for a new one before being refused.
    challenges: Mutex<HashMap<String, Challenge>>,
    resolving: SingleFlight<String, Result<Arc<ResolvedImage>, Arc<ContentError>>>,
    /// Private blobs and who may read them (mirrors `registry_private`).
    private: RwLock<HashMap<Digest, Readers>>,
}

impl Registries {
    /// Registry state over `store`: creates the private-content table and loads it.
    pub(super) fn new(store: &crate::store::Store) -> Result<Registries, ContentError> {
        let private = store.with_db(|c| {
            c.execute_batch(PRIVATE_SCHEMA)?;
            super::image_records::init_schema(c)?;
            let mut stmt = c.prepare("SELECT digest, gid FROM registry_private")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
            })?;
            let mut map = HashMap::new();
            for row in rows {
                let (hex, gid) = row?;
                if let Ok(d) = Digest::parse(&hex) {
                    map.insert(d, Readers::from_stored(gid));
                }
            }
            Ok(map)
        })?;
        Ok(Registries {
            settings: RwLock::new(RegistrySettings::default()),
            tokens: TokenCache::new(),
            challenges: Mutex::new(HashMap::new()),
            resolving: SingleFlight::default(),
            private: RwLock::new(private),
        })
    }
}

/// A registry repository, as requests need it.
#[derive(Debug, Clone, Copy)]
pub struct Repository<'a> {
    /// The registry as references name it (`docker.io`, `127.0.0.1:5000`).
    pub registry: &'a str,
    /// The repository path.
    pub name: &'a str,
}

impl<'a> Repository<'a> {
    /// The repository of `r`.
    pub fn of(r: &'a ImageReference) -> Repository<'a> {
        Repository {
            registry: r.registry(),
            name: r.repository(),
        }
    }

    /// Where API requests go.
    fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            self.registry
        }
    }
}

impl Content {
    /// Replaces the registry settings (start, SIGHUP).
    pub fn set_registry_settings(&self, settings: RegistrySettings) {
        *self.registries.settings.write() = settings;
    }

    /// How long a resolved tag is trusted.
    pub fn tag_ttl(&self) -> Duration {
        self.registries.settings.read().tag_ttl
    }

    fn registry_config(&self, registry: &str) -> RegistryConfig {
        self.registries
            .settings
            .read()
            .registries
            .get(registry)
            .cloned()
            .unwrap_or_default()
    }

    /// Who may read what `registry` gives.
    pub fn registry_readers(&self, registry: &str) -> Readers {
        let config = self.registry_config(registry);
        if !config.has_credentials() || config.public {
            return Readers::Everyone;
        }
        match config.readers.as_deref().map(crate::config::group_gid) {
            Some(Some(gid)) => Readers::Group(gid),
            _ => Readers::Owner,
        }
    }

    /// Who may read blob `d` (private when a registry with credentials gave it).
    pub fn blob_readers(&self, d: &Digest) -> Readers {
        self.registries
            .private
            .read()
            .get(d)
            .copied()
            .unwrap_or(Readers::Everyone)
    }

    /// Records the blobs of `image` as readable by `readers` only.
    fn mark_private(&self, image: &ResolvedImage, readers: Readers) -> Result<(), ContentError> {
        let mut digests = vec![image.resolved, image.manifest.digest, image.config.digest];
        digests.extend(image.layers.iter().map(|l| l.blob.digest));
        digests.extend(image.diff_ids.iter().copied());
        let new: Vec<Digest> = {
            let known = self.registries.private.read();
            digests
                .into_iter()
                .filter(|d| known.get(d) != Some(&readers))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        self.store.with_db(|c| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO registry_private(digest, gid) VALUES (?1, ?2)
                 ON CONFLICT(digest) DO UPDATE SET gid = excluded.gid",
            )?;
            for d in &new {
                stmt.execute(rusqlite::params![d.hex(), readers.stored()])?;
            }
            Ok(())
        })?;
        let mut known = self.registries.private.write();
        for d in new {
            known.insert(d, readers);
        }
        Ok(())
    }

    /// `<scheme>://<host>/v2/<repository>/<rest>`.
    pub fn registry_url(&self, repo: Repository<'_>, rest: &str) -> Result<Url, ContentError> {
        let scheme = if self.registry_config(repo.registry).insecure {
            "http"
        } else {
            "https"
        };
        let text = format!("{scheme}://{}/v2/{}/{rest}", repo.api_host(), repo.name);
        Url::parse(&text).map_err(|e| {
            ContentError::Fetch(FetchError::NoSource {
                label: format!("{text}: {e}"),
            })
        })
    }

    /// Resolves `r` to its image manifest and config, verified; asks the registry only for what
    /// the store does not hold (and for a tag older than `tag_ttl_secs`). Concurrent calls for
    /// one reference share the work.
    pub async fn resolve_image(
        &self,
        r: &ImageReference,
    ) -> Result<Arc<ResolvedImage>, Arc<ContentError>> {
        self.registries
            .resolving
            .run(r.to_string(), async {
                self.resolve_uncached(r)
                    .await
                    .map(Arc::new)
                    .map_err(Arc::new)
            })
            .await
    }

    async fn resolve_uncached(&self, r: &ImageReference) -> Result<ResolvedImage, ContentError> {
        let label = r.to_string();
        let manifest_error = |source| RegistryError::Manifest {
            label: label.clone(),
            source,
        };
        let resolved = match r.digest() {
            Some(d) => *d,
            None => self.resolve_tag(r).await?,
        };
        let mut manifest = self.manifest_by_digest(r, &resolved).await?;
        if manifest.media_type.is_index() {
            let platform = self.registries.settings.read().platform.clone();
            let entry = manifest
                .select_platform(&platform)
                .map_err(manifest_error)?
                .digest;
            manifest = self.manifest_by_digest(r, &entry).await?;
        }
        let image = manifest.image().map_err(manifest_error)?;
        let config = image.config.clone();
        let config_bytes = self.blob_document(r, &config.digest).await?;
        let (layers, diff_ids) = match r.kind() {
            ReferenceKind::Image => {
                let layers = image.rootfs_layers().map_err(manifest_error)?.to_vec();
                let diff_ids =
                    diff_ids(&config_bytes).map_err(|message| RegistryError::Config {
                        label: label.clone(),
                        digest: config.digest,
                        message,
                    })?;
                (layers, diff_ids)
            }
            // An oras artifact's config says nothing lazycas needs (often `{}`).
            ReferenceKind::OrasArtifact => (
                vec![image.sif_layer().map_err(manifest_error)?.clone()],
                Vec::new(),
            ),
        };
        let image = ResolvedImage {
            reference: r.clone(),
            resolved,
            manifest: BlobInfo {
                digest: manifest.digest,
                size: manifest.size,
            },
            config,
            layers,
            diff_ids,
        };
        self.store
            .with_db(|c| super::image_records::record(c, &image, now_secs()))?;
        let readers = self.registry_readers(r.registry());
        if readers != Readers::Everyone {
            self.mark_private(&image, readers)?;
        }
        Ok(image)
    }

    /// The digest tag `r` names: the recorded one while younger than the TTL, else the
    /// registry's answer; the recorded one again when the registry cannot be reached.
    async fn resolve_tag(&self, r: &ImageReference) -> Result<Digest, ContentError> {
        let key = r.to_string();
        let recorded = self.store.reference_resolved_at(&key)?;
        let ttl = self.tag_ttl().as_secs() as i64;
        let usable = match recorded {
            Some((d, _)) if self.held(&d)?.is_some() => Some(d),
            _ => None,
        };
        if let (Some(d), Some((_, at))) = (usable, recorded) {
            if now_secs() - at < ttl {
                return Ok(d);
            }
        }
        match self.fetch_tag(r).await {
            Ok(d) => Ok(d),
            Err(e) if is_unreachable(&e) => match usable {
                Some(d) => {
                    tracing::warn!(
                        "{key}: registry unreachable ({e}); serving the last resolved digest {d}"
                    );
                    Ok(d)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Asks the registry what tag `r` names now; keeps the manifest and records the tag.
    async fn fetch_tag(&self, r: &ImageReference) -> Result<Digest, ContentError> {
        let label = r.to_string();
        // A tag pins nothing: the registry's Docker-Content-Digest is what the bytes must be.
        let (manifest, info) = self
            .fetch_manifest(r, &r.manifest_reference(), None)
            .await?;
        self.store.record_reference(&label, &info)?;
        tracing::info!("resolved {label} to {}", manifest.digest);
        Ok(manifest.digest)
    }

    /// The manifest `d` of `r`'s repository: from the store, else fetched and verified.
    async fn manifest_by_digest(
        &self,
        r: &ImageReference,
        d: &Digest,
    ) -> Result<ParsedManifest, ContentError> {
        let label = r.to_string();
        let manifest_error = |source| RegistryError::Manifest {
            label: label.clone(),
            source,
        };
        if let Some(bytes) = self.held_document(d, MAX_MANIFEST_BYTES)? {
            return parse_manifest(stored_manifest_type(&bytes), &bytes, Some(d))
                .map_err(|e| manifest_error(e).into());
        }
        let (manifest, _) = self.fetch_manifest(r, &d.to_string(), Some(d)).await?;
        Ok(manifest)
    }

    /// GETs manifest `reference` (a tag or a digest) of `r`'s repository, verifies it against
    /// `expected` (else the registry's `Docker-Content-Digest`, when it sends one) and keeps it
    /// in the store.
    async fn fetch_manifest(
        &self,
        r: &ImageReference,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<(ParsedManifest, BlobInfo), ContentError> {
        let label = r.to_string();
        let doc = self
            .registry_get(
                Repository::of(r),
                &format!("manifests/{reference}"),
                &label,
                Some(MANIFEST_ACCEPT),
                MAX_MANIFEST_BYTES,
            )
            .await?;
        check_status(&doc, &label)?;
        let served = doc
            .header("docker-content-digest")
            .and_then(|h| Digest::parse(h.trim()).ok());
        let manifest = parse_manifest(
            doc.content_type().unwrap_or(""),
            &doc.body,
            expected.or(served.as_ref()),
        )
        .map_err(|source| RegistryError::Manifest { label, source })?;
        let info = self.keep_document(&doc.body)?;
        Ok((manifest, info))
    }

    /// A small blob (the image config) of `r`'s repository: from the store, else fetched and
    /// verified.
    async fn blob_document(&self, r: &ImageReference, d: &Digest) -> Result<Bytes, ContentError> {
        if let Some(bytes) = self.held_document(d, MAX_CONFIG_BYTES)? {
            return Ok(bytes);
        }
        let label = format!("{r} config {d}");
        let doc = self
            .registry_get(
                Repository::of(r),
                &format!("blobs/{d}"),
                &label,
                None,
                MAX_CONFIG_BYTES,
            )
            .await?;
        check_status(&doc, &label)?;
        let actual = Digest::of(&doc.body);
        if actual != *d {
            return Err(ContentError::Fetch(FetchError::Mismatch {
                label,
                url: doc.url.to_string(),
                expected: *d,
                actual,
            }));
        }
        self.keep_document(&doc.body)?;
        Ok(doc.body)
    }

    /// The bytes of held blob `d`, when the store has it (and it is no larger than `max`).
    fn held_document(&self, d: &Digest, max: usize) -> Result<Option<Bytes>, ContentError> {
        match self.held(d)? {
            Some(info) if info.size <= max as u64 => {
                let blob = self.open_blob(d)?;
                let mut buf = vec![0u8; info.size as usize];
                blob.read_exact_at(0, &mut buf).map_err(|source| {
                    ContentError::Store(crate::store::StoreError::Io {
                        path: self.store.blob_path(d),
                        source,
                    })
                })?;
                Ok(Some(Bytes::from(buf)))
            }
            _ => Ok(None),
        }
    }

    /// Stores a verified document (manifest, config) as a blob.
    fn keep_document(&self, bytes: &[u8]) -> Result<BlobInfo, ContentError> {
        let info = BlobInfo {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        };
        if self.held(&info.digest)?.is_some() {
            return Ok(info);
        }
        let tmp = self.store.temp_file()?;
        std::io::Write::write_all(&mut tmp.as_file(), bytes).map_err(|source| {
            ContentError::Store(crate::store::StoreError::Io {
                path: tmp.path().to_path_buf(),
                source,
            })
        })?;
        self.store.commit(tmp, &info)?;
        Ok(info)
    }

    /// GETs `/v2/<repo>/<rest>`, authenticating as a 401's challenge asks (once).
    async fn registry_get(
        &self,
        repo: Repository<'_>,
        rest: &str,
        label: &str,
        accept: Option<&str>,
        max_bytes: usize,
    ) -> Result<Document, ContentError> {
        let url = self.registry_url(repo, rest)?;
        let first = self
            .get_authorized(repo, &url, label, accept, max_bytes)
            .await?;
        if first.status != 401 {
            return Ok(first);
        }
        self.learn_challenge(repo, &first, label)?;
        self.get_authorized(repo, &url, label, accept, max_bytes)
            .await
    }

    async fn get_authorized(
        &self,
        repo: Repository<'_>,
        url: &Url,
        label: &str,
        accept: Option<&str>,
        max_bytes: usize,
    ) -> Result<Document, ContentError> {
        let headers = self.registry_headers(repo).await?;
        let fetcher = self.fetcher.read().clone();
        Ok(fetcher
            .get_document(&DocumentRequest {
                label,
                url,
                accept,
                headers: &headers,
                max_bytes,
            })
            .await?)
    }

    /// Remembers the challenge of a 401 and forgets the token it refused.
    fn learn_challenge(
        &self,
        repo: Repository<'_>,
        doc: &Document,
        label: &str,
    ) -> Result<(), ContentError> {
        let values = doc
            .headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let auth_error = |source| RegistryError::Auth {
            label: label.to_string(),
            source,
        };
        let challenge = match Challenge::preferred(values).map_err(auth_error)? {
            Challenge::Bearer(b) => Challenge::Bearer(BearerChallenge { scope: None, ..b }),
            other => other,
        };
        self.registries
            .tokens
            .invalidate(repo.registry, &pull_scope(repo.name));
        self.registries
            .challenges
            .lock()
            .insert(repo.registry.to_string(), challenge);
        Ok(())
    }

    /// Asks the registry afresh how to authenticate (after it refused a blob request).
    pub(super) async fn renew_authorization(
        &self,
        repo: Repository<'_>,
    ) -> Result<(), ContentError> {
        let label = format!("registry {}", repo.registry);
        let url = Url::parse(&format!(
            "{}://{}/v2/",
            self.registry_url(repo, "")?.scheme(),
            repo.api_host()
        ))
        .map_err(|e| {
            ContentError::Fetch(FetchError::NoSource {
                label: format!("{label}: {e}"),
            })
        })?;
        self.registries
            .tokens
            .invalidate(repo.registry, &pull_scope(repo.name));
        let fetcher = self.fetcher.read().clone();
        let doc = fetcher
            .get_document(&DocumentRequest {
                label: &label,
                url: &url,
                accept: None,
                headers: &HeaderMap::new(),
                max_bytes: 64 << 10,
            })
            .await?;
        if doc.status == 401 {
            self.learn_challenge(repo, &doc, &label)?;
        }
        Ok(())
    }

    /// The headers that authenticate a request to `repo`: a configured token, a cached or new
    /// Bearer token, Basic credentials, or nothing when the registry has not asked.
    pub(super) async fn registry_headers(
        &self,
        repo: Repository<'_>,
    ) -> Result<HeaderMap, ContentError> {
        let config = self.registry_config(repo.registry);
        let value = if let Some(token) = &config.token {
            Some(format!("Bearer {token}"))
        } else {
            let challenge = self
                .registries
                .challenges
                .lock()
                .get(repo.registry)
                .cloned();
            match challenge {
                Some(Challenge::Bearer(b)) => Some(format!(
                    "Bearer {}",
                    self.bearer_token(repo, &b, &config).await?
                )),
                Some(Challenge::Basic { .. }) => match (&config.username, &config.password) {
                    (Some(u), Some(p)) => Some(basic_authorization(u, p)),
                    _ => None,
                },
                _ => None,
            }
        };
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            let v = HeaderValue::from_str(&v).map_err(|_| RegistryError::Auth {
                label: format!("registry {}", repo.registry),
                source: AuthError::MalformedToken("not a valid header value".into()),
            })?;
            headers.insert(AUTHORIZATION, v);
        }
        Ok(headers)
    }

    /// A cached token for `repo`, else one from the challenge's realm.
    async fn bearer_token(
        &self,
        repo: Repository<'_>,
        challenge: &BearerChallenge,
        config: &RegistryConfig,
    ) -> Result<String, ContentError> {
        let scope = pull_scope(repo.name);
        if let Some(t) = self
            .registries
            .tokens
            .get(repo.registry, &scope, Instant::now())
        {
            return Ok(t);
        }
        let label = format!("registry {} token for {}", repo.registry, repo.name);
        let url = challenge.token_url(&[&scope], config.username.as_deref());
        let mut headers = HeaderMap::new();
        if let (Some(u), Some(p)) = (&config.username, &config.password) {
            if let Ok(v) = HeaderValue::from_str(&basic_authorization(u, p)) {
                headers.insert(AUTHORIZATION, v);
            }
        }
        let fetcher = self.fetcher.read().clone();
        let doc = fetcher
            .get_document(&DocumentRequest {
                label: &label,
                url: &url,
                accept: None,
                headers: &headers,
                max_bytes: MAX_TOKEN_RESPONSE_BYTES,
            })
            .await?;
        if !doc.is_success() {
            return Err(RegistryError::Status {
                label,
                url: url.to_string(),
                status: doc.status,
            }
            .into());
        }
        let response = TokenResponse::parse(&doc.body).map_err(|source| RegistryError::Auth {
            label: label.clone(),
            source,
        })?;
        self.registries.tokens.insert(
            repo.registry,
            &scope,
            &response,
            Instant::now(),
            SystemTime::now(),
        );
        tracing::debug!("{label}: new token, valid {:?}", response.expires_in);
        Ok(response.token)
    }
}

/// 404 is "no such image"; any other non-2xx an error naming the status.
fn check_status(doc: &Document, label: &str) -> Result<(), RegistryError> {
    match doc.status {
        200..=299 => Ok(()),
        404 => Err(RegistryError::NotFound {
            label: label.to_string(),
            url: doc.url.to_string(),
        }),
        status => Err(RegistryError::Status {
            label: label.to_string(),
            url: doc.url.to_string(),
            status,
        }),
    }
}

/// True when the registry could not be asked at all (as opposed to answering "no").
fn is_unreachable(e: &ContentError) -> bool {
    match e {
        ContentError::Fetch(f) => {
            matches!(
                f,
                FetchError::Unreachable { .. }
                    | FetchError::Timeout { .. }
                    | FetchError::Network { .. }
                    | FetchError::NoSource { .. }
            ) || matches!(f, FetchError::Status { status, .. } if *status >= 500)
        }
        ContentError::Registry(r) => {
            matches!(**r, RegistryError::Status { status, .. } if status >= 500)
        }
        ContentError::Shared(inner) => is_unreachable(inner),
        _ => false,
    }
}

/// The content type to parse a stored manifest with: its own `mediaType`, else (OCI manifests
/// may omit it) an index when it lists manifests, an image manifest otherwise.
fn stored_manifest_type(bytes: &[u8]) -> &'static str {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(_),
            ..
        }) => "",
        Ok(Probe {
            manifests: Some(_), ..
        }) => OCI_INDEX,
        _ => OCI_MANIFEST,
    }
}

/// The `rootfs.diff_ids` of an image config.
fn diff_ids(config: &[u8]) -> Result<Vec<Digest>, String> {
    #[derive(serde::Deserialize)]
    struct Rootfs {
        diff_ids: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct ImageConfig {
        rootfs: Rootfs,
    }
    let parsed: ImageConfig = serde_json::from_slice(config).map_err(|e| e.to_string())?;
    parsed
        .rootfs
        .diff_ids
        .iter()
        .map(|s| Digest::parse(s).map_err(|e| format!("diff_id {s:?}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_ids_are_read_from_the_config() {
        let d = Digest::of(b"layer");
        let config = format!(
            r#"{{"architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
        );
        assert_eq!(diff_ids(config.as_bytes()).unwrap(), vec![d]);
        assert!(diff_ids(br#"{"rootfs":{"diff_ids":["md5:x"]}}"#).is_err());
        assert!(diff_ids(b"[]").is_err());
    }

    #[test]
    fn stored_manifests_without_media_type_are_typed_by_shape() {
        assert_eq!(stored_manifest_type(br#"{"manifests":[]}"#), OCI_INDEX);
        assert_eq!(stored_manifest_type(br#"{"layers":[]}"#), OCI_MANIFEST);
        assert_eq!(
            stored_manifest_type(br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#),
            ""
        );
    }

    #[test]
    fn unreachable_is_network_trouble_not_an_answer() {
        let down = ContentError::Fetch(FetchError::Unreachable {
            label: "x".into(),
            url: "http://127.0.0.1:1/".into(),
            message: "refused".into(),
        });
        assert!(is_unreachable(&down));
        let missing = ContentError::from(RegistryError::NotFound {
            label: "x".into(),
            url: "u".into(),
        });
        assert!(!is_unreachable(&missing));
    }
}
