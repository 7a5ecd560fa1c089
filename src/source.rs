//! Where content comes from, as data: [`Location`] says where the bytes live (today plain
//! HTTP(S) URLs; next an OCI reference or a chunk index), [`Source`] adds what the bytes must
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
        }
    }

    /// Every place after the first.
    pub fn mirrors(&self) -> &[Url] {
        match self {
            Location::Http { urls } => urls.get(1..).unwrap_or(&[]),
        }
    }

    /// A stable text naming this location, used to remember what an unpinned location
    /// resolved to (the store's `refs` table).
    pub fn reference(&self) -> Option<String> {
        self.primary().map(|u| u.to_string())
    }

    /// How to show the location to a person.
    pub fn describe(&self) -> String {
        self.reference().unwrap_or_else(|| "(nowhere)".to_string())
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
}

impl IndexPin {
    /// The index pinned to `digest`, published beside each of `location`'s URLs as
    /// `<url>.lazycas-index`.
    pub fn beside(digest: Digest, location: &Location) -> IndexPin {
        let Location::Http { urls } = location;
        let urls = urls
            .iter()
            .filter_map(|u| Url::parse(&format!("{u}.lazycas-index")).ok())
            .collect();
        IndexPin { digest, urls }
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
    /// A pinned chunk index: the blob can be read chunk by chunk before it is all here.
    pub index: Option<IndexPin>,
}

impl Source {
    /// A source known only by its digest: held in the store, or nowhere.
    pub fn stored(digest: Digest) -> Source {
        Source {
            label: digest.to_string(),
            location: Location::Http { urls: Vec::new() },
            expected: Some(digest),
            size_hint: None,
            index: None,
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
    fn the_index_sits_beside_each_url() {
        let p = Url::parse("http://127.0.0.1/img.sqfs").unwrap();
        let m = Url::parse("http://127.0.0.1:81/img.sqfs").unwrap();
        let pin = IndexPin::beside(Digest::of(b"i"), &Location::http(p, vec![m]));
        let urls: Vec<String> = pin.urls.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1/img.sqfs.lazycas-index",
                "http://127.0.0.1:81/img.sqfs.lazycas-index"
            ]
        );
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
}
