//! The TOML configuration: every default built in (an empty file is a valid config), unknown keys
//! refused, and every error one line naming the file and the key at fault.
//!
//! Parsing happens in two steps: serde reads the raw TOML shape ([`RawConfig`]), then
//! [`Config::from_raw`] checks values and turns strings into typed values (sizes, digests, URLs,
//! proxy groups). Nothing downstream re-validates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::digest::Digest;
use crate::source::{Fill, IndexPin, Location, Source, WeakAlgorithm, WeakPin};

/// A configuration problem; `Display` is one line naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// TOML syntax or shape (unknown key, wrong type).
    #[error("config {path}: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// One-line description with the line number.
        message: String,
    },
    /// A key has a value that does not make sense.
    #[error("config {path}: {key}: {message}")]
    Value {
        /// The config file.
        path: PathBuf,
        /// The offending key, e.g. `asset[2].sha256`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// What an asset is shown as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    /// A regular file holding the blob's bytes.
    File,
    /// A directory holding the archive's tree.
    Archive,
    /// A `docker://` image's directory (`rootfs/`, `manifest.json`, `config.json`), as
    /// `docker/` shows it.
    Image,
}

impl AssetKind {
    /// The kind a URL's file name suggests: `.tar.gz`, `.tgz`, `.tar` are archives, a
    /// `docker://` reference is an image.
    pub fn infer(url: &str) -> AssetKind {
        if url.starts_with("docker://") {
            return AssetKind::Image;
        }
        let path = url
            .split(['#', '?'])
            .next()
            .unwrap_or(url)
            .to_ascii_lowercase();
        if path.ends_with(".tar.gz") || path.ends_with(".tgz") || path.ends_with(".tar") {
            AssetKind::Archive
        } else {
            AssetKind::File
        }
    }

    /// `"file"`, `"archive"` or `"image"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AssetKind::File => "file",
            AssetKind::Archive => "archive",
            AssetKind::Image => "image",
        }
    }

    /// Parses `"file"`, `"archive"` or `"image"`.
    pub fn parse(s: &str) -> Option<AssetKind> {
        match s {
            "file" => Some(AssetKind::File),
            "archive" => Some(AssetKind::Archive),
            "image" => Some(AssetKind::Image),
            _ => None,
        }
    }

    /// The kind of an entry at `location` given `kind` (or none): a `docker://` image is
    /// `image` and nothing else is; otherwise the URL's name decides unless `kind` says.
    pub fn for_location(location: &Location, kind: Option<AssetKind>) -> Result<AssetKind, String> {
        let is_image = matches!(location, Location::Image(_));
        match kind {
            None if is_image => Ok(AssetKind::Image),
            None => Ok(AssetKind::infer(&location.reference().unwrap_or_default())),
            Some(AssetKind::Image) if !is_image => {
                Err("kind = \"image\" needs a docker:// reference".into())
            }
            Some(k) if is_image && k != AssetKind::Image => Err(format!(
                "a docker:// image is shown as an image directory: kind {:?} does not apply",
                k.as_str()
            )),
            Some(k) => Ok(k),
        }
    }
}

/// One hop to reach an origin: straight, or through an HTTP proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Connect to the origin directly.
    Direct,
    /// Go through this HTTP proxy.
    Proxy(Url),
}

/// Proxy groups in the order they are tried; members of one group share the load (CVMFS style).
pub type ProxyGroups = Vec<Vec<Route>>;

/// One `[[asset]]` entry, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetConfig {
    /// Catalog name (may contain `/` and `:`).
    pub name: String,
    /// Where the bytes come from (the url, then its mirrors).
    pub location: Location,
    /// The pinned digest; `None` with a weak pin, a `library://`/`shub://` location (the
    /// publisher's API gives it), or `allow_unpinned`.
    pub sha256: Option<Digest>,
    /// The publisher's md5 or sha1 (`md5 =`, `sha1 =`, `#md5=` in the url): checked on the
    /// whole first download, whose sha256 then pins the entry.
    pub weak: Option<WeakPin>,
    /// File or archive.
    pub kind: AssetKind,
    /// Digest of a chunk index (`lazycas index`), for range-lazy reads.
    pub index_sha256: Option<Digest>,
    /// The blob's size, when the publisher knows it (lets `ls -l` show it before any fetch).
    pub size: Option<u64>,
    /// `fill =` for this asset's chunks nobody read (`None`: the global setting).
    pub fill: Option<Fill>,
}

impl AssetConfig {
    /// Where its bytes come from and what they must hash to; `label` is its name.
    pub fn source(&self) -> Source {
        Source {
            label: self.name.clone(),
            location: self.location.clone(),
            expected: self.sha256,
            weak: self.weak.clone(),
            size_hint: self.size,
            index: self
                .index_sha256
                .map(|d| IndexPin::beside(d, &self.location).with_fill(self.fill)),
        }
    }
}
/// The default `tag_ttl_secs`: a tag is asked for again five minutes after it was resolved.
pub const DEFAULT_TAG_TTL_SECS: u64 = 300;

/// One `[registries."host:port"]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Plain HTTP instead of HTTPS.
    #[serde(default)]
    pub insecure: bool,
    /// Basic-auth user name.
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
    /// A bearer token used as is.
    pub token: Option<String>,
    /// Let every user of the node read what was fetched with these credentials.
    #[serde(default)]
    pub public: bool,
    /// A group whose members may read what was fetched with these credentials (besides the
    /// daemon's user).
    pub readers: Option<String>,
}

impl RegistryConfig {
    /// True when requests to this registry carry credentials (so what they fetch is private
    /// unless `public` or `readers` say otherwise).
    pub fn has_credentials(&self) -> bool {
        self.token.is_some() || (self.username.is_some() && self.password.is_some())
    }
}

/// The gid of group `name`, if the system knows it.
pub fn group_gid(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; the buffer outlives it; getgrnam_r is the
    // thread-safe variant.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(group.gr_gid)
}

/// One `[[directory]]`: a web directory whose images (with casa-distro sidecars) become
/// catalog entries under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    /// The autoindex page (ends in `/`).
    pub url: Url,
    /// The catalog prefix (no trailing `/`).
    pub name: String,
    /// How often the daemon lists it again.
    pub refresh_secs: u64,
    /// Keep images without a checksum (unpinned) instead of skipping them.
    pub allow_unpinned: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    url: String,
    name: String,
    refresh_secs: Option<u64>,
    #[serde(default)]
    allow_unpinned: bool,
}

/// One `[publishers."host:port"]` table: a library or shub host's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherConfig {
    /// Plain HTTP instead of HTTPS.
    #[serde(default)]
    pub insecure: bool,
    /// Bearer token sent to this host only (never to where it redirects downloads).
    pub token: Option<String>,
}

/// Where `library://` and `shub://` references are asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publishers {
    /// The host of `library://entity/collection/container` references without one.
    pub library_host: Option<String>,
    /// The architecture asked of a library (`amd64`, `arm64`, ...).
    pub library_arch: String,
    /// Settings by `host[:port]`.
    pub hosts: BTreeMap<String, PublisherConfig>,
}

impl Publishers {
    /// The settings of `host` (defaults when it has no table).
    pub fn host(&self, host: &str) -> PublisherConfig {
        self.hosts.get(host).cloned().unwrap_or_default()
    }
}

/// The library architecture name of the machine this runs on.
pub fn native_library_arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
    .to_string()
}

/// The whole configuration, checked and typed.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages), if any.
    pub path: Option<PathBuf>,
    /// Store directory.
    pub store: PathBuf,
    /// Upper bound on the bytes the store keeps (`None`: no quota).
    pub quota: Option<u64>,
    /// Free space to keep on the store's file system (`None`: no floor).
    pub min_free: Option<u64>,
    /// Accept URLs without a pinned digest, pinning the first download.
    pub allow_unpinned: bool,
    /// Proxy groups, tried in order.
    pub proxies: ProxyGroups,
    /// Connect and stall deadline.
    pub timeout: Duration,
    /// Size of one parallel range request.
    pub fetch_chunk_size: u64,
    /// Range requests in flight per blob.
    pub fetch_parallel: usize,
    /// Let other users (containers run as other uids) read the mount (root only).
    pub allow_other: bool,
    /// Bytes of decoded archive spans kept in memory (`"auto"`: see [`auto_archive_cache`]).
    pub archive_cache: u64,
    /// Catalog assets from the file.
    pub assets: Vec<AssetConfig>,
    /// What happens to the chunks of range-lazy blobs nobody read, unless an asset says.
    pub fill: Fill,
    /// Registry settings by `host[:port]`.
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Library and shub hosts.
    pub publishers: Publishers,
    /// Asset sets (`[[set]]`).
    pub sets: Vec<crate::sets::SetConfig>,
    /// Web directories (`[[directory]]`).
    pub directories: Vec<DirectoryConfig>,
    /// How long a resolved image tag is trusted before the registry is asked again.
    pub tag_ttl: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<PathBuf>,
    quota: Option<String>,
    min_free: Option<String>,
    #[serde(default)]
    allow_unpinned: bool,
    proxies: Option<Vec<String>>,
    timeout_secs: Option<u64>,
    fetch_chunk_size: Option<String>,
    fetch_parallel: Option<usize>,
    #[serde(default)]
    allow_other: bool,
    archive_cache: Option<String>,
    #[serde(default)]
    fill: Fill,
    #[serde(default)]
    asset: Vec<RawAsset>,
    #[serde(default)]
    registries: BTreeMap<String, RegistryConfig>,
    library_host: Option<String>,
    library_arch: Option<String>,
    #[serde(default)]
    publishers: BTreeMap<String, PublisherConfig>,
    #[serde(default)]
    set: Vec<crate::sets::RawSet>,
    #[serde(default)]
    directory: Vec<RawDirectory>,
    tag_ttl_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsset {
    name: String,
    url: String,
    sha256: Option<String>,
    md5: Option<String>,
    sha1: Option<String>,
    kind: Option<AssetKind>,
    #[serde(default)]
    mirrors: Vec<String>,
    index_sha256: Option<String>,
    size: Option<u64>,
    fill: Option<Fill>,
}

/// Names the mount keeps for itself at the top level.
pub const RESERVED_TOP_LEVEL: &[&str] = &["sha256", "docker", "oras"];

impl Default for Config {
    fn default() -> Config {
        Config::from_raw(RawConfig::default(), None).expect("built-in defaults are valid")
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text, Some(path))?;
        config.check_credentials_private(path)?;
        Ok(config)
    }

    /// A config file holding credentials (a registry password or token, a publisher token) must
    /// not be readable by group or others: such a file is refused, naming the first credential.
    fn check_credentials_private(&self, path: &Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let registry = self.registries.iter().find_map(|(host, r)| {
            let key = match (&r.password, &r.token) {
                (Some(_), _) => "password",
                (None, Some(_)) => "token",
                (None, None) => return None,
            };
            Some(format!("registries.\"{host}\".{key}"))
        });
        let publisher = || {
            self.publishers
                .hosts
                .iter()
                .find(|(_, p)| p.token.is_some())
                .map(|(host, _)| format!("publishers.\"{host}\".token"))
        };
        let Some(key) = registry.or_else(publisher) else {
            return Ok(());
        };
        let mode = std::fs::metadata(path)
            .map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 == 0 {
            return Ok(());
        }
        Err(ConfigError::Value {
            path: path.to_path_buf(),
            key,
            message: format!(
                "the file holds credentials but is readable by others (mode {mode:04o}); chmod 600 it"
            ),
        })
    }

    /// Checks config text; `path` is only used in messages.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            message: one_line_toml_error(text, &e),
        })?;
        Config::from_raw(raw, path)
    }

    fn from_raw(raw: RawConfig, path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = path.map(Path::to_path_buf).unwrap_or_default();
        let bad = |key: &str, message: String| ConfigError::Value {
            path: file.clone(),
            key: key.to_string(),
            message,
        };
        let size = |key: &str, v: &Option<String>| -> Result<Option<u64>, ConfigError> {
            v.as_deref()
                .map(|s| parse_size(s).map_err(|m| bad(key, m)))
                .transpose()
        };
        let quota = size("quota", &raw.quota)?;
        let min_free = size("min_free", &raw.min_free)?;
        let fetch_chunk_size = size("fetch_chunk_size", &raw.fetch_chunk_size)?.unwrap_or(8 << 20);
        if fetch_chunk_size < 64 * 1024 {
            return Err(bad("fetch_chunk_size", "must be at least 64K".into()));
        }
        let archive_cache = match raw.archive_cache.as_deref().map(str::trim) {
            None | Some("auto") => auto_archive_cache(),
            Some(_) => size("archive_cache", &raw.archive_cache)?.unwrap_or(0),
        };
        let fetch_parallel = raw.fetch_parallel.unwrap_or(4);
        if !(1..=64).contains(&fetch_parallel) {
            return Err(bad("fetch_parallel", "must be between 1 and 64".into()));
        }
        let timeout_secs = raw.timeout_secs.unwrap_or(30);
        if !(1..=3600).contains(&timeout_secs) {
            return Err(bad("timeout_secs", "must be between 1 and 3600".into()));
        }
        let proxies = parse_proxies(raw.proxies.as_deref().unwrap_or(&["DIRECT".to_string()]))
            .map_err(|m| bad("proxies", m))?;
        for (host, r) in &raw.registries {
            if let Some(group) = &r.readers {
                if group_gid(group).is_none() {
                    return Err(bad(
                        &format!("registries.\"{host}\".readers"),
                        format!("no group named {group:?}"),
                    ));
                }
            }
        }
        let mut assets = Vec::with_capacity(raw.asset.len());
        for (i, a) in raw.asset.into_iter().enumerate() {
            let asset = check_asset(a, raw.allow_unpinned)
                .map_err(|(field, m)| bad(&format!("asset[{i}].{field}"), m))?;
            if assets.iter().any(|x: &AssetConfig| x.name == asset.name) {
                return Err(bad(
                    &format!("asset[{i}].name"),
                    format!("{:?} is defined twice", asset.name),
                ));
            }
            assets.push(asset);
        }
        let mut sets: Vec<crate::sets::SetConfig> = Vec::with_capacity(raw.set.len());
        for (i, r) in raw.set.iter().enumerate() {
            let set = r
                .check(raw.allow_unpinned)
                .map_err(|(field, m)| bad(&format!("set[{i}].{field}"), m))?;
            if sets.iter().any(|s| s.name == set.name) || assets.iter().any(|a| a.name == set.name)
            {
                return Err(bad(
                    &format!("set[{i}].name"),
                    format!("{:?} is defined twice", set.name),
                ));
            }
            sets.push(set);
        }
        let mut directories: Vec<DirectoryConfig> = Vec::with_capacity(raw.directory.len());
        for (i, d) in raw.directory.into_iter().enumerate() {
            let dir =
                check_directory(d).map_err(|(f, m)| bad(&format!("directory[{i}].{f}"), m))?;
            if directories.iter().any(|x| x.name == dir.name) {
                return Err(bad(
                    &format!("directory[{i}].name"),
                    format!("{:?} is defined twice", dir.name),
                ));
            }
            directories.push(dir);
        }
        Ok(Config {
            sets,
            directories,
            path: path.map(Path::to_path_buf),
            store: raw.store.unwrap_or_else(default_store_dir),
            quota,
            min_free,
            allow_unpinned: raw.allow_unpinned,
            proxies,
            timeout: Duration::from_secs(timeout_secs),
            fetch_chunk_size,
            fetch_parallel,
            allow_other: raw.allow_other,
            archive_cache,
            assets,
            fill: raw.fill,
            registries: raw.registries,
            publishers: Publishers {
                library_host: raw.library_host,
                library_arch: raw.library_arch.unwrap_or_else(native_library_arch),
                hosts: raw.publishers,
            },
            tag_ttl: Duration::from_secs(raw.tag_ttl_secs.unwrap_or(DEFAULT_TAG_TTL_SECS)),
        })
    }
}

fn check_asset(a: RawAsset, allow_unpinned: bool) -> Result<AssetConfig, (&'static str, String)> {
    check_name(&a.name).map_err(|m| ("name", m))?;
    let Reference {
        location,
        sha256,
        weak,
    } = check_reference(
        &a.url,
        PinFields {
            sha256: a.sha256.as_deref(),
            md5: a.md5.as_deref(),
            sha1: a.sha1.as_deref(),
        },
        allow_unpinned,
    )
    .map_err(|(field, m)| match field {
        "sha256" if m.starts_with("missing") => (field, format!("{m} (for {:?})", a.name)),
        _ => (field, m),
    })?;
    let mirrors = a
        .mirrors
        .iter()
        .map(|m| parse_url_with_digest(m).map(|(u, _)| u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| ("mirrors", m))?;
    let location = match location {
        Location::Http { urls } => Location::Http {
            urls: urls.into_iter().chain(mirrors).collect(),
        },
        other if mirrors.is_empty() => other,
        _ => return Err(("mirrors", "only http(s) urls have mirrors".into())),
    };
    let index_sha256 = a
        .index_sha256
        .as_deref()
        .map(Digest::parse)
        .transpose()
        .map_err(|e| ("index_sha256", e.to_string()))?;
    let kind = AssetKind::for_location(&location, a.kind).map_err(|m| ("kind", m))?;
    if kind == AssetKind::Image {
        if index_sha256.is_some() {
            return Err((
                "index_sha256",
                "a docker:// image has no chunk index".into(),
            ));
        }
        if a.size.is_some() {
            return Err(("size", "a docker:// image's size is its layers'".into()));
        }
    }
    Ok(AssetConfig {
        kind,
        name: a.name,
        location,
        sha256,
        weak,
        index_sha256,
        size: a.size,
        fill: a.fill,
    })
}

fn check_directory(d: RawDirectory) -> Result<DirectoryConfig, (&'static str, String)> {
    let name = d.name.trim_end_matches('/').to_string();
    check_name(&name).map_err(|m| ("name", m))?;
    let (mut url, _) = parse_url_with_digest(&d.url).map_err(|m| ("url", m))?;
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    let refresh_secs = d.refresh_secs.unwrap_or(3600);
    if refresh_secs == 0 {
        return Err(("refresh_secs", "must be at least 1".into()));
    }
    Ok(DirectoryConfig {
        url,
        name,
        refresh_secs,
        allow_unpinned: d.allow_unpinned,
    })
}

/// The pin fields beside a `url` (`[[asset]]`, set members).
#[derive(Debug, Clone, Copy, Default)]
pub struct PinFields<'a> {
    /// `sha256 = "<hex>"`.
    pub sha256: Option<&'a str>,
    /// `md5 = "<hex>"` (weak).
    pub md5: Option<&'a str>,
    /// `sha1 = "<hex>"` (weak).
    pub sha1: Option<&'a str>,
}

/// A checked reference and its pins.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Where the bytes are.
    pub location: Location,
    /// The pinned sha256.
    pub sha256: Option<Digest>,
    /// A publisher's weak checksum.
    pub weak: Option<WeakPin>,
}

/// Parses a reference (`url`) with its pin fields: the location, the sha256 (from the field or
/// the url's `#sha256=`, which must agree) and the one weak pin. Refuses an http(s) url with no
/// pin at all unless `allow_unpinned` (a library or shub reference is pinned by its publisher,
/// a `docker://` image by `@sha256:` or else its tag, resolved as under `docker/`).
pub fn check_reference(
    url: &str,
    pins: PinFields<'_>,
    allow_unpinned: bool,
) -> Result<Reference, (&'static str, String)> {
    let (location, in_url) = crate::publish::parse_reference(url).map_err(|m| ("url", m))?;
    let sha256 = match (pins.sha256, in_url.sha256) {
        (Some(s), frag) => {
            let d = Digest::parse(s).map_err(|e| ("sha256", e.to_string()))?;
            if frag.is_some_and(|f| f != d) {
                return Err(("sha256", "differs from the sha256 in the url".into()));
            }
            Some(d)
        }
        (None, frag) => frag,
    };
    let weak = weak_pin(pins.md5, pins.sha1, in_url.weak)?;
    if matches!(location, Location::Image(_)) && (sha256.is_some() || weak.is_some()) {
        let field = if sha256.is_some() { "sha256" } else { "md5" };
        return Err((
            field,
            "a docker:// image is pinned by its manifest digest in the url (…@sha256:<hex>)".into(),
        ));
    }
    let by_publisher = !matches!(location, Location::Http { .. });
    if sha256.is_none() && weak.is_none() && !by_publisher && !allow_unpinned {
        return Err((
            "sha256",
            "missing: pin a sha256 (or md5/sha1) or set allow_unpinned = true".into(),
        ));
    }
    Ok(Reference {
        location,
        sha256,
        weak,
    })
}

/// The one weak pin given by `md5`, `sha1` or the url's fragment (more than one is an error
/// unless they agree).
pub fn weak_pin(
    md5: Option<&str>,
    sha1: Option<&str>,
    from_url: Option<WeakPin>,
) -> Result<Option<WeakPin>, (&'static str, String)> {
    let md5 = md5
        .map(|h| WeakPin::parse(WeakAlgorithm::Md5, h))
        .transpose()
        .map_err(|m| ("md5", m))?;
    let sha1 = sha1
        .map(|h| WeakPin::parse(WeakAlgorithm::Sha1, h))
        .transpose()
        .map_err(|m| ("sha1", m))?;
    let mut given = [md5, sha1, from_url].into_iter().flatten();
    let first = given.next();
    if let Some(other) = given.find(|p| Some(p) != first.as_ref()) {
        return Err((
            "md5",
            format!(
                "two different weak pins ({} and {})",
                first.map(|p| p.fragment()).unwrap_or_default(),
                other.fragment()
            ),
        ));
    }
    Ok(first)
}

/// Checks a catalog name: relative, `/`-separated, no empty, `.` or `..` component, and not
/// under a top-level directory the mount reserves.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 4096 || name.contains('\0') {
        return Err(format!("{name:?} is not a usable path"));
    }
    let mut parts = name.split('/');
    if parts
        .clone()
        .any(|p| p.is_empty() || p == "." || p == ".." || p.len() > 255)
    {
        return Err(format!(
            "{name:?}: components must be non-empty, not . or .., at most 255 bytes"
        ));
    }
    if let Some(first) = parts.next() {
        if RESERVED_TOP_LEVEL.contains(&first) {
            return Err(format!(
                "{name:?}: top-level {first:?} is reserved by the mount"
            ));
        }
    }
    Ok(())
}

/// Parses an http(s) URL, taking a `#sha256=<hex>` fragment off as the pinned digest.
pub fn parse_url_with_digest(s: &str) -> Result<(Url, Option<Digest>), String> {
    match parse_url_with_pins(s)? {
        (url, digest, None) => Ok((url, digest)),
        (_, _, Some(_)) => Err(format!("{s:?}: fragment must be #sha256=<64 hex>")),
    }
}

/// Parses an http(s) URL, taking a `#sha256=<hex>`, `#md5=<hex>` or `#sha1=<hex>` fragment
/// off as its pin.
pub fn parse_url_with_pins(s: &str) -> Result<(Url, Option<Digest>, Option<WeakPin>), String> {
    let mut url = Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{s:?}: only http:// and https:// URLs are fetched"));
    }
    let (digest, weak) = match url.fragment() {
        Some(f) => match (f.strip_prefix("sha256="), WeakPin::from_fragment(f)) {
            (Some(hex), _) => (
                Some(Digest::parse(hex).map_err(|e| format!("{s:?}: {e}"))?),
                None,
            ),
            (None, Some(weak)) => (None, Some(weak.map_err(|e| format!("{s:?}: {e}"))?)),
            (None, None) => {
                return Err(format!(
                    "{s:?}: fragment must be #sha256=, #md5= or #sha1=<hex>"
                ))
            }
        },
        None => (None, None),
    };
    url.set_fragment(None);
    Ok((url, digest, weak))
}

/// Parses `proxies`: list items and `;` separate groups, `|` separates members of one group,
/// `DIRECT` means no proxy.
pub fn parse_proxies(items: &[String]) -> Result<ProxyGroups, String> {
    let mut groups = Vec::new();
    for group in items.iter().flat_map(|i| i.split(';')) {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let members = group
            .split('|')
            .map(|m| parse_route(m.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        groups.push(members);
    }
    if groups.is_empty() {
        return Err("no proxy group (use [\"DIRECT\"] for none)".into());
    }
    Ok(groups)
}

fn parse_route(s: &str) -> Result<Route, String> {
    if s.eq_ignore_ascii_case("DIRECT") {
        return Ok(Route::Direct);
    }
    let url = Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err(format!("{s:?}: a proxy is http://host:port or DIRECT"));
    }
    Ok(Route::Proxy(url))
}

/// The default `archive_cache`: 1/1024 of the memory this process may use (the machine's, or
/// its cgroup's limit when lower), between 4 MiB and 16 MiB. Decoded data that is read again
/// lives on disk (members read whole are kept decoded in the store) and in the kernel's page
/// cache, which gives it back under memory pressure; the daemon's own cache only smooths
/// neighbouring reads. Idle spans are released after a few minutes.
pub fn auto_archive_cache() -> u64 {
    const MIN: u64 = 4 << 20;
    const MAX: u64 = 16 << 20;
    let total = [mem_total(), cgroup_memory_max()]
        .into_iter()
        .flatten()
        .min();
    total.map_or(MIN, |t| (t / 1024).clamp(MIN, MAX))
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn mem_total() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's cgroup v2 `memory.max` (e.g. systemd's `MemoryMax=`), if it sets one.
fn cgroup_memory_max() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let max = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/memory.max")).ok()?;
    max.trim().parse().ok()
}

/// Parses `"50G"`, `"512M"`, `"1.5T"`, `"4096"` (binary units; `B`, `iB` suffixes accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some(c @ ('K' | 'k' | 'M' | 'm' | 'G' | 'g' | 'T' | 't')) => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                _ => 40,
            };
            (&t[..t.len() - 1], shift)
        }
        _ => (t, 0),
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 512M, 50G)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{s:?} is not a size"));
    }
    let bytes = value * (1u64 << shift) as f64;
    if bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes as u64)
}

/// Prints a byte count the way [`parse_size`] reads it (`1.5G`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// `/var/cache/lazycas` for root, `$XDG_CACHE_HOME/lazycas` (or `~/.cache/lazycas`) otherwise.
pub fn default_store_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/lazycas");
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("lazycas");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/lazycas"),
        None => PathBuf::from("/tmp/lazycas"),
    }
}

/// toml's message on one line, with the line number and, for a bad value, the key it belongs
/// to (toml names unknown keys itself, but not the key of a value of the wrong type).
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().replace('\n', " ");
    let Some(span) = e.span() else {
        return msg;
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !msg.contains(&format!("`{k}`")));
    match key {
        Some(k) => format!("line {line_no}: {k}: {msg}"),
        None => format!("line {line_no}: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", None).unwrap();
        assert_eq!(c.proxies, vec![vec![Route::Direct]]);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert!(c.assets.is_empty());
        assert_eq!(c.quota, None);
        assert!((4 << 20..=16 << 20).contains(&c.archive_cache));
        assert_eq!(c.archive_cache, auto_archive_cache());
    }

    #[test]
    fn archive_cache_is_auto_or_a_size() {
        let auto = Config::parse("archive_cache = \"auto\"", None).unwrap();
        assert_eq!(auto.archive_cache, auto_archive_cache());
        let fixed = Config::parse("archive_cache = \"16M\"", None).unwrap();
        assert_eq!(fixed.archive_cache, 16 << 20);
        let err = Config::parse("archive_cache = \"lots\"", None).unwrap_err();
        assert!(err.to_string().contains("archive_cache"), "{err}");
    }

    #[test]
    fn full_example_parses() {
        let text = format!(
            r#"
store = "/tmp/s"
quota = "50G"
min_free = "5G"
proxies = ["http://p1:3128|http://p2:3128;http://p3:3128", "DIRECT"]
timeout_secs = 5

[[asset]]
name = "medperf/fets/additional_files"
url = "https://example.org/fets/additional_files.tar.gz"
sha256 = "{HEX}"
mirrors = ["https://mirror.example.org/x.tar.gz"]

[[asset]]
name = "images/x:1.0.sif"
url = "http://127.0.0.1/x.sif#sha256={HEX}"

[registries."127.0.0.1:5000"]
insecure = true
"#
        );
        let c = Config::parse(&text, None).unwrap();
        assert_eq!(c.quota, Some(50 << 30));
        assert_eq!(c.proxies.len(), 3);
        assert_eq!(c.proxies[0].len(), 2);
        assert_eq!(c.assets[0].kind, AssetKind::Archive);
        assert_eq!(c.assets[1].kind, AssetKind::File);
        assert_eq!(c.assets[1].sha256, Some(Digest::parse(HEX).unwrap()));
        assert!(c.registries["127.0.0.1:5000"].insecure);
        assert_eq!(c.tag_ttl, Duration::from_secs(DEFAULT_TAG_TTL_SECS));
    }

    #[test]
    fn registry_readers_must_be_a_group() {
        let ok = Config::parse(
            "[registries.\"r:1\"]\nreaders = \"root\"\npublic = false\n",
            None,
        )
        .unwrap();
        assert_eq!(ok.registries["r:1"].readers.as_deref(), Some("root"));
        assert_eq!(group_gid("root"), Some(0));
        let err = Config::parse(
            "[registries.\"r:1\"]\nreaders = \"no-such-group-x\"\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("registries.\"r:1\".readers"), "{err}");
    }

    #[test]
    fn fill_is_global_and_per_asset() {
        let asset = |extra: &str| {
            format!(
                "[[asset]]\nname = \"a\"\nurl = \"http://x/a\"\nsha256 = \"{HEX}\"\nindex_sha256 = \"{HEX}\"\n{extra}"
            )
        };
        let plain = Config::parse(&asset(""), None).unwrap();
        assert_eq!(plain.fill, Fill::OnDemand);
        assert_eq!(plain.assets[0].fill, None);
        let global = Config::parse(&format!("fill = \"background\"\n{}", asset("")), None).unwrap();
        assert_eq!(global.fill, Fill::Background);
        let own = Config::parse(&asset("fill = \"on-demand\"\n"), None).unwrap();
        let pin = own.assets[0].source().index.unwrap();
        assert_eq!(pin.fill, Some(Fill::OnDemand));
        let e = Config::parse("fill = \"sometimes\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fill"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("quotaa = \"1G\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("quotaa") && e.contains("line 1"), "{e}");
        let e = Config::parse("quota = \"lots\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("quota"), "{e}");
        let e = Config::parse("\ntimeout_secs = \"soon\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: timeout_secs:"), "{e}");
        let text = "[[asset]]\nname = \"a\"\nurl = \"http://x/a\"\n";
        let e = Config::parse(text, None).unwrap_err().to_string();
        assert!(e.contains("asset[0].sha256"), "{e}");
        let text =
            format!("[[asset]]\nname = \"sha256/x\"\nurl = \"http://x/a\"\nsha256 = \"{HEX}\"\n");
        let e = Config::parse(&text, None).unwrap_err().to_string();
        assert!(e.contains("asset[0].name"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("G").is_err());
        assert_eq!(format_size(3 << 29), "1.5G");
    }

    #[test]
    fn docker_assets_are_images_pinned_in_the_url() {
        let asset = |fields: &str| {
            Config::parse(
                &format!("[[asset]]\nname = \"team/app\"\nurl = \"docker://127.0.0.1:5000/team/app:1\"\n{fields}"),
                None,
            )
        };
        let c = asset("").unwrap();
        assert_eq!(c.assets[0].kind, AssetKind::Image);
        assert!(matches!(c.assets[0].location, Location::Image(_)));
        assert!(asset("kind = \"image\"").is_ok());
        for (fields, key) in [
            ("kind = \"file\"", "kind"),
            (&*format!("sha256 = \"{HEX}\""), "sha256"),
            ("size = 3", "size"),
        ] {
            let err = asset(fields).unwrap_err().to_string();
            assert!(err.contains(key), "{fields}: {err}");
        }
        let err = Config::parse(
            &format!(
                "[[asset]]\nname = \"a\"\nurl = \"http://h/a#sha256={HEX}\"\nkind = \"image\"\n"
            ),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("docker://"), "{err}");
    }

    #[test]
    fn kind_inference() {
        assert_eq!(AssetKind::infer("http://h/a.tar.gz"), AssetKind::Archive);
        assert_eq!(AssetKind::infer("http://h/a.TGZ?x=1"), AssetKind::Archive);
        assert_eq!(AssetKind::infer("http://h/a.sif"), AssetKind::File);
    }

    #[test]
    fn credentials_in_a_file_others_can_read_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lazycas.toml");
        std::fs::write(&path, "[publishers.\"h:1\"]\ntoken = \"t\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("publishers.\"h:1\".token") && e.contains("mode 0640"),
            "{e}"
        );
        assert!(!e.contains("\"t\""), "the token is not in the message: {e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Config::load(&path).unwrap();
        std::fs::write(&path, "timeout_secs = 5\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Config::load(&path).unwrap();
    }
}
