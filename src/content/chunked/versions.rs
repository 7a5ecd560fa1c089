//! [`Versions`]: for each blob read chunk by chunk and each URL it is read from, the version of
//! the origin file the first answer came from (its `fetch::Validator`). Later range requests
//! ask for that version only (`If-Range`), so a file replaced at the origin while it is read
//! is noticed at once, and no chunk is ever taken from the new file: the chunks already held
//! keep serving, missing ones are fetched from the other URLs (mirrors) or fail with EIO.
//! Kept for the life of the process, shared by every open of the blob; after a restart the
//! first answer is recorded again (chunks are verified by digest either way, so a file
//! changed across a restart shows as mismatching chunks, never as wrong bytes).
//!
//! Not here: the header and the check (`fetch::Validator`, `Fetcher::fetch_span_of_version`).

use std::collections::HashMap;

use parking_lot::Mutex;
use url::Url;

use crate::digest::Digest;
use crate::fetch::Validator;

/// The recorded versions, by blob digest and URL.
#[derive(Default)]
pub struct Versions {
    seen: Mutex<HashMap<(Digest, Url), Validator>>,
}

impl Versions {
    /// The version of `url` that blob `blob` was read from so far, if any answer carried one.
    pub fn get(&self, blob: &Digest, url: &Url) -> Option<Validator> {
        self.seen.lock().get(&(*blob, url.clone())).cloned()
    }

    /// Records `v` as the version of `url` for `blob`, unless one is recorded already.
    pub fn record(&self, blob: &Digest, url: &Url, v: Validator) {
        self.seen.lock().entry((*blob, url.clone())).or_insert(v);
    }
}
