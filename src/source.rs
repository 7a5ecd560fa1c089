//! Where content comes from, as data: [`Location`] says where the bytes live (plain HTTP(S)
//! URLs, or a blob of an OCI registry repository), [`Source`] adds what the bytes must
//! hash to and what to call them in log lines. Nothing here fetches: `content` reads a
//! `Source` and drives `fetch`; `catalog` and the namespaces only build and pass them around.

use url::Url;

use crate::digest::Digest;

/// Where the bytes of one blob can be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Plain HTTP(S): the same bytes at each URL, tried in order (primary, then mirrors).
    Http {
        /// Never empty when built by the config or the catalog.
        urls: Vec<Url>,
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
            Location::Registry { .. } => None,
        }
    }

    /// Every place after the first.
    pub fn mirrors(&self) -> &[Url] {
        match self {
            Location::Http { urls } => urls.get(1..).unwrap_or(&[]),
            Location::Registry { .. } => &[],
        }
    }

    /// A stable text naming this location, used to remember what an unpinned location
    /// resolved to (the store's `refs` table).
    pub fn reference(&self) -> Option<String> {
        match self {
            Location::Http { .. } => self.primary().map(|u| u.to_string()),
            Location::Registry {
                registry,
                repository,
                digest,
            } => Some(format!("docker://{registry}/{repository}@{digest}")),
        }
    }

    /// How to show the location to a person.
    pub fn describe(&self) -> String {
        self.reference().unwrap_or_else(|| "(nowhere)".to_string())
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
            size_hint: None,
        }
    }

    /// The key concurrent requests for the same content share: the digest when pinned, else
    /// the location.
    pub fn flight_key(&self) -> String {
        match (&self.expected, self.location.reference()) {
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
