//! The demo's origin: a small HTTP/1.1 file server on 127.0.0.1 (ephemeral port) serving
//! in-memory files with `Range` support and keep-alive, counting the requests it answers and the
//! body bytes it sends, so the demo can show what each step cost the network.
//!
//! It is deliberately minimal (GET and HEAD, one range per request, thread per connection):
//! its only client is lazycas's own fetcher on loopback. It is not a general web server.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// An idle keep-alive connection is closed after this long.
const IDLE: Duration = Duration::from_secs(10);

/// What the origin served so far.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// A snapshot of the origin's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Requests answered (any status).
    pub requests: u64,
    /// Body bytes sent.
    pub bytes: u64,
}

impl Served {
    /// What was served between `earlier` and `self`.
    pub fn since(&self, earlier: Served) -> Served {
        Served {
            requests: self.requests - earlier.requests,
            bytes: self.bytes - earlier.bytes,
        }
    }
}

struct Shared {
    files: HashMap<String, Arc<[u8]>>,
    counters: Counters,
    stop: AtomicBool,
    /// Open connections by number, so `stop` can close them.
    conns: Mutex<HashMap<u64, TcpStream>>,
}

/// A running loopback origin; stopped (and its connections closed) on [`Origin::stop`] or drop.
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Origin {
    /// Serves `files` (URL path such as `/images/x.sif` → bytes) on 127.0.0.1, ephemeral port.
    pub fn start(files: HashMap<String, Arc<[u8]>>) -> io::Result<Origin> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            files,
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("demo-origin".into())
                .spawn(move || accept_loop(listener, shared))?
        };
        Ok(Origin {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests and body bytes served so far.
    pub fn served(&self) -> Served {
        Served {
            requests: self.shared.counters.requests.load(Ordering::SeqCst),
            bytes: self.shared.counters.bytes.load(Ordering::SeqCst),
        }
    }

    /// Stops accepting, closes every open connection and waits for the acceptor.
    pub fn stop(&mut self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        if let Ok(mut conns) = self.shared.conns.lock() {
            for (_, c) in conns.drain() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for (id, stream) in (0u64..).zip(listener.incoming()) {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if let (Ok(copy), Ok(mut conns)) = (stream.try_clone(), shared.conns.lock()) {
            conns.insert(id, copy);
        }
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("demo-origin-conn".into())
            .spawn(move || {
                let _ = serve_connection(&stream, &shared);
                // Close now: the copy kept for `stop` would otherwise hold the socket open.
                let _ = stream.shutdown(Shutdown::Both);
                if let Ok(mut conns) = shared.conns.lock() {
                    conns.remove(&id);
                }
            });
        if spawned.is_err() {
            // Out of threads: the client sees the connection close and retries.
            continue;
        }
    }
}

/// One parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct RequestHead {
    method: String,
    path: String,
    range: Option<String>,
    keep_alive: bool,
}

fn serve_connection(stream: &TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream.try_clone()?;
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        respond(&mut writer, shared, &head)?;
        if !head.keep_alive {
            return Ok(());
        }
    }
}

/// Reads one request head; `None` at a clean end of the connection.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<RequestHead>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "request head cut off",
                ))
            };
        }
        total += n;
        if total > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate blank lines between requests
            }
            break;
        }
        lines.push(line);
    }
    parse_head(&lines)
        .map(Some)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed request"))
}

fn parse_head(lines: &[String]) -> Option<RequestHead> {
    let mut first = lines.first()?.split_whitespace();
    let method = first.next()?.to_string();
    let target = first.next()?;
    let version = first.next()?;
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or(target)
        .to_string();
    let mut range = None;
    let mut keep_alive = version == "HTTP/1.1";
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("range") {
            range = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        }
    }
    Some(RequestHead {
        method,
        path,
        range,
        keep_alive,
    })
}

/// How to answer a `Range` header for a body of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAnswer {
    /// 200 with the whole body (no header, or one we do not honour, e.g. several ranges).
    Full,
    /// 206 with bytes `[start, end)`.
    Partial(u64, u64),
    /// 416.
    Unsatisfiable,
}

fn answer_range(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => last
            .parse::<u64>()
            .ok()
            .map(|n| (len.saturating_sub(n), len)),
        // bytes=A-
        (false, true) => first.parse::<u64>().ok().map(|a| (a, len)),
        // bytes=A-B (inclusive)
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(a), Ok(b)) if b >= a => Some((a, b.saturating_add(1).min(len))),
            _ => return RangeAnswer::Full,
        },
        (true, true) => return RangeAnswer::Full,
    };
    match parsed {
        None => RangeAnswer::Full,
        Some((start, end)) if start >= len || start >= end => RangeAnswer::Unsatisfiable,
        Some((start, end)) => RangeAnswer::Partial(start, end),
    }
}

fn respond(w: &mut TcpStream, shared: &Shared, head: &RequestHead) -> io::Result<()> {
    shared.counters.requests.fetch_add(1, Ordering::SeqCst);
    let connection = if head.keep_alive {
        "keep-alive"
    } else {
        "close"
    };
    if head.method != "GET" && head.method != "HEAD" {
        let msg = format!(
            "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\nConnection: {connection}\r\n\r\n"
        );
        return w.write_all(msg.as_bytes());
    }
    let Some(body) = shared.files.get(&head.path) else {
        let msg = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: {connection}\r\n\r\n"
        );
        return w.write_all(msg.as_bytes());
    };
    let len = body.len() as u64;
    let (status, start, end, extra) = match answer_range(head.range.as_deref(), len) {
        RangeAnswer::Full => ("200 OK", 0, len, String::new()),
        RangeAnswer::Partial(s, e) => (
            "206 Partial Content",
            s,
            e,
            format!("Content-Range: bytes {s}-{}/{len}\r\n", e - 1),
        ),
        RangeAnswer::Unsatisfiable => {
            let msg = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: {connection}\r\n\r\n"
            );
            return w.write_all(msg.as_bytes());
        }
    };
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\n{extra}Content-Length: {}\r\nConnection: {connection}\r\n\r\n",
        end - start
    );
    w.write_all(msg.as_bytes())?;
    if head.method == "HEAD" {
        return Ok(());
    }
    // Usize conversions cannot fail: start <= end <= body.len().
    let slice = &body[start as usize..end as usize];
    for piece in slice.chunks(64 * 1024) {
        w.write_all(piece)?;
        shared
            .counters
            .bytes
            .fetch_add(piece.len() as u64, Ordering::SeqCst);
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn range_answers() {
        assert_eq!(answer_range(None, 10), RangeAnswer::Full);
        assert_eq!(
            answer_range(Some("bytes=0-3"), 10),
            RangeAnswer::Partial(0, 4)
        );
        assert_eq!(
            answer_range(Some("bytes=5-"), 10),
            RangeAnswer::Partial(5, 10)
        );
        assert_eq!(
            answer_range(Some("bytes=-3"), 10),
            RangeAnswer::Partial(7, 10)
        );
        assert_eq!(
            answer_range(Some("bytes=8-100"), 10),
            RangeAnswer::Partial(8, 10)
        );
        assert_eq!(
            answer_range(Some("bytes=10-20"), 10),
            RangeAnswer::Unsatisfiable
        );
        assert_eq!(answer_range(Some("bytes=0-1,4-5"), 10), RangeAnswer::Full);
        assert_eq!(answer_range(Some("bytes=5-2"), 10), RangeAnswer::Full);
        assert_eq!(answer_range(Some("items=0-1"), 10), RangeAnswer::Full);
        assert_eq!(
            answer_range(Some("bytes=0-0"), 0),
            RangeAnswer::Unsatisfiable
        );
    }

    #[test]
    fn heads_parse() {
        let lines: Vec<String> = [
            "GET /a/b.sif?x=1 HTTP/1.1",
            "Host: x",
            "range: bytes=0-9",
            "Connection: close",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let h = parse_head(&lines).unwrap();
        assert_eq!(h.path, "/a/b.sif");
        assert_eq!(h.range.as_deref(), Some("bytes=0-9"));
        assert!(!h.keep_alive);
        assert!(parse_head(&["GARBAGE".to_string()]).is_none());
    }

    fn get(addr: SocketAddr, req: &str) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&out[..split]).into_owned(),
            out[split + 4..].to_vec(),
        )
    }

    #[test]
    fn serves_ranges_and_counts() {
        let body: Arc<[u8]> = (0u8..=255).cycle().take(1000).collect::<Vec<u8>>().into();
        let mut files = HashMap::new();
        files.insert("/f.bin".to_string(), body.clone());
        let mut origin = Origin::start(files).unwrap();
        let (head, got) = get(
            origin.addr,
            "GET /f.bin HTTP/1.1\r\nRange: bytes=10-19\r\nConnection: close\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert!(head.contains("Content-Range: bytes 10-19/1000"), "{head}");
        assert_eq!(got, &body[10..20]);
        let (head, got) = get(origin.addr, "GET /f.bin HTTP/1.0\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(got, &body[..]);
        let (head, _) = get(
            origin.addr,
            "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        assert_eq!(
            origin.served(),
            Served {
                requests: 3,
                bytes: 1010
            }
        );
        origin.stop();
        assert_eq!(
            origin.served().requests,
            3,
            "the wake-up connection is not a request"
        );
    }

    #[test]
    fn keep_alive_serves_several_requests_on_one_connection() {
        let mut files = HashMap::new();
        files.insert("/a".to_string(), Arc::<[u8]>::from(&b"hello"[..]));
        let origin = Origin::start(files).unwrap();
        let (head, body) = get(
            origin.addr,
            "GET /a HTTP/1.1\r\n\r\nHEAD /a HTTP/1.1\r\n\r\nGET /a HTTP/1.1\r\nRange: bytes=1-\r\nConnection: close\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 200"));
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("helloHTTP/1.1 200"), "{text}");
        assert!(text.ends_with("\r\n\r\nello"), "{text}");
        assert_eq!(
            origin.served(),
            Served {
                requests: 3,
                bytes: 9
            }
        );
    }
}
