//! Parts of a blob, and small whole documents: what a chunked read needs from the network.
//!
//! [`Fetcher::fetch_span`] asks one URL for one byte range and hands the body, in order and
//! tagged with file offsets, to a callback; a server that ignores `Range` answers 200 and its
//! whole body is handed over from offset 0 (the caller keeps what it can use).
//! [`Fetcher::fetch_span_of_version`] does the same for one version of the file (`If-Range`
//! with the validator of an earlier answer; see `validator`).
//! [`Fetcher::fetch_pinned_document`] downloads a small file (a chunk index) into memory,
//! verified against its pinned digest, through the same routes, mirrors, retries and deadlines
//! as a blob (for documents whose digest is not known beforehand and whose status matters, see
//! `Fetcher::get_document`).

use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
use reqwest::StatusCode;
use url::Url;

use super::attempt::{self, Plan};
use super::validator::Validator;
use super::{BlobRequest, BlobSink, FetchError, Fetcher};
use crate::digest::Digest;
use crate::range::ByteRange;

/// Receives a span's bytes in order: the file offset of the first byte, and the bytes.
pub type SpanSink<'a> = &'a mut (dyn FnMut(u64, &[u8]) -> io::Result<()> + Send);

/// What the server sent for a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanAnswer {
    /// Exactly the range asked for (206).
    Range,
    /// The whole file from offset 0 (200: the server ignored `Range`).
    Whole,
}

/// A document larger than this is refused (a chunk index of a 20 GiB image is ~7 MiB).
const DOCUMENT_MAX: usize = 64 << 20;

/// What a span request got: the kind of answer, and the version of the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanReply {
    /// A range or the whole file.
    pub answer: SpanAnswer,
    /// The response's validator (strong `ETag` / `Last-Modified`), when it carried one.
    pub validator: Option<Validator>,
}

impl Fetcher {
    /// `range` of the file at `url`, handed to `sink` as it arrives. `no_cache` asks caches on
    /// the way to revalidate (after the bytes from one source failed to verify).
    pub async fn fetch_span(
        &self,
        label: &str,
        url: &Url,
        range: ByteRange,
        no_cache: bool,
        sink: SpanSink<'_>,
    ) -> Result<SpanAnswer, FetchError> {
        let reply = self
            .fetch_span_of_version(label, url, range, no_cache, None, sink)
            .await?;
        Ok(reply.answer)
    }

    /// As [`Fetcher::fetch_span`], from the version of the file `version` identifies (a
    /// validator an earlier answer from `url` carried): it is sent as `If-Range`, and an answer
    /// from another version fails with [`FetchError::Changed`] before any byte reaches `sink`.
    pub async fn fetch_span_of_version(
        &self,
        label: &str,
        url: &Url,
        range: ByteRange,
        no_cache: bool,
        version: Option<&Validator>,
        sink: SpanSink<'_>,
    ) -> Result<SpanReply, FetchError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(v) = version {
            v.add_if_range(&mut headers);
        }
        let mut routes = self.routes.search(url);
        while let Some((route, client)) = routes.next() {
            let plan = Plan {
                label,
                url,
                headers: &headers,
                client: &client,
                settings: &self.settings,
                use_ranges: true,
                no_cache,
                progress: &|_| {},
            };
            match span_attempt(&plan, range, version, sink).await {
                Ok(reply) => return Ok(reply),
                Err(e @ (FetchError::Sink { .. } | FetchError::Changed { .. })) => return Err(e),
                Err(e) => routes.failed(&route, e),
            }
        }
        Err(routes.last_failure().unwrap_or(FetchError::NoSource {
            label: label.to_string(),
        }))
    }

    /// The whole small file at the first of `urls` that delivers bytes hashing to `expected`.
    pub async fn fetch_pinned_document(
        &self,
        label: &str,
        urls: &[Url],
        expected: Digest,
    ) -> Result<Vec<u8>, FetchError> {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = MemorySink(bytes.clone());
        let no_headers = reqwest::header::HeaderMap::new();
        let request = BlobRequest {
            label,
            urls,
            expected: Some(expected),
            headers: &no_headers,
        };
        self.fetch_blob(&request, Box::new(sink), &|_| {}).await?;
        let document = std::mem::take(&mut *bytes.lock());
        Ok(document)
    }
}

/// One GET with `Range` through one route, retried on 5xx and resets before the body starts.
/// An answer from another version than `version` is refused before its body is read.
async fn span_attempt(
    plan: &Plan<'_>,
    range: ByteRange,
    version: Option<&Validator>,
    sink: SpanSink<'_>,
) -> Result<SpanReply, FetchError> {
    let resp = attempt::with_retries(plan, || attempt::request(plan, Some(range))).await?;
    let validator = Validator::of(resp.headers());
    if let Some(v) = version {
        if resp.status().is_success() && !v.same_file(validator.as_ref()) {
            return Err(FetchError::Changed {
                label: plan.label.to_string(),
                url: plan.url.to_string(),
                was: v.to_string(),
                now: validator.map_or_else(|| "no validator".to_string(), |n| n.to_string()),
            });
        }
    }
    let (answer, start, end) = match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            let start = attempt::content_range_start(plan, &resp)?;
            if start != range.start() {
                let msg = format!("asked for {range:?}, got offset {start}");
                return Err(attempt::network(plan, msg));
            }
            (SpanAnswer::Range, start, range.end())
        }
        StatusCode::OK => (SpanAnswer::Whole, 0, u64::MAX),
        s => return Err(attempt::status_error(plan, s)),
    };
    let mut resp = resp;
    let mut offset = start;
    loop {
        let next = tokio::time::timeout(plan.settings.timeout, resp.chunk()).await;
        let data = match next {
            Err(_) => return Err(attempt::timeout(plan, "body stalled")),
            Ok(Err(e)) => return Err(attempt::network(plan, attempt::reqwest_message(&e))),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(d))) => d,
        };
        if offset.saturating_add(data.len() as u64) > end {
            return Err(attempt::network(
                plan,
                format!("body longer than {range:?}"),
            ));
        }
        sink(offset, &data).map_err(|source| FetchError::Sink {
            label: plan.label.to_string(),
            source,
        })?;
        offset += data.len() as u64;
    }
    if answer == SpanAnswer::Range && offset != end {
        let msg = format!("short body: ended at {offset}, expected {end}");
        return Err(attempt::network(plan, msg));
    }
    Ok(SpanReply { answer, validator })
}

/// Collects a document in memory, refusing one larger than [`DOCUMENT_MAX`].
struct MemorySink(Arc<Mutex<Vec<u8>>>);

impl BlobSink for MemorySink {
    fn restart(&mut self) -> io::Result<()> {
        self.0.lock().clear();
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.0.lock();
        if bytes.len() + data.len() > DOCUMENT_MAX {
            return Err(io::Error::other(format!(
                "document larger than {DOCUMENT_MAX} bytes"
            )));
        }
        bytes.extend_from_slice(data);
        Ok(())
    }
}
