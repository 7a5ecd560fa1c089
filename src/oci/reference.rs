//! [`ImageReference`]: which image (or oras artifact) a user or a mount path names.
//!
//! Two spellings name the same thing:
//! - a URI, `docker://[registry[:port]/]repo[:tag][@sha256:<hex>]` or `oras://registry/repo[:tag]`
//!   (the catalog, `lazycas add` and `pull`);
//! - a mount path, `docker/<registry>/<repo>:<tag>`, `docker/<registry>/<repo>@sha256:<hex>` or
//!   `oras/<registry>/<repo>:<tag>`, where the registry is always spelt out.
//!
//! Both are checked against the distribution spec's grammar (lowercase path components joined by
//! `.`, `_`, `__` or dashes; tags `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; names up to 255 characters)
//! and normalised with Docker Hub's rules: a first component is a registry only if it has a `.`
//! or a `:` or is `localhost`; otherwise the registry is `docker.io`, which also absorbs
//! `index.docker.io` and `registry-1.docker.io`. One-part Hub names get `library/`; with neither
//! tag nor digest the tag is `latest`. `Display` prints the normalised URI, which parses back to
//! the same value. Not here: resolving a tag (that needs the registry) or credentials.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// What Docker Hub is called in normalised references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// Other names of Docker Hub, normalised to [`DOCKER_HUB`].
const DOCKER_HUB_ALIASES: [&str; 3] = [DOCKER_HUB, "index.docker.io", DOCKER_HUB_API_HOST];
/// The tag used when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest tag the grammar allows.
const MAX_TAG_LEN: usize = 128;
/// Longest repository name (registry included) the grammar allows.
const MAX_NAME_LEN: usize = 255;

/// Why a string is not an image reference. Each variant names the input at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Neither `docker://` nor `oras://`.
    #[error("{0:?}: not an image reference (want docker://… or oras://…)")]
    Scheme(String),
    /// A mount path outside `docker/` and `oras/`.
    #[error("{0:?}: not an image path (want docker/<registry>/<repo>:<tag> or oras/…)")]
    MountPath(String),
    /// Empty, or nothing after the registry.
    #[error("{0:?}: no repository name")]
    NoRepository(String),
    /// An oras reference must name its registry.
    #[error("{0:?}: oras references need a registry (oras://registry/repo:tag)")]
    NoRegistry(String),
    /// The registry part is not a host, `host:port` or `[ipv6]:port`.
    #[error("{input:?}: bad registry {registry:?}")]
    Registry {
        /// The whole reference.
        input: String,
        /// The registry part.
        registry: String,
    },
    /// A repository path component breaks the grammar (uppercase, empty, bad separators).
    #[error(
        "{input:?}: bad repository component {component:?} (lowercase letters and digits, \
         joined by '.', '_', '__' or dashes)"
    )]
    Component {
        /// The whole reference.
        input: String,
        /// The offending component.
        component: String,
    },
    /// Registry and repository together exceed 255 characters.
    #[error("{input:?}: repository name is {len} characters (at most {MAX_NAME_LEN})")]
    NameTooLong {
        /// The whole reference.
        input: String,
        /// Its length.
        len: usize,
    },
    /// The tag breaks `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error("{input:?}: bad tag {tag:?} (letters, digits, '_', '.', '-'; at most 128, not starting with '.' or '-')")]
    Tag {
        /// The whole reference.
        input: String,
        /// The tag.
        tag: String,
    },
    /// The digest is not `sha256:` and 64 lowercase hex digits.
    #[error("{input:?}: bad digest {digest:?} (want sha256:<64 lowercase hex>)")]
    Digest {
        /// The whole reference.
        input: String,
        /// The digest part.
        digest: String,
    },
}

/// Whether a reference names a container image or an oras artifact (a SIF file).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ReferenceKind {
    /// `docker://`: an image whose layers form a root filesystem.
    Image,
    /// `oras://`: an artifact whose one layer is a SIF file.
    OrasArtifact,
}

impl ReferenceKind {
    /// The URI scheme, without `://`.
    pub fn scheme(self) -> &'static str {
        match self {
            ReferenceKind::Image => "docker",
            ReferenceKind::OrasArtifact => "oras",
        }
    }

    /// The top-level directory of the mount that holds this kind.
    pub fn mount_namespace(self) -> &'static str {
        self.scheme()
    }
}

/// A parsed, normalised image or artifact reference.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ImageReference {
    kind: ReferenceKind,
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageReference {
    /// Parses `docker://…` or `oras://…`.
    pub fn parse(input: &str) -> Result<ImageReference, ReferenceError> {
        if let Some(rest) = input.strip_prefix("docker://") {
            Self::parse_name(
                ReferenceKind::Image,
                rest,
                input,
                RegistryRule::DockerHubDefault,
            )
        } else if let Some(rest) = input.strip_prefix("oras://") {
            Self::parse_name(
                ReferenceKind::OrasArtifact,
                rest,
                input,
                RegistryRule::Explicit,
            )
        } else {
            Err(ReferenceError::Scheme(input.to_string()))
        }
    }

    /// Parses a name as `docker pull` takes it: `alpine`, `team/app:1.4`, `host:5000/a/b@sha256:…`.
    pub fn parse_docker_name(name: &str) -> Result<ImageReference, ReferenceError> {
        Self::parse_name(
            ReferenceKind::Image,
            name,
            name,
            RegistryRule::DockerHubDefault,
        )
    }

    /// Parses a path inside the mount, relative to its root: `docker/<registry>/<repo>:<tag>`,
    /// `docker/<registry>/<repo>@sha256:<hex>` or `oras/<registry>/<repo>:<tag>`.
    pub fn from_mount_path(path: &str) -> Result<ImageReference, ReferenceError> {
        let (kind, rest) = if let Some(rest) = path.strip_prefix("docker/") {
            (ReferenceKind::Image, rest)
        } else if let Some(rest) = path.strip_prefix("oras/") {
            (ReferenceKind::OrasArtifact, rest)
        } else {
            return Err(ReferenceError::MountPath(path.to_string()));
        };
        Self::parse_name(kind, rest, path, RegistryRule::Explicit)
    }

    fn parse_name(
        kind: ReferenceKind,
        name: &str,
        input: &str,
        rule: RegistryRule,
    ) -> Result<ImageReference, ReferenceError> {
        let (rest, digest) = split_digest(name, input)?;
        let (path, tag) = split_tag(rest, input)?;
        let (registry, repository) = split_registry(path, input, rule)?;
        let registry = normalise_registry(registry, input)?;
        let repository = normalise_repository(&registry, repository, input)?;
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        let len = registry.len() + 1 + repository.len();
        if len > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong {
                input: input.to_string(),
                len,
            });
        }
        Ok(ImageReference {
            kind,
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Image or oras artifact.
    pub fn kind(&self) -> ReferenceKind {
        self.kind
    }

    /// The registry as normalised (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The `host[:port]` to send registry API requests to (`registry-1.docker.io` for the Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// The repository path (`library/alpine`, `team/sub/app`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one (`latest` when it had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned manifest digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What goes after `/v2/<repo>/manifests/`: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            // parse_name gives every reference a tag or a digest.
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The same reference pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> ImageReference {
        ImageReference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The path of this reference inside the mount (`docker/docker.io/library/alpine:latest`).
    pub fn mount_path(&self) -> String {
        format!(
            "{}/{}/{}{}",
            self.kind.mount_namespace(),
            self.registry,
            self.repository,
            self.suffix()
        )
    }

    /// `:tag`, `@digest` or both.
    fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}/{}{}",
            self.kind.scheme(),
            self.registry,
            self.repository,
            self.suffix()
        )
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageReference::parse(s)
    }
}

/// Whether the first path component must be a registry.
#[derive(Clone, Copy)]
enum RegistryRule {
    /// Docker's heuristic; absent means Docker Hub.
    DockerHubDefault,
    /// The first component is the registry (mount paths, oras).
    Explicit,
}

/// Splits off `@algo:hex`.
fn split_digest<'a>(
    name: &'a str,
    input: &str,
) -> Result<(&'a str, Option<Digest>), ReferenceError> {
    let Some((rest, digest)) = name.split_once('@') else {
        return Ok((name, None));
    };
    let bad = || ReferenceError::Digest {
        input: input.to_string(),
        digest: digest.to_string(),
    };
    let hex = digest.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    let parsed = Digest::parse(digest).map_err(|_| bad())?;
    Ok((rest, Some(parsed)))
}

/// Splits off `:tag` after the last `/` (a `:` before it is a registry port).
fn split_tag<'a>(name: &'a str, input: &str) -> Result<(&'a str, Option<&'a str>), ReferenceError> {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let Some(colon) = name[last_slash..].rfind(':') else {
        return Ok((name, None));
    };
    let (path, tag) = (&name[..last_slash + colon], &name[last_slash + colon + 1..]);
    if !is_valid_tag(tag) {
        return Err(ReferenceError::Tag {
            input: input.to_string(),
            tag: tag.to_string(),
        });
    }
    Ok((path, Some(tag)))
}

/// The distribution grammar's tag: `[\w][\w.-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            word(*first)
                && bytes.len() <= MAX_TAG_LEN
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
        None => false,
    }
}

/// Splits `path` into (registry, repository) under `rule`.
fn split_registry<'a>(
    path: &'a str,
    input: &str,
    rule: RegistryRule,
) -> Result<(&'a str, &'a str), ReferenceError> {
    let first = path.split_once('/');
    match (rule, first) {
        (RegistryRule::Explicit, Some((registry, repo))) => Ok((registry, repo)),
        (RegistryRule::Explicit, None) if path.is_empty() => {
            Err(ReferenceError::NoRepository(input.to_string()))
        }
        (RegistryRule::Explicit, None) => Err(ReferenceError::NoRegistry(input.to_string())),
        (RegistryRule::DockerHubDefault, Some((first, repo))) if looks_like_registry(first) => {
            Ok((first, repo))
        }
        (RegistryRule::DockerHubDefault, _) => Ok((DOCKER_HUB, path)),
    }
}

/// Docker's rule: a first component is a registry if it has a `.` or a `:` or is `localhost`.
fn looks_like_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// Checks the registry's grammar and folds Docker Hub's aliases.
fn normalise_registry(registry: &str, input: &str) -> Result<String, ReferenceError> {
    if !is_valid_registry(registry) {
        return Err(ReferenceError::Registry {
            input: input.to_string(),
            registry: registry.to_string(),
        });
    }
    let lower = registry.to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&lower.as_str()) {
        Ok(DOCKER_HUB.to_string())
    } else {
        Ok(registry.to_string())
    }
}

/// `host[:port]` where host is a DNS name, an IPv4 address or `[ipv6]`.
fn is_valid_registry(registry: &str) -> bool {
    let (host, port) = split_port(registry);
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.split('.').all(is_domain_component),
    };
    port_ok && host_ok
}

/// Splits `host:port`, minding `[v6]:port`.
fn split_port(registry: &str) -> (&str, Option<&str>) {
    let host_end = if registry.starts_with('[') {
        registry.find(']').map_or(registry.len(), |i| i + 1)
    } else {
        registry.find(':').unwrap_or(registry.len())
    };
    let (host, rest) = registry.split_at(host_end);
    (
        host,
        rest.strip_prefix(':')
            .or(if rest.is_empty() { None } else { Some(rest) }),
    )
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        }
        _ => false,
    }
}

/// Checks each component and adds `library/` to one-part Hub names.
fn normalise_repository(
    registry: &str,
    repository: &str,
    input: &str,
) -> Result<String, ReferenceError> {
    if repository.is_empty() {
        return Err(ReferenceError::NoRepository(input.to_string()));
    }
    for component in repository.split('/') {
        if !is_path_component(component) {
            return Err(ReferenceError::Component {
                input: input.to_string(),
                component: component.to_string(),
            });
        }
    }
    if registry == DOCKER_HUB && !repository.contains('/') {
        Ok(format!("library/{repository}"))
    } else {
        Ok(repository.to_string())
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn is_path_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = component.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &component[sep_start..i];
        let dashes = sep.bytes().all(|c| c == b'-');
        if !(sep == "." || sep == "_" || sep == "__" || dashes) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(s: &str) -> ImageReference {
        ImageReference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_rules() {
        let r = parse("docker://alpine");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/alpine");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.to_string(), "docker://docker.io/library/alpine:latest");
        assert_eq!(r.mount_path(), "docker/docker.io/library/alpine:latest");

        for alias in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            let r = parse(&format!("docker://{alias}/ubuntu:22.04"));
            assert_eq!(r.registry(), "docker.io");
            assert_eq!(r.repository(), "library/ubuntu");
        }
        let r = parse("docker://team/app:1.4");
        assert_eq!((r.registry(), r.repository()), ("docker.io", "team/app"));
        let r = parse("docker://a/b/c/d");
        assert_eq!((r.registry(), r.repository()), ("docker.io", "a/b/c/d"));
    }

    #[test]
    fn registry_detection() {
        let r = parse("docker://localhost/app");
        assert_eq!((r.registry(), r.repository()), ("localhost", "app"));
        let r = parse("docker://localhost:5000/team/sub/app:v1");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "team/sub/app");
        assert_eq!(r.tag(), Some("v1"));
        let r = parse("docker://127.0.0.1:5000/x");
        assert_eq!((r.registry(), r.repository()), ("127.0.0.1:5000", "x"));
        let r = parse("docker://ghcr.io/owner/img");
        assert_eq!(r.registry(), "ghcr.io");
        let r = parse("docker://[::1]:5000/x:t");
        assert_eq!(r.registry(), "[::1]:5000");
        // No dot, no colon, not localhost: a Hub namespace.
        let r = parse("docker://myregistry/x");
        assert_eq!(
            (r.registry(), r.repository()),
            ("docker.io", "myregistry/x")
        );
    }

    #[test]
    fn tags_and_digests() {
        let d = format!("sha256:{HEX}");
        let r = parse(&format!("docker://127.0.0.1:5000/a/b@{d}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().map(|d| d.to_string()), Some(d.clone()));
        assert_eq!(r.manifest_reference(), d);
        let r = parse(&format!("docker://127.0.0.1:5000/a/b:v2@{d}"));
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.to_string(), format!("docker://127.0.0.1:5000/a/b:v2@{d}"));
        let r = parse("docker://h.io/a:v2");
        assert_eq!(r.manifest_reference(), "v2");
        let pinned = r.with_digest(Digest::of(b"x"));
        assert_eq!(pinned.manifest_reference(), Digest::of(b"x").to_string());
        assert_eq!(pinned.tag(), Some("v2"));
    }

    #[test]
    fn mount_paths() {
        let r = ImageReference::from_mount_path("docker/127.0.0.1:5000/team/sub/app:1.4").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "team/sub/app");
        assert_eq!(r.tag(), Some("1.4"));
        assert_eq!(r.mount_path(), "docker/127.0.0.1:5000/team/sub/app:1.4");
        assert_eq!(r, parse("docker://127.0.0.1:5000/team/sub/app:1.4"));

        let p = format!("docker/docker.io/library/alpine@sha256:{HEX}");
        let r = ImageReference::from_mount_path(&p).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.mount_path(), p);
        // Registry explicit in paths, even without a dot.
        let r = ImageReference::from_mount_path("docker/myhost/app:1").unwrap();
        assert_eq!((r.registry(), r.repository()), ("myhost", "app"));
        let r = ImageReference::from_mount_path("docker/docker.io/alpine:3").unwrap();
        assert_eq!(r.repository(), "library/alpine");

        let r = ImageReference::from_mount_path("oras/127.0.0.1:5000/sif/lolcow:latest").unwrap();
        assert_eq!(r.kind(), ReferenceKind::OrasArtifact);
        assert_eq!(r.to_string(), "oras://127.0.0.1:5000/sif/lolcow:latest");

        for bad in [
            "images/x",
            "docker/",
            "docker/host",
            "docker/host/",
            "oras/x",
        ] {
            assert!(ImageReference::from_mount_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oras_needs_registry() {
        let r = parse("oras://ghcr.io/me/lolcow:latest");
        assert_eq!(r.kind(), ReferenceKind::OrasArtifact);
        assert_eq!((r.registry(), r.repository()), ("ghcr.io", "me/lolcow"));
        assert!(matches!(
            ImageReference::parse("oras://lolcow:latest"),
            Err(ReferenceError::NoRegistry(_))
        ));
    }

    #[test]
    fn rejects_what_the_grammar_rejects() {
        type IsExpected = fn(&ReferenceError) -> bool;
        let cases: &[(&str, IsExpected)] = &[
            ("alpine", |e| matches!(e, ReferenceError::Scheme(_))),
            ("https://x/y", |e| matches!(e, ReferenceError::Scheme(_))),
            ("docker://", |e| {
                matches!(e, ReferenceError::NoRepository(_))
            }),
            ("docker://h.io/", |e| {
                matches!(e, ReferenceError::NoRepository(_))
            }),
            ("docker://Alpine", |e| {
                matches!(e, ReferenceError::Component { .. })
            }),
            ("docker://h.io/Team/app", |e| {
                matches!(e, ReferenceError::Component { .. })
            }),
            ("docker://h.io/a//b", |e| {
                matches!(e, ReferenceError::Component { .. })
            }),
            ("docker://h.io/a/-b", |e| {
                matches!(e, ReferenceError::Component { .. })
            }),
            ("docker://h.io/a/b.", |e| {
                matches!(e, ReferenceError::Component { .. })
            }),
            ("docker://h.io/a/b___c", |e| {
                matches!(e, ReferenceError::Component { .. })
            }),
            ("docker://h.io/a/b._c", |e| {
                matches!(e, ReferenceError::Component { .. })
            }),
            ("docker://a:", |e| matches!(e, ReferenceError::Tag { .. })),
            ("docker://a:.x", |e| matches!(e, ReferenceError::Tag { .. })),
            ("docker://a:-x", |e| matches!(e, ReferenceError::Tag { .. })),
            ("docker://a:x/y", |e| {
                matches!(e, ReferenceError::Registry { .. })
            }),
            ("docker://a:b+c", |e| {
                matches!(e, ReferenceError::Tag { .. })
            }),
            ("docker://a@sha256:abc", |e| {
                matches!(e, ReferenceError::Digest { .. })
            }),
            ("docker://a@md5:0123", |e| {
                matches!(e, ReferenceError::Digest { .. })
            }),
            ("docker://h:99999/a", |e| {
                matches!(e, ReferenceError::Registry { .. })
            }),
            ("docker://h:/a", |e| {
                matches!(e, ReferenceError::Registry { .. })
            }),
            ("docker://-h.io/a", |e| {
                matches!(e, ReferenceError::Registry { .. })
            }),
            ("docker://h..io/a", |e| {
                matches!(e, ReferenceError::Registry { .. })
            }),
            ("docker://[::1/a", |e| {
                matches!(e, ReferenceError::Registry { .. })
            }),
        ];
        for (input, want) in cases {
            match ImageReference::parse(input) {
                Ok(r) => panic!("{input} parsed as {r}"),
                Err(e) => {
                    assert!(want(&e), "{input}: unexpected error {e:?}");
                    assert!(e
                        .to_string()
                        .contains(input.trim_start_matches("docker://")));
                }
            }
        }
        let upper_digest = format!("docker://a@sha256:{}", HEX.to_uppercase());
        assert!(ImageReference::parse(&upper_digest).is_err());
    }

    #[test]
    fn length_limits() {
        let tag128 = format!("a{}", "b".repeat(127));
        assert!(ImageReference::parse(&format!("docker://h.io/x:{tag128}")).is_ok());
        let tag129 = format!("{tag128}c");
        assert!(matches!(
            ImageReference::parse(&format!("docker://h.io/x:{tag129}")),
            Err(ReferenceError::Tag { .. })
        ));
        let repo = "a".repeat(255 - "h.io/".len());
        assert!(ImageReference::parse(&format!("docker://h.io/{repo}")).is_ok());
        assert!(matches!(
            ImageReference::parse(&format!("docker://h.io/{repo}b")),
            Err(ReferenceError::NameTooLong { .. })
        ));
    }

    #[test]
    fn path_components() {
        for ok in [
            "a",
            "a0",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a.b-c_d__e",
        ] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in [
            "", "A", "a.", ".a", "a..b", "a_.b", "a___b", "a-", "a/b", "é",
        ] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }

    /// A small deterministic generator (xorshift) for property-style tests.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick(&mut self, from: &[u8]) -> u8 {
            from[self.below(from.len())]
        }
        fn word(&mut self, alphabet: &[u8], max: usize) -> String {
            let len = 1 + self.below(max);
            (0..len).map(|_| self.pick(alphabet) as char).collect()
        }
        fn component(&mut self) -> String {
            const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            const SEPS: [&str; 5] = [".", "_", "__", "-", "--"];
            let mut s = self.word(ALNUM, 6);
            for _ in 0..self.below(3) {
                s.push_str(SEPS[self.below(SEPS.len())]);
                s.push_str(&self.word(ALNUM, 4));
            }
            s
        }
        fn registry(&mut self) -> Option<String> {
            match self.below(5) {
                0 => None,
                1 => Some("localhost".to_string()),
                2 => Some(format!("127.0.0.1:{}", 1 + self.below(65535))),
                3 => Some(format!(
                    "{}.example",
                    self.word(b"abcxyz019-", 8).trim_matches('-')
                )),
                _ => Some(format!("reg-{}.io:{}", self.below(100), self.below(65536))),
            }
        }
        fn tag(&mut self) -> String {
            const FIRST: &[u8] = b"abcXYZ019_";
            const REST: &[u8] = b"abcXYZ019_.-";
            let mut t = (self.pick(FIRST) as char).to_string();
            for _ in 0..self.below(128) {
                t.push(self.pick(REST) as char);
            }
            t
        }
    }

    #[test]
    fn property_display_round_trips() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let registry = g
                .registry()
                .filter(|r| !r.starts_with(".") && !r.contains("-."));
            let parts: Vec<String> = (0..1 + g.below(4)).map(|_| g.component()).collect();
            let mut s = String::from("docker://");
            if let Some(r) = &registry {
                s.push_str(r);
                s.push('/');
            }
            s.push_str(&parts.join("/"));
            if g.below(2) == 0 {
                s.push(':');
                s.push_str(&g.tag());
            }
            if g.below(3) == 0 {
                s.push('@');
                s.push_str(&Digest::of(s.as_bytes()).to_string());
            }
            let r = match ImageReference::parse(&s) {
                Ok(r) => r,
                // A generated registry like "a-.example" is invalid; the grammar says so.
                Err(ReferenceError::Registry { .. }) => continue,
                Err(e) => panic!("{s}: {e}"),
            };
            let printed = r.to_string();
            assert_eq!(
                ImageReference::parse(&printed).as_ref(),
                Ok(&r),
                "{s} -> {printed}"
            );
            let path = r.mount_path();
            assert_eq!(
                ImageReference::from_mount_path(&path).as_ref(),
                Ok(&r),
                "{path}"
            );
            assert!(r.tag().is_some() || r.digest().is_some());
            assert!(r.repository().split('/').all(is_path_component));
        }
    }

    #[test]
    fn property_no_panic_on_garbage() {
        let mut g = Gen(0xdead_beef_cafe_f00d);
        const CHARS: &[u8] = b"aZ09:/@._-[]+ %\xc3";
        for _ in 0..20000 {
            let body: Vec<u8> = (0..g.below(40)).map(|_| g.pick(CHARS)).collect();
            let s = format!("docker://{}", String::from_utf8_lossy(&body));
            if let Ok(r) = ImageReference::parse(&s) {
                assert_eq!(ImageReference::parse(&r.to_string()), Ok(r.clone()), "{s}");
            }
            let _ = ImageReference::from_mount_path(&format!("docker/{}", &s[9..]));
        }
    }
}
