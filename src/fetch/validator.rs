//! [`Validator`]: which version of a file a response came from (its strong `ETag`, else its
//! `Last-Modified`), so the range requests that read one file piece by piece never take pieces
//! of two versions. The first response's validator is recorded by the caller and sent with each
//! later range request as `If-Range`: a server holding another version answers with the whole
//! new file (200) instead of the range, and [`Validator::same_file`] tells the caller so before
//! any body byte is used. A weak `ETag` (`W/"…"`) may not be used in `If-Range`; a response
//! carrying neither is not checked.
//!
//! Not here: the requests (`span`); what a caller does with a changed file (`content`).

use reqwest::header::{HeaderMap, HeaderValue, ETAG, IF_RANGE, LAST_MODIFIED};

/// What identifies the version of a file a response came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validator {
    /// The validator of a response with `headers`; `None` when it carries neither a strong
    /// `ETag` nor a `Last-Modified`.
    pub fn of(headers: &HeaderMap) -> Option<Validator> {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let etag = text(ETAG).filter(|e| !e.starts_with("W/"));
        let last_modified = text(LAST_MODIFIED);
        (etag.is_some() || last_modified.is_some()).then_some(Validator {
            etag,
            last_modified,
        })
    }

    /// Adds `If-Range` for this version to `headers`: the strong ETag, else the date.
    pub fn add_if_range(&self, headers: &mut HeaderMap) {
        let value = self.etag.as_deref().or(self.last_modified.as_deref());
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(IF_RANGE, v);
        }
    }

    /// Whether a response validated by `other` (`None`: it carried none) is of this version:
    /// every validator both carry agrees, and they share at least one.
    pub fn same_file(&self, other: Option<&Validator>) -> bool {
        let Some(other) = other else {
            return false;
        };
        let agree = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        };
        let checks = [
            agree(&self.etag, &other.etag),
            agree(&self.last_modified, &other.last_modified),
        ];
        checks.iter().any(|c| c.is_some()) && checks.iter().all(|c| c.unwrap_or(true))
    }
}

impl std::fmt::Display for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.etag, &self.last_modified) {
            (Some(e), Some(lm)) => write!(f, "ETag {e}, Last-Modified {lm}"),
            (Some(e), None) => write!(f, "ETag {e}"),
            (None, Some(lm)) => write!(f, "Last-Modified {lm}"),
            (None, None) => write!(f, "no validator"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(etag: Option<&str>, lm: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(e) = etag {
            h.insert(ETAG, HeaderValue::from_str(e).unwrap());
        }
        if let Some(l) = lm {
            h.insert(LAST_MODIFIED, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    const DATE: &str = "Mon, 30 Nov 2026 06:00:00 GMT";
    const LATER: &str = "Mon, 30 Nov 2026 07:00:00 GMT";

    #[test]
    fn a_strong_etag_goes_into_if_range() {
        let v = Validator::of(&headers(Some("\"6a-5f\""), Some(DATE))).unwrap();
        let mut h = HeaderMap::new();
        v.add_if_range(&mut h);
        assert_eq!(h.get(IF_RANGE).unwrap(), "\"6a-5f\"");
    }

    #[test]
    fn a_weak_etag_is_not_used_but_the_date_is() {
        let v = Validator::of(&headers(Some("W/\"6a\""), Some(DATE))).unwrap();
        let mut h = HeaderMap::new();
        v.add_if_range(&mut h);
        assert_eq!(h.get(IF_RANGE).unwrap(), DATE);
        assert!(Validator::of(&headers(Some("W/\"6a\""), None)).is_none());
    }

    #[test]
    fn a_changed_etag_or_date_is_another_file() {
        let v = Validator::of(&headers(Some("\"a\""), Some(DATE))).unwrap();
        let same = Validator::of(&headers(Some("\"a\""), Some(DATE)));
        assert!(v.same_file(same.as_ref()));
        let etag = Validator::of(&headers(Some("\"b\""), Some(DATE)));
        assert!(!v.same_file(etag.as_ref()));
        let date = Validator::of(&headers(Some("\"a\""), Some(LATER)));
        assert!(!v.same_file(date.as_ref()));
        assert!(
            !v.same_file(None),
            "a response without a validator cannot be trusted"
        );
        let only_date = Validator::of(&headers(None, Some(DATE)));
        assert!(v.same_file(only_date.as_ref()), "the one they share agrees");
    }
}
