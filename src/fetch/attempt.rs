//! One download attempt: one URL through one route, into the sink, hashing on the way.
//!
//! Producers (the first request, then range workers) push [`Piece`]s tagged with their offset
//! down a channel; one blocking consumer thread puts them back in order and writes them to the
//! sink, and a hashing thread hashes them in the same order ([`InOrderHasher`]). A semaphore
//! bounds how many chunks may be in flight or buffered, so memory is
//! `(2 × parallel + 1) × chunk_size` at most whatever the blob size. The size the first answer
//! announces goes down the same channel ahead of the first piece, so the sink can reserve room.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::try_join_all;
use reqwest::header::{CACHE_CONTROL, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use tokio::sync::{mpsc, Semaphore};
use url::Url;

use super::hashing::InOrderHasher;
use super::{BlobSink, FetchError, FetchSettings};
use crate::digest::Digest;
use crate::range::ByteRange;

/// Everything one attempt needs.
pub(super) struct Plan<'a> {
    pub label: &'a str,
    pub url: &'a Url,
    pub headers: &'a reqwest::header::HeaderMap,
    pub client: &'a reqwest::Client,
    pub settings: &'a FetchSettings,
    pub use_ranges: bool,
    pub no_cache: bool,
    pub progress: &'a (dyn Fn(u64) + Send + Sync),
}

/// Pieces queued between the producers and the writer. A piece is a slice of hyper's read
/// buffer and keeps the whole buffer alive, so this queue is kept short: its memory is not
/// what the pieces' lengths add up to.
const PIECES_IN_FLIGHT: usize = 16;

struct Piece {
    offset: u64,
    data: Bytes,
}

/// What the producers tell the writer.
enum ToWriter {
    /// The size the first answer announced (before any piece).
    Size(u64),
    /// The next bytes at some offset.
    Piece(Piece),
}

/// Shared by the producers of one attempt.
struct Flow<'a> {
    plan: &'a Plan<'a>,
    tx: mpsc::Sender<ToWriter>,
    received: AtomicU64,
}

type SinkResult = (Box<dyn BlobSink>, std::io::Result<(Digest, u64)>);

/// Runs the attempt; hands the sink back unless the writer thread died.
pub(super) async fn run(
    plan: Plan<'_>,
    sink: Box<dyn BlobSink>,
) -> (Option<Box<dyn BlobSink>>, Result<(Digest, u64), FetchError>) {
    let (tx, rx) = mpsc::channel::<ToWriter>(PIECES_IN_FLIGHT);
    let window = Arc::new(Semaphore::new(plan.settings.parallel * 2));
    let chunk = plan.settings.chunk_size;
    let consumer = {
        let window = window.clone();
        tokio::task::spawn_blocking(move || consume(rx, sink, &window, chunk))
    };
    let flow = Flow {
        plan: &plan,
        tx,
        received: AtomicU64::new(0),
    };
    let produced = produce(&flow, &window).await;
    drop(flow);
    let (sink, consumed) = match consumer.await {
        Ok(r) => r,
        Err(join) => {
            let source = std::io::Error::other(format!("download writer failed: {join}"));
            let label = plan.label.to_string();
            return (None, Err(FetchError::Sink { label, source }));
        }
    };
    let result = match (produced, consumed) {
        (Err(e), _) if !matches!(e, FetchError::Sink { .. }) => Err(e),
        (_, Err(source)) => Err(FetchError::Sink {
            label: plan.label.to_string(),
            source,
        }),
        (Err(e), Ok(_)) => Err(e),
        (Ok(total), Ok((digest, n))) if total.is_none_or(|t| t == n) => Ok((digest, n)),
        (Ok(total), Ok((_, n))) => Err(network(
            &plan,
            format!("short download: {n} of {} bytes", total.unwrap_or(0)),
        )),
    };
    (Some(sink), result)
}

fn consume(
    mut rx: mpsc::Receiver<ToWriter>,
    mut sink: Box<dyn BlobSink>,
    window: &Semaphore,
    chunk: u64,
) -> SinkResult {
    let mut hasher = InOrderHasher::start();
    let mut next = 0u64;
    let mut pending: BTreeMap<u64, Bytes> = BTreeMap::new();
    let mut result = Ok(());
    while let Some(message) = rx.blocking_recv() {
        let piece = match message {
            ToWriter::Size(size) => {
                sink.expect_size(size);
                continue;
            }
            ToWriter::Piece(piece) => piece,
        };
        pending.insert(piece.offset, piece.data);
        while let Some(data) = pending.remove(&next) {
            if let Err(e) = sink.write(&data) {
                result = Err(e);
                break;
            }
            let end = next + data.len() as u64;
            hasher.update(data);
            // A window slot frees each time the consumer passes the end of a ranged chunk
            // (chunk 0 comes with the first response and holds no slot).
            let crossed = (end / chunk).saturating_sub((next / chunk).max(1));
            if crossed > 0 {
                window.add_permits(crossed as usize);
            }
            next = end;
        }
        if result.is_err() {
            break;
        }
    }
    drop(rx);
    let digest = hasher.finish();
    let result = result.and_then(|()| {
        digest
            .map(|d| (d, next))
            .ok_or_else(|| std::io::Error::other("the hashing thread failed"))
    });
    (sink, result)
}

/// Issues the requests; returns the total size when the server told it.
async fn produce(flow: &Flow<'_>, window: &Semaphore) -> Result<Option<u64>, FetchError> {
    let plan = flow.plan;
    let chunk = plan.settings.chunk_size;
    let first_range = plan.use_ranges.then(|| ByteRange::at(0, chunk));
    let resp = with_retries(plan, || request(plan, first_range)).await?;
    match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            let total = content_range_total(plan, &resp)?;
            announce_size(flow, total).await?;
            let first = ByteRange::at(0, chunk).clamp_to(total);
            let rest = ByteRange::new(first.end(), total);
            let first_body = stream_body(flow, resp, first);
            let workers = fetch_rest(flow, window, rest);
            let (a, b) = tokio::join!(first_body, workers);
            match a {
                Ok(()) => {}
                Err(BodyBreak::At(done, e)) if is_retryable(&e) => {
                    // The first chunk broke off: fetch what is missing with a range request.
                    fetch_range(flow, ByteRange::new(done, first.end())).await?;
                }
                Err(b) => return Err(b.into_error()),
            }
            b?;
            Ok(Some(total))
        }
        StatusCode::OK => {
            let total = resp.content_length();
            if let Some(total) = total {
                announce_size(flow, total).await?;
            }
            let range = ByteRange::new(0, total.unwrap_or(u64::MAX));
            stream_body(flow, resp, range).await?;
            Ok(total)
        }
        StatusCode::RANGE_NOT_SATISFIABLE => Ok(Some(0)),
        s => Err(status_error(plan, s)),
    }
}

/// Tells the writer the size the server announced, ahead of the first piece.
async fn announce_size(flow: &Flow<'_>, size: u64) -> Result<(), FetchError> {
    flow.tx
        .send(ToWriter::Size(size))
        .await
        .map_err(|_| writer_stopped(flow.plan))
}

/// Fetches `rest` as parallel range requests of `chunk_size`.
async fn fetch_rest(
    flow: &Flow<'_>,
    window: &Semaphore,
    rest: ByteRange,
) -> Result<(), FetchError> {
    if rest.is_empty() {
        return Ok(());
    }
    let chunks: Vec<ByteRange> = rest.split(flow.plan.settings.chunk_size).collect();
    let next = AtomicU64::new(0);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            let Some(range) = chunks.get(i) else {
                return Ok::<(), FetchError>(());
            };
            match window.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return Ok(()),
            }
            fetch_range(flow, *range).await?;
        }
    };
    let n = flow.plan.settings.parallel.min(chunks.len()).max(1);
    try_join_all((0..n).map(|_| worker())).await?;
    Ok(())
}

/// Fetches exactly `range`, resuming after breaks, up to the retry budget.
async fn fetch_range(flow: &Flow<'_>, range: ByteRange) -> Result<(), FetchError> {
    let plan = flow.plan;
    let mut todo = range;
    let mut tries = 0;
    while !todo.is_empty() {
        let at = |e: FetchError| BodyBreak::At(todo.start(), e);
        let result = async {
            let resp = request(plan, Some(todo)).await.map_err(at)?;
            if resp.status() != StatusCode::PARTIAL_CONTENT {
                return Err(at(status_error(plan, resp.status())));
            }
            let start = content_range_start(plan, &resp).map_err(at)?;
            if start != todo.start() {
                let msg = format!("asked for {todo:?}, got offset {start}");
                return Err(at(network(plan, msg)));
            }
            stream_body(flow, resp, todo).await
        };
        match result.await {
            Ok(()) => return Ok(()),
            Err(BodyBreak::At(done, e)) if tries < plan.settings.retries && is_retryable(&e) => {
                tries += 1;
                todo = ByteRange::new(done, todo.end());
                backoff(tries).await;
            }
            Err(e) => return Err(e.into_error()),
        }
    }
    Ok(())
}

/// An error part-way through a body, with the offset reached.
enum BodyBreak {
    At(u64, FetchError),
}

impl BodyBreak {
    fn into_error(self) -> FetchError {
        match self {
            BodyBreak::At(_, e) => e,
        }
    }
}

/// Streams a body expected to hold `range` (open-ended when `range.end()` is `u64::MAX`).
async fn stream_body(
    flow: &Flow<'_>,
    mut resp: reqwest::Response,
    range: ByteRange,
) -> Result<(), BodyBreak> {
    let plan = flow.plan;
    let mut offset = range.start();
    loop {
        let next = tokio::time::timeout(plan.settings.timeout, resp.chunk()).await;
        let data = match next {
            Err(_) => return Err(BodyBreak::At(offset, timeout(plan, "body stalled"))),
            Ok(Err(e)) => return Err(BodyBreak::At(offset, network(plan, reqwest_message(&e)))),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(d))) => d,
        };
        if offset.saturating_add(data.len() as u64) > range.end() {
            return Err(BodyBreak::At(
                offset,
                network(plan, format!("body longer than {range:?}")),
            ));
        }
        let len = data.len() as u64;
        if flow
            .tx
            .send(ToWriter::Piece(Piece { offset, data }))
            .await
            .is_err()
        {
            return Err(BodyBreak::At(offset, writer_stopped(plan)));
        }
        offset += len;
        let total = flow.received.fetch_add(len, Ordering::Relaxed) + len;
        (plan.progress)(total);
    }
    if range.end() != u64::MAX && offset != range.end() {
        return Err(BodyBreak::At(
            offset,
            network(
                plan,
                format!("short body: ended at {offset}, expected {}", range.end()),
            ),
        ));
    }
    Ok(())
}

impl From<BodyBreak> for FetchError {
    fn from(b: BodyBreak) -> FetchError {
        b.into_error()
    }
}

pub(super) async fn request(
    plan: &Plan<'_>,
    range: Option<ByteRange>,
) -> Result<reqwest::Response, FetchError> {
    let mut req = plan
        .client
        .get(plan.url.clone())
        .headers(plan.headers.clone());
    if let Some(r) = range {
        req = req.header(RANGE, r.http_header());
    }
    if plan.no_cache {
        req = req.header(CACHE_CONTROL, "no-cache");
    }
    match tokio::time::timeout(plan.settings.timeout, req.send()).await {
        Err(_) => Err(timeout(plan, "no response")),
        Ok(Err(e)) if e.is_timeout() => Err(timeout(plan, "connect")),
        Ok(Err(e)) if e.is_connect() => Err(FetchError::Unreachable {
            label: plan.label.to_string(),
            url: plan.url.to_string(),
            message: reqwest_message(&e),
        }),
        Ok(Err(e)) => Err(network(plan, reqwest_message(&e))),
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// Sends the first request, retrying 5xx and resets with backoff.
pub(super) async fn with_retries<'a, F, Fut>(
    plan: &Plan<'a>,
    mut send: F,
) -> Result<reqwest::Response, FetchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<reqwest::Response, FetchError>>,
{
    let mut tries = 0;
    loop {
        let result = match send().await {
            Ok(r) if r.status().is_server_error() => Err(status_error(plan, r.status())),
            other => other,
        };
        match result {
            Err(e) if tries < plan.settings.retries && is_retryable(&e) => {
                tries += 1;
                backoff(tries).await;
            }
            other => return other,
        }
    }
}

/// 5xx, resets and short bodies are worth another try on the same source; timeouts are not
/// (the deadline already passed once), nor are 4xx or mismatches.
pub(super) fn is_retryable(e: &FetchError) -> bool {
    match e {
        FetchError::Status { status, .. } => *status >= 500,
        FetchError::Network { .. } => true,
        _ => false,
    }
}

pub(super) async fn backoff(tries: u32) {
    tokio::time::sleep(Duration::from_millis(100u64 << tries.min(5))).await;
}

fn content_range_total(plan: &Plan<'_>, resp: &reqwest::Response) -> Result<u64, FetchError> {
    parse_content_range(resp)
        .and_then(|(_, total)| total)
        .ok_or_else(|| network(plan, "206 without a usable Content-Range".into()))
}

pub(super) fn content_range_start(
    plan: &Plan<'_>,
    resp: &reqwest::Response,
) -> Result<u64, FetchError> {
    parse_content_range(resp)
        .map(|(start, _)| start)
        .ok_or_else(|| network(plan, "206 without a usable Content-Range".into()))
}

/// `bytes START-END/TOTAL` → (START, Some(TOTAL)); TOTAL `*` → None.
fn parse_content_range(resp: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    parse_content_range_value(v)
}

fn parse_content_range_value(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// The writer thread is gone (it failed to write, or died).
fn writer_stopped(plan: &Plan<'_>) -> FetchError {
    FetchError::Sink {
        label: plan.label.to_string(),
        source: std::io::Error::other("download writer stopped"),
    }
}

pub(super) fn status_error(plan: &Plan<'_>, status: StatusCode) -> FetchError {
    FetchError::Status {
        label: plan.label.to_string(),
        url: plan.url.to_string(),
        status: status.as_u16(),
    }
}

pub(super) fn network(plan: &Plan<'_>, message: String) -> FetchError {
    FetchError::Network {
        label: plan.label.to_string(),
        url: plan.url.to_string(),
        message,
    }
}

pub(super) fn timeout(plan: &Plan<'_>, what: &'static str) -> FetchError {
    FetchError::Timeout {
        label: plan.label.to_string(),
        url: plan.url.to_string(),
        secs: plan.settings.timeout.as_secs(),
        what,
    }
}

/// reqwest's message plus its causes, on one line.
pub(super) fn reqwest_message(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_values() {
        assert_eq!(
            parse_content_range_value("bytes 0-99/1000"),
            Some((0, Some(1000)))
        );
        assert_eq!(parse_content_range_value("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range_value("bytes */1000"), None);
        assert_eq!(parse_content_range_value("items 0-1/2"), None);
    }

    /// What a sink was told and given.
    #[derive(Default)]
    struct Record {
        announced: Vec<u64>,
        bytes: Vec<u8>,
    }

    struct RecordingSink(Arc<std::sync::Mutex<Record>>);

    impl BlobSink for RecordingSink {
        fn restart(&mut self) -> std::io::Result<()> {
            *self.0.lock().unwrap() = Record::default();
            Ok(())
        }
        fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().bytes.extend_from_slice(data);
            Ok(())
        }
        fn expect_size(&mut self, size: u64) {
            self.0.lock().unwrap().announced.push(size);
        }
    }

    /// A loopback HTTP/1.1 server for `body`: one request per connection, answering `Range`
    /// with 206 when `ranges`, else always 200 with the whole body.
    fn serve(body: Arc<[u8]>, ranges: bool) -> u16 {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let body = body.clone();
                std::thread::spawn(move || {
                    let mut range = None;
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("range: bytes=") {
                            let (a, b) = v.trim().split_once('-').unwrap();
                            range =
                                Some((a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
                        }
                        line.clear();
                    }
                    let head = match range.filter(|_| ranges) {
                        Some((a, b)) => {
                            let b = b.min(body.len() - 1);
                            let head = format!(
                                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len(),
                                b + 1 - a
                            );
                            (head, &body[a..=b])
                        }
                        None => (
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            ),
                            &body[..],
                        ),
                    };
                    let _ = conn.write_all(head.0.as_bytes());
                    let _ = conn.write_all(head.1);
                });
            }
        });
        port
    }

    /// Downloads from a loopback server and returns what the sink saw.
    fn download(ranges: bool, body: Arc<[u8]>) -> (Record, Digest) {
        let port = serve(body, ranges);
        let settings = FetchSettings {
            timeout: Duration::from_secs(10),
            chunk_size: 1 << 20,
            parallel: 2,
            proxies: crate::config::parse_proxies(&["DIRECT".to_string()]).unwrap(),
            retries: 1,
            proxy_reset: Duration::from_secs(60),
        };
        let fetcher = super::super::Fetcher::new(settings).unwrap();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/blob")).unwrap();
        let headers = reqwest::header::HeaderMap::new();
        let request = super::super::BlobRequest {
            label: "blob",
            urls: std::slice::from_ref(&url),
            expected: None,
            headers: &headers,
        };
        let record = Arc::new(std::sync::Mutex::new(Record::default()));
        let sink = Box::new(RecordingSink(record.clone()));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (fetched, _) = runtime
            .block_on(fetcher.fetch_blob(&request, sink, &|_| {}))
            .unwrap();
        let record = std::mem::take(&mut *record.lock().unwrap());
        (record, fetched.digest)
    }

    #[test]
    fn the_writer_is_told_the_announced_size_before_the_bytes() {
        let body: Arc<[u8]> = (0..(3 << 20) + 17).map(|i| (i % 253) as u8).collect();
        for ranges in [true, false] {
            let (record, digest) = download(ranges, body.clone());
            assert_eq!(record.announced, [body.len() as u64], "ranges: {ranges}");
            assert_eq!(record.bytes, &body[..], "ranges: {ranges}");
            assert_eq!(digest, Digest::of(&body));
        }
    }
}
