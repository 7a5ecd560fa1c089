//! Where HPC and MedPerf publishers put things, as the publishers' own APIs describe them:
//! catalog references (`https://…#md5=…`, `library://…`, `shub://…`, `docker://…`) parsed into a
//! [`Location`] and its pins ([`parse_reference`]), and the registry lookups that turn a
//! library or shub reference into a blob URL and the digest to check ([`resolve`]).
//!
//! Only `content` calls [`resolve`], just before a download; the answers travel through the
//! fetcher's document GETs (proxies, deadlines, retries). Bearer tokens from the config go to
//! the library or shub host only: the blob request carries the token in an `Authorization`
//! header that the HTTP client drops when a redirect leaves that host.

pub mod directory;
mod library;
pub mod medperf;
mod shub;

pub use library::image_answer;
pub use shub::container_answer;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use url::Url;

use crate::config::{parse_url_with_pins, Publishers};
use crate::digest::Digest;
use crate::fetch::{FetchError, Fetcher};
use crate::oci::reference::{ImageReference, ReferenceKind};
use crate::source::{Location, WeakAlgorithm, WeakPin};

/// What a reference pins by itself (`#sha256=`, `#md5=`, `:sha256.<hex>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// A sha256 the bytes must have.
    pub sha256: Option<Digest>,
    /// A publisher's weak checksum.
    pub weak: Option<WeakPin>,
}

/// Why a library or shub reference could not be resolved. `Display` names the reference.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The lookup did not get an answer.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The registry answered, but not with what the API describes.
    #[error("{reference}: {message}")]
    Answer {
        /// The `library://` or `shub://` reference.
        reference: String,
        /// What was wrong.
        message: String,
    },
    /// The reference cannot be asked anywhere (no library host configured).
    #[error("{reference}: {message}")]
    Config {
        /// The reference.
        reference: String,
        /// What is missing.
        message: String,
    },
}

/// Where to download a resolved reference, and what the bytes must match.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The blob URL(s).
    pub urls: Vec<Url>,
    /// Headers for the blob request (the library's bearer token: dropped on a cross-host
    /// redirect).
    pub headers: HeaderMap,
    /// The sha256 the publisher states.
    pub sha256: Option<Digest>,
    /// A weak checksum the publisher states (shub md5 versions).
    pub weak: Option<WeakPin>,
    /// The size the publisher states.
    pub size: Option<u64>,
}

/// Largest registry answer accepted.
const MAX_ANSWER: usize = 1 << 20;

/// Parses a catalog reference: an http(s) URL (pins in its fragment), a `library://` or a
/// `shub://` reference, or a `docker://` image (pinned, if at all, by `@sha256:` in the
/// reference itself: no separate [`Pins`]).
pub fn parse_reference(s: &str) -> Result<(Location, Pins), String> {
    if s.starts_with("docker://") {
        let reference = ImageReference::parse(s).map_err(|e| e.to_string())?;
        if reference.kind() != ReferenceKind::Image {
            return Err(format!("{s:?} is not a docker:// image"));
        }
        return Ok((Location::Image(reference), Pins::default()));
    }
    if let Some(rest) = s.strip_prefix("library://") {
        return library::parse(s, rest);
    }
    if let Some(rest) = s.strip_prefix("shub://") {
        return shub::parse(s, rest);
    }
    let (url, sha256, weak) = parse_url_with_pins(s)?;
    Ok((Location::http(url, Vec::new()), Pins { sha256, weak }))
}

/// Asks the publisher where the bytes of `location` are and what they hash to. Plain HTTP
/// locations resolve to themselves.
pub async fn resolve(
    fetcher: &Fetcher,
    publishers: &Publishers,
    location: &Location,
) -> Result<Resolved, PublishError> {
    match location {
        Location::Registry { .. } | Location::Image(_) => Err(PublishError::Config {
            reference: location.describe(),
            message: "a registry blob or image is fetched by the registry client, not a publisher"
                .into(),
        }),
        Location::Http { urls } => Ok(Resolved {
            urls: urls.clone(),
            headers: HeaderMap::new(),
            sha256: None,
            weak: None,
            size: None,
        }),
        Location::Library { host, path, tag } => {
            library::resolve(fetcher, publishers, location, host.as_deref(), path, tag).await
        }
        Location::Shub {
            host,
            collection,
            container,
            tag,
        } => {
            let reference = location.reference().unwrap_or_default();
            let target = shub::Target {
                reference: &reference,
                host,
                collection,
                container,
                tag,
            };
            shub::resolve(fetcher, publishers, &target).await
        }
    }
}

/// `http://host/` or `https://host/` as the host's settings say.
fn base_url(publishers: &Publishers, host: &str, reference: &str) -> Result<Url, PublishError> {
    let scheme = if publishers.host(host).insecure {
        "http"
    } else {
        "https"
    };
    Url::parse(&format!("{scheme}://{host}/")).map_err(|e| PublishError::Config {
        reference: reference.to_string(),
        message: format!("host {host:?}: {e}"),
    })
}

/// `Authorization: Bearer <token>` for `host`, when the config has a token for it.
fn bearer(publishers: &Publishers, host: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(token) = publishers.host(host).token {
        if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {token}")) {
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
    }
    headers
}

/// Reads a publisher's digest text: `sha256.<hex>`, `sha256:<hex>` or 64 hex digits is a
/// sha256; `md5.<hex>` or 32 hex digits an md5 (a weak pin); `sha1.<hex>` or 40 hex a sha1.
fn publisher_digest(text: &str) -> Option<(Option<Digest>, Option<WeakPin>)> {
    let t = text.trim();
    let (algo, hex) = match t.split_once(['.', ':']) {
        Some((a, h)) => (Some(a.to_ascii_lowercase()), h),
        None => (None, t),
    };
    match (algo.as_deref(), hex.len()) {
        (Some("sha256") | None, 64) => Digest::parse(hex).ok().map(|d| (Some(d), None)),
        (Some("md5") | None, 32) => WeakPin::parse(WeakAlgorithm::Md5, hex)
            .ok()
            .map(|w| (None, Some(w))),
        (Some("sha1") | None, 40) => WeakPin::parse(WeakAlgorithm::Sha1, hex)
            .ok()
            .map(|w| (None, Some(w))),
        _ => None,
    }
}

/// Splits `name:tag` (the tag defaults to `latest`).
fn split_tag(last: &str) -> (&str, &str) {
    match last.rsplit_once(':') {
        Some((name, tag)) if !tag.is_empty() => (name, tag),
        _ => (last.trim_end_matches(':'), "latest"),
    }
}

/// True for a usable path component of a reference.
fn plain_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn http_references_carry_their_pins() {
        let (l, p) =
            parse_reference("http://h/a.sif#md5=D41D8CD98F00B204E9800998ECF8427E").unwrap();
        assert_eq!(l.reference().as_deref(), Some("http://h/a.sif"));
        assert_eq!(
            p.weak.map(|w| w.fragment()),
            Some("md5=d41d8cd98f00b204e9800998ecf8427e".to_string())
        );
        assert!(parse_reference("http://h/a#md5=12").is_err());
        assert!(parse_reference("ftp://h/a").is_err());
    }

    #[test]
    fn library_references() {
        let (l, p) = parse_reference("library://lib.example:8080/ent/coll/cont:1.0").unwrap();
        assert_eq!(
            l,
            Location::Library {
                host: Some("lib.example:8080".into()),
                path: "ent/coll/cont".into(),
                tag: "1.0".into()
            }
        );
        assert_eq!(p, Pins::default());
        let (l, p) = parse_reference(&format!("library://ent/coll/cont:sha256.{HEX}")).unwrap();
        assert!(matches!(l, Location::Library { host: None, .. }));
        assert_eq!(p.sha256, Some(Digest::parse(HEX).unwrap()));
        let (l, _) = parse_reference("library://ent/coll/cont").unwrap();
        assert_eq!(
            l.reference().as_deref(),
            Some("library://ent/coll/cont:latest")
        );
        assert!(parse_reference("library://cont").is_err());
        assert!(parse_reference("library://a/b/c/d/e").is_err());
        assert!(parse_reference("library://a/../c").is_err());
    }

    #[test]
    fn shub_references() {
        let (l, _) = parse_reference("shub://127.0.0.1:9/coll/cont:v1").unwrap();
        assert_eq!(
            l.reference().as_deref(),
            Some("shub://127.0.0.1:9/coll/cont:v1")
        );
        assert!(parse_reference("shub://host/cont:v1").is_err());
    }

    #[test]
    fn docker_references_are_images_pinned_by_their_manifest_digest() {
        let (l, p) = parse_reference("docker://127.0.0.1:5000/team/app:1.4").unwrap();
        assert_eq!(p, Pins::default());
        let Location::Image(r) = &l else {
            panic!("not an image: {l:?}");
        };
        assert_eq!((r.repository(), r.tag()), ("team/app", Some("1.4")));
        assert_eq!(
            l.reference().as_deref(),
            Some("docker://127.0.0.1:5000/team/app:1.4")
        );
        let (l, _) = parse_reference(&format!("docker://h:5000/a:1@sha256:{HEX}")).unwrap();
        assert!(
            matches!(&l, Location::Image(r) if r.digest().map(|d| d.hex()) == Some(HEX.into()))
        );
        assert!(parse_reference("docker://h:5000/a:bad tag").is_err());
        assert!(parse_reference("oras://h:5000/a:1").is_err());
    }

    #[test]
    fn publisher_digests() {
        let (s, w) = publisher_digest(&format!("sha256.{HEX}")).unwrap();
        assert!(s.is_some() && w.is_none());
        let (s, w) = publisher_digest("d41d8cd98f00b204e9800998ecf8427e").unwrap();
        assert!(s.is_none() && w.is_some());
        assert!(publisher_digest("sha256.abc").is_none());
        assert!(publisher_digest("").is_none());
    }
}
