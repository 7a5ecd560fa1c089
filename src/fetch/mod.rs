//! Bytes from the network: the only module that speaks HTTP.
//!
//! [`Fetcher::fetch_blob`] downloads one blob from a list of URLs (primary, then mirrors), each
//! through the configured proxy groups in order, into a [`BlobSink`] that sees the bytes exactly
//! once and in order, while hashing them. A direct download of a large blob runs as parallel
//! range requests whose pieces are re-ordered before the sink (so hashing and, for archives,
//! indexing overlap the transfer); a server that ignores `Range` gets one streamed GET. Through a
//! proxy the blob is fetched with one plain GET, the request a stock squid caches and collapses.
//!
//! Every wait has a deadline (`timeout`: connect, response headers, and any stall of the body),
//! so a dead origin turns into an error in bounded time. 5xx answers, resets and short bodies are
//! retried with backoff; a digest mismatch discards the bytes and moves to the next source with
//! `Cache-Control: no-cache`. It knows nothing of the store, inodes or catalogs.
//!
//! Chunked reads use [`Fetcher::fetch_span`] (one range of a file, streamed to a callback) and
//! [`Fetcher::fetch_pinned_document`] (a small verified file in memory, the chunk index): see `span`.

mod attempt;
mod document;
mod hashing;
mod routes;
mod span;
mod validator;

use std::io;
use std::time::{Duration, Instant};

use url::Url;

use crate::config::{ProxyGroups, Route};
use crate::digest::Digest;

pub use document::{Document, DocumentRequest};
pub use routes::Routes;
pub use span::{SpanAnswer, SpanReply, SpanSink};
pub use validator::Validator;

/// Receives a blob's bytes in order. `restart` is called before every attempt, so a sink can
/// throw away what a failed source delivered.
pub trait BlobSink: Send + 'static {
    /// Forget everything written so far (truncate).
    fn restart(&mut self) -> io::Result<()>;
    /// The next bytes of the blob.
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// The size the server announced for this attempt (not verified: a server may lie), told
    /// before its first byte when the answer carries one. A sink may reserve room ahead of its
    /// writes; the default ignores it.
    fn expect_size(&mut self, _size: u64) {}
}

/// How the fetcher behaves; built from the config.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Connect, response and stall deadline.
    pub timeout: Duration,
    /// Bytes per range request.
    pub chunk_size: u64,
    /// Range requests in flight per blob.
    pub parallel: usize,
    /// Proxy groups in order.
    pub proxies: ProxyGroups,
    /// Retries of one request on 5xx, resets and short bodies.
    pub retries: u32,
    /// How long a failed proxy is skipped.
    pub proxy_reset: Duration,
}

impl FetchSettings {
    /// Settings from the checked config.
    pub fn from_config(c: &crate::config::Config) -> FetchSettings {
        FetchSettings {
            timeout: c.timeout,
            chunk_size: c.fetch_chunk_size,
            parallel: c.fetch_parallel,
            proxies: c.proxies.clone(),
            retries: 3,
            proxy_reset: Duration::from_secs(300),
        }
    }
}

/// One blob to download: from which URLs, and what it must hash to. Borrowed from whatever
/// describes the content (`crate::source::Source`); the fetcher keeps no copy.
#[derive(Debug, Clone, Copy)]
pub struct BlobRequest<'a> {
    /// The asset's name (or reference) for log lines and errors.
    pub label: &'a str,
    /// URLs holding the same bytes, in the order to try them.
    pub urls: &'a [Url],
    /// The pinned digest; `None` accepts whatever the first complete download hashes to.
    pub expected: Option<Digest>,
    /// Sent with every request (a registry's `Authorization`); reqwest drops `Authorization`
    /// when a redirect leaves the host, so blob storage never sees it.
    pub headers: &'a reqwest::header::HeaderMap,
}

/// A successful download.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// What the bytes hash to (equal to the expected digest when one was given).
    pub digest: Digest,
    /// Bytes delivered.
    pub size: u64,
    /// The URL that delivered them.
    pub url: Url,
    /// The hop used (`DIRECT` or a proxy).
    pub route: Route,
    /// Wall time of the successful attempt.
    pub elapsed: Duration,
}

/// Why a download failed. `Display` names the asset and the URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The bytes did not hash to the pinned digest.
    #[error("sha256 mismatch for {label} from {url}: expected {expected}, got {actual}")]
    Mismatch {
        /// Asset name.
        label: String,
        /// Source URL.
        url: String,
        /// Pinned digest.
        expected: Digest,
        /// What arrived.
        actual: Digest,
    },
    /// The server answered with an error status.
    #[error("{label}: {url} answered HTTP {status}")]
    Status {
        /// Asset name.
        label: String,
        /// Source URL.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// No answer, or the body stalled, for longer than the deadline.
    #[error("{label}: {url} did not answer for {secs}s ({what})")]
    Timeout {
        /// Asset name.
        label: String,
        /// Source URL.
        url: String,
        /// The deadline.
        secs: u64,
        /// Which wait ran out.
        what: &'static str,
    },
    /// Nothing listens there (connection refused, no route): not retried on the same route.
    #[error("{label}: {url}: unreachable: {message}")]
    Unreachable {
        /// Asset name.
        label: String,
        /// Source URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Connection reset, bad TLS, malformed response.
    #[error("{label}: {url}: {message}")]
    Network {
        /// Asset name.
        label: String,
        /// Source URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The sink (local disk) failed; not retried on other sources.
    #[error("{label}: writing the download failed: {source}")]
    Sink {
        /// Asset name.
        label: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The file at the URL is another version than the one earlier ranges came from.
    #[error("{label}: {url} changed while being read ({was}, now {now}): not mixing versions")]
    Changed {
        /// Asset name.
        label: String,
        /// Source URL.
        url: String,
        /// The validator of the version read so far.
        was: String,
        /// The validator the server answered with.
        now: String,
    },
    /// The asset has no URL to try.
    #[error("{label}: no source to fetch from")]
    NoSource {
        /// Asset name.
        label: String,
    },
}

impl FetchError {
    /// True when the data was wrong (as opposed to unreachable).
    pub fn is_mismatch(&self) -> bool {
        matches!(self, FetchError::Mismatch { .. })
    }

    /// True when `route` is a proxy that could not be reached or did not answer: another
    /// member of its group is tried (the origin itself is not to blame).
    pub fn is_proxy_down(&self, route: &Route) -> bool {
        matches!(route, Route::Proxy(_))
            && matches!(
                self,
                FetchError::Timeout { .. } | FetchError::Unreachable { .. }
            )
    }
}

/// The HTTP client side of lazycas: one per daemon or CLI run.
#[derive(Debug)]
pub struct Fetcher {
    settings: FetchSettings,
    routes: Routes,
}

impl Fetcher {
    /// Builds the clients for every route (one per proxy, one direct).
    pub fn new(settings: FetchSettings) -> Result<Fetcher, FetchError> {
        let routes = Routes::new(&settings)?;
        Ok(Fetcher { settings, routes })
    }

    /// The settings in force.
    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }

    /// The size the first answering source reports for `url` (a HEAD: no body is fetched).
    /// `None` when no source says.
    pub async fn probe_size(&self, url: &Url) -> Option<u64> {
        for group in 0..self.routes.group_count() {
            let Some((_, client)) = self.routes.pick(group, url, &[]) else {
                continue;
            };
            let head = client.head(url.clone()).send();
            match tokio::time::timeout(self.settings.timeout, head).await {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    return resp
                        .headers()
                        .get(reqwest::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                }
                _ => continue,
            }
        }
        None
    }

    /// Downloads `src` into `sink`, trying each URL through each proxy group until one source
    /// delivers bytes with the right digest: within a group, a proxy that cannot be reached is
    /// marked failed and another member is tried; any other failure moves to the next group.
    /// Returns the sink with the complete, verified bytes written, or the last error (a sink
    /// error ends the search at once).
    pub async fn fetch_blob(
        &self,
        src: &BlobRequest<'_>,
        mut sink: Box<dyn BlobSink>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(Fetched, Box<dyn BlobSink>), FetchError> {
        let mut last = FetchError::NoSource {
            label: src.label.to_string(),
        };
        let mut no_cache = false;
        for url in src.urls {
            let mut routes = self.routes.search(url);
            while let Some((route, client)) = routes.next() {
                let attempt = Attempt {
                    src,
                    url,
                    route: &route,
                    client: &client,
                    no_cache,
                };
                let (returned, result) = self.attempt(attempt, sink, progress).await;
                let Some(returned) = returned else {
                    return Err(result.err().unwrap_or(FetchError::NoSource {
                        label: src.label.to_string(),
                    }));
                };
                sink = returned;
                let e = match result {
                    Ok(fetched) => return Ok((fetched, sink)),
                    Err(e @ FetchError::Sink { .. }) => return Err(e),
                    Err(e) => e,
                };
                if e.is_mismatch() {
                    tracing::error!("{e}");
                    no_cache = true;
                } else {
                    tracing::warn!("{e}");
                }
                routes.failed(&route, e);
            }
            if let Some(e) = routes.last_failure() {
                last = e;
            }
        }
        Err(last)
    }

    /// One URL through one route; hands the sink back unless the writer died. When bytes
    /// fetched in ranges fail verification (or a range answer is malformed: a wrong
    /// `Content-Range`), one plain GET of the same URL is tried before giving up: a server
    /// whose ranges lie may still send the right whole body.
    async fn attempt(
        &self,
        a: Attempt<'_>,
        sink: Box<dyn BlobSink>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> (Option<Box<dyn BlobSink>>, Result<Fetched, FetchError>) {
        let ranged = *a.route == Route::Direct;
        match self.attempt_once(&a, sink, progress, ranged).await {
            (Some(sink), Err(e @ (FetchError::Mismatch { .. } | FetchError::Network { .. })))
                if ranged =>
            {
                tracing::error!("{e}; trying one plain GET");
                let plain = Attempt {
                    no_cache: true,
                    ..a
                };
                self.attempt_once(&plain, sink, progress, false).await
            }
            other => other,
        }
    }

    async fn attempt_once(
        &self,
        a: &Attempt<'_>,
        mut sink: Box<dyn BlobSink>,
        progress: &(dyn Fn(u64) + Send + Sync),
        use_ranges: bool,
    ) -> (Option<Box<dyn BlobSink>>, Result<Fetched, FetchError>) {
        if let Err(source) = sink.restart() {
            let label = a.src.label.to_string();
            return (Some(sink), Err(FetchError::Sink { label, source }));
        }
        let started = Instant::now();
        let plan = attempt::Plan {
            label: a.src.label,
            url: a.url,
            headers: a.src.headers,
            client: a.client,
            settings: &self.settings,
            use_ranges,
            no_cache: a.no_cache,
            progress,
        };
        let (sink, result) = attempt::run(plan, sink).await;
        let result = result.and_then(|(digest, size)| check(a.src, a.url, digest, size));
        let result = result.map(|(digest, size)| {
            let fetched = Fetched {
                digest,
                size,
                url: a.url.clone(),
                route: a.route.clone(),
                elapsed: started.elapsed(),
            };
            tracing::info!(
                asset = %a.src.label, source = %a.url, via = %routes::route_name(a.route),
                bytes = size, ms = fetched.elapsed.as_millis() as u64,
                "fetched {}", digest.short()
            );
            fetched
        });
        (sink, result)
    }
}

/// One try: which URL, through which route.
struct Attempt<'a> {
    src: &'a BlobRequest<'a>,
    url: &'a Url,
    route: &'a Route,
    client: &'a reqwest::Client,
    no_cache: bool,
}

fn check(
    src: &BlobRequest<'_>,
    url: &Url,
    digest: Digest,
    size: u64,
) -> Result<(Digest, u64), FetchError> {
    match src.expected {
        Some(expected) if expected != digest => Err(FetchError::Mismatch {
            label: src.label.to_string(),
            url: url.to_string(),
            expected,
            actual: digest,
        }),
        _ => Ok((digest, size)),
    }
}
