//! Where content comes from, as data: [`Location`] says where the bytes live (plain HTTP(S)
//! URLs, a Sylabs-style library image, a Singularity Registry Server container, or a blob of
//! an OCI registry repository, or a whole `docker://` image named by a catalog entry), [`Source`] adds what the bytes must hash to (a sha256, or only
//! a publisher's weak [`WeakPin`]) and what to call them in log lines. Nothing here fetches:
//! `content` reads a `Source` and drives `fetch` (through `publish` for the library and shub);
//! `catalog` and the namespaces only build and pass them around.

use url::Url;

use crate::digest::Digest;
use crate::oci::reference::ImageReference;

/// Where the bytes of one blob can be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Plain HTTP(S): the same bytes at each URL, tried in order (primary, then mirrors).
    Http {
        /// Never empty when built by the config or the catalog.
        urls: Vec<Url>,
    },
    /// `library://[host/]entity/collection/container[:tag]`: asked of a Sylabs-style library.
    Library {
        /// The library host (`host[:port]`); `None`: the config's `library_host`.
        host: Option<String>,
        /// `entity/collection/container`.
        path: String,
        /// The tag, or `sha256.<hex>`.
        tag: String,
    },
    /// `shub://host/collection/container:tag`: asked of a Singularity Registry Server.
    Shub {
        /// The registry host (`host[:port]`).
        host: String,
        /// The collection.
        collection: String,
        /// The container.
        container: String,
        /// The tag.
        tag: String,
    },
    /// A blob of a registry repository (`/v2/<repository>/blobs/<digest>`), fetched with the
    /// registry's credentials; `content` turns it into a URL and an `Authorization` header.
    Registry {
        /// The registry as references name it (`127.0.0.1:5000`, `docker.io`).
        registry: String,
        /// The repository (`library/alpine`).
        repository: String,
        /// The blob's digest.
        digest: Digest,
    },
    /// A container image by reference (`docker://registry/repo:tag[@sha256:…]`): not one blob
    /// but its manifest, config and layers, which `docker/` resolves and fetches.
    Image(ImageReference),
}

impl Location {
    /// One URL and its mirrors.
    pub fn http(primary: Url, mirrors: Vec<Url>) -> Location {
        let mut urls = Vec::with_capacity(1 + mirrors.len());
        urls.push(primary);
        urls.extend(mirrors);
        Location::Http { urls }
    }

    /// The first place to ask (what `user.lazycas.source` and `lazycas ls` show).
    pub fn primary(&self) -> Option<&Url> {
        match self {
            Location::Http { urls } => urls.first(),
            Location::Library { .. }
            | Location::Shub { .. }
            | Location::Registry { .. }
            | Location::Image(_) => None,
        }
    }

    /// Every place after the first.
    pub fn mirrors(&self) -> &[Url] {
        match self {
            Location::Http { urls } => urls.get(1..).unwrap_or(&[]),
            Location::Library { .. }
            | Location::Shub { .. }
            | Location::Registry { .. }
            | Location::Image(_) => &[],
        }
    }

    /// A stable text naming this location, used to remember what an unpinned location
    /// resolved to (the store's `refs` table), and what the catalog stores as its `url`.
    pub fn reference(&self) -> Option<String> {
        match self {
            Location::Http { urls } => urls.first().map(|u| u.to_string()),
            Location::Library { host, path, tag } => Some(match host {
                Some(h) => format!("library://{h}/{path}:{tag}"),
                None => format!("library://{path}:{tag}"),
            }),
            Location::Shub {
                host,
                collection,
                container,
                tag,
            } => Some(format!("shub://{host}/{collection}/{container}:{tag}")),
            Location::Registry {
                registry,
                repository,
                digest,
            } => Some(format!("docker://{registry}/{repository}@{digest}")),
            Location::Image(reference) => Some(reference.to_string()),
        }
    }

    /// How to show the location to a person.
    pub fn describe(&self) -> String {
        self.reference().unwrap_or_else(|| "(nowhere)".to_string())
    }
}

/// The hash functions publishers still use for checksums, accepted only as weak pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeakAlgorithm {
    /// MD5 (casa-distro sidecars, Singularity Registry Server versions).
    Md5,
    /// SHA-1 (older MedPerf hashes).
    Sha1,
}

impl WeakAlgorithm {
    /// `"md5"` or `"sha1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WeakAlgorithm::Md5 => "md5",
            WeakAlgorithm::Sha1 => "sha1",
        }
    }

    /// Length of a digest in hex.
    fn hex_len(self) -> usize {
        match self {
            WeakAlgorithm::Md5 => 32,
            WeakAlgorithm::Sha1 => 40,
        }
    }
}

/// A publisher's md5 or sha1 of a file: the whole download must match it before anything is
/// served, and then the download's sha256 pins the asset from then on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakPin {
    /// Which hash.
    pub algorithm: WeakAlgorithm,
    /// The digest, lower-case hex of the right length.
    pub hex: String,
}

impl WeakPin {
    /// Checks `hex` as a digest of `algorithm`.
    pub fn parse(algorithm: WeakAlgorithm, hex: &str) -> Result<WeakPin, String> {
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{hex:?} is not a {} ({} hex digits)",
                algorithm.as_str(),
                algorithm.hex_len()
            ));
        }
        Ok(WeakPin { algorithm, hex })
    }

    /// `md5=<hex>` or `sha1=<hex>` (a URL fragment, and part of the `refs` key).
    pub fn fragment(&self) -> String {
        format!("{}={}", self.algorithm.as_str(), self.hex)
    }

    /// Parses a [`WeakPin::fragment`].
    pub fn from_fragment(fragment: &str) -> Option<Result<WeakPin, String>> {
        let (name, hex) = fragment.split_once('=')?;
        let algorithm = match name {
            "md5" => WeakAlgorithm::Md5,
            "sha1" => WeakAlgorithm::Sha1,
            _ => return None,
        };
        Some(WeakPin::parse(algorithm, hex))
    }
}

/// A pinned chunk index for a blob: reads then fetch only the chunks they need, each
/// verified against the index (`crate::chunk::ChunkIndex`), instead of the whole blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPin {
    /// What the index file must hash to (checked before it is parsed).
    pub digest: Digest,
    /// Where the index file is, tried in order.
    pub urls: Vec<Url>,
    /// Whether the chunks nobody read are fetched too; `None`: the config's global `fill`.
    pub fill: Option<Fill>,
}

/// What happens to the chunks of a range-lazy blob that no reader asked for (`fill =` in the
/// config, per asset or global).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fill {
    /// Fetched only when read.
    #[default]
    OnDemand,
    /// After the first read, fetched in the background at low priority (foreground reads go
    /// first), until the blob is complete.
    Background,
}

impl IndexPin {
    /// The index pinned to `digest`, published beside each of `location`'s URLs as
    /// `<url>.lazycas-index`.
    pub fn beside(digest: Digest, location: &Location) -> IndexPin {
        let urls = match location {
            Location::Http { urls } => urls
                .iter()
                .filter_map(|u| Url::parse(&format!("{u}.lazycas-index")).ok())
                .collect(),
            // Resolved to a URL only when fetched; an index must then be given explicitly.
            Location::Library { .. }
            | Location::Shub { .. }
            | Location::Registry { .. }
            | Location::Image(_) => Vec::new(),
        };
        IndexPin {
            digest,
            urls,
            fill: None,
        }
    }

    /// The same pin with the asset's own `fill` setting.
    pub fn with_fill(self, fill: Option<Fill>) -> IndexPin {
        IndexPin { fill, ..self }
    }
}

/// One blob to make local: where from, and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The asset name or reference, for log lines and errors.
    pub label: String,
    /// Where the bytes are.
    pub location: Location,
    /// The pinned digest; `None` (only with `allow_unpinned`) accepts and then pins whatever
    /// the first complete download hashes to.
    pub expected: Option<Digest>,
    /// A publisher's md5/sha1 the first download must match when no sha256 is pinned.
    pub weak: Option<WeakPin>,
    /// A pinned chunk index: the blob can be read chunk by chunk before it is all here.
    pub index: Option<IndexPin>,
    /// The size, when known beforehand (lets the store make room before downloading).
    pub size_hint: Option<u64>,
}

impl Source {
    /// A source known only by its digest: held in the store, or nowhere.
    pub fn stored(digest: Digest) -> Source {
        Source {
            label: digest.to_string(),
            location: Location::Http { urls: Vec::new() },
            expected: Some(digest),
            weak: None,
            size_hint: None,
            index: None,
        }
    }

    /// The key under which the store's `refs` table remembers what this source resolved to:
    /// the location, plus the weak pin it was verified against.
    pub fn reference_key(&self) -> Option<String> {
        let reference = self.location.reference()?;
        Some(match &self.weak {
            Some(w) => format!("{reference}#{}", w.fragment()),
            None => reference,
        })
    }

    /// The key concurrent requests for the same content share: the digest when pinned, else
    /// the location.
    pub fn flight_key(&self) -> String {
        match (&self.expected, self.reference_key()) {
            (Some(d), _) => d.to_string(),
            (None, Some(r)) => r,
            (None, None) => self.label.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_follow_the_primary() {
        let p = Url::parse("http://127.0.0.1/a").unwrap();
        let m = Url::parse("http://127.0.0.1:81/a").unwrap();
        let l = Location::http(p.clone(), vec![m.clone()]);
        assert_eq!(l.primary(), Some(&p));
        assert_eq!(l.mirrors(), &[m]);
        assert_eq!(l.reference().as_deref(), Some("http://127.0.0.1/a"));
    }

    #[test]
    fn flight_key_prefers_the_digest() {
        let d = Digest::of(b"x");
        let mut s = Source::stored(d);
        assert_eq!(s.flight_key(), d.to_string());
        s.expected = None;
        s.location = Location::http(Url::parse("http://127.0.0.1/a").unwrap(), vec![]);
        assert_eq!(s.flight_key(), "http://127.0.0.1/a");
    }

    #[test]
    fn registry_blobs_are_named_by_their_reference() {
        let d = Digest::of(b"layer");
        let l = Location::Registry {
            registry: "127.0.0.1:5000".into(),
            repository: "team/app".into(),
            digest: d,
        };
        assert_eq!(l.primary(), None);
        assert_eq!(
            l.describe(),
            format!("docker://127.0.0.1:5000/team/app@{d}")
        );
    }
}
