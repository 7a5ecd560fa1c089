//! `HostileServer`: a loopback HTTP/1.1 server whose answer for each path is scripted to
//! misbehave in one precise way (stall, lie about lengths, ignore or garble `Range`, loop or
//! leave on redirects, fail first), for `tests/hostile_*.rs`.
//!
//! Plain `std::net`, one thread per connection, `Connection: close` on every answer, so each
//! request is one connection and a stalled answer never blocks another. Every request is
//! recorded (method, path, `Range`, `Authorization`) for the tests to inspect. A TLS client
//! (an `https://` URL on this port) gets plain-text garbage for its ClientHello, which fails the
//! handshake. Dropping the server stops it: stalled connections are closed then.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server answers on one path.
#[derive(Clone, Debug)]
pub enum Script {
    /// Honest: 200 with the body, or 206 with the asked `bytes=a-b` range.
    Serve(Arc<[u8]>),
    /// Headers announcing the whole body, then nothing until the server is dropped.
    StallAfterHeaders(Arc<[u8]>),
    /// Headers and the first `after` bytes, then nothing until the server is dropped.
    StallMidBody { body: Arc<[u8]>, after: usize },
    /// `Content-Length` of the whole body, `sent` bytes of it, then the connection closes.
    ShortBody { body: Arc<[u8]>, sent: usize },
    /// `Content-Length` of the body (or of the asked range), then `extra` more bytes after it.
    LongBody { body: Arc<[u8]>, extra: usize },
    /// 200 with the whole body whatever `Range` asked.
    IgnoreRange(Arc<[u8]>),
    /// 206 naming the asked range in `Content-Range`, with the bytes of the range `shift`
    /// bytes further on (wrapping): right length, wrong bytes.
    ShiftedRange { body: Arc<[u8]>, shift: usize },
    /// 206 whose `Content-Range` names another range than the one asked (its start + 1), with
    /// the bytes of the one asked.
    WrongContentRange(Arc<[u8]>),
    /// A redirect (302) to `location`.
    Redirect(String),
    /// `status` with an empty body.
    Status(u16),
    /// 401 with this `WWW-Authenticate` value.
    Challenge(String),
    /// `status` for the first `fails` requests, then `then`.
    FailFirst {
        fails: usize,
        status: u16,
        then: Box<Script>,
    },
    /// 200 with `body` and these extra headers (a registry's JSON, an API answer).
    Document {
        body: Arc<[u8]>,
        headers: Vec<(String, String)>,
    },
}

impl Script {
    /// `Document` with one `Content-Type`.
    pub fn json(content_type: &str, body: impl Into<Vec<u8>>) -> Script {
        Script::Document {
            body: body.into().into(),
            headers: vec![("Content-Type".into(), content_type.into())],
        }
    }
}

/// One request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub cache_control: Option<String>,
}

struct Route {
    script: Script,
    hits: AtomicUsize,
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Arc<Route>>>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

/// A running scripted server on 127.0.0.1.
pub struct HostileServer {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl HostileServer {
    /// Starts the server with no routes (every path answers 404).
    pub fn start() -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, shared))
        };
        HostileServer {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Scripts `path` (with its leading `/`, query included if the client sends one).
    pub fn route(&self, path: &str, script: Script) {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.shared.routes.lock().unwrap().insert(
            path,
            Arc::new(Route {
                script,
                hits: AtomicUsize::new(0),
            }),
        );
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests for `path` (query stripped when comparing).
    pub fn requests_for(&self, path: &str) -> Vec<Seen> {
        let want = format!("/{}", path.trim_start_matches('/'));
        self.requests()
            .into_iter()
            .filter(|s| s.path.split('?').next() == Some(want.as_str()))
            .collect()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                if let Ok(clone) = stream.try_clone() {
                    shared.conns.lock().unwrap().push(clone);
                }
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve_connection(stream, &shared);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A request's method, path and headers (names lowercased).
struct RequestHead {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

/// The request line and headers, or None when the client sent something else (TLS).
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<RequestHead>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(None);
        }
        // A TLS record (ClientHello) starts with 0x16: not HTTP.
        if buf.is_empty() && byte[0] == 0x16 {
            return Ok(None);
        }
        buf.push(byte[0]);
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Some(RequestHead {
        method,
        path,
        headers,
    }))
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let Some(RequestHead {
        method,
        path,
        headers,
    }) = read_head(&mut stream)?
    else {
        stream.write_all(b"HTTP/1.1 400 Not TLS\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    shared.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
        cache_control: headers.get("cache-control").cloned(),
    });
    let route = {
        let routes = shared.routes.lock().unwrap();
        routes
            .get(&path)
            .or_else(|| routes.get(path.split('?').next().unwrap_or("")))
            .cloned()
    };
    let Some(route) = route else {
        return respond(&mut stream, 404, &[], b"", method == "HEAD");
    };
    let hit = route.hits.fetch_add(1, Ordering::Relaxed);
    let range = headers.get("range").and_then(|r| parse_range(r));
    answer(
        &mut stream,
        shared,
        &route.script,
        hit,
        range,
        method == "HEAD",
    )
}

fn answer(
    stream: &mut TcpStream,
    shared: &Shared,
    script: &Script,
    hit: usize,
    range: Option<(u64, Option<u64>)>,
    head: bool,
) -> std::io::Result<()> {
    match script {
        Script::Serve(body) => serve_range(stream, body, range, 0, head),
        Script::IgnoreRange(body) => respond(stream, 200, &[], body, head),
        Script::ShiftedRange { body, shift } => serve_range(stream, body, range, *shift, head),
        Script::WrongContentRange(body) => match clamp(range, body.len()) {
            Some((a, b)) => {
                let cr = format!("bytes {}-{}/{}", a + 1, b, body.len());
                respond(stream, 206, &[("Content-Range", cr)], &body[a..=b], head)
            }
            None => respond(stream, 200, &[], body, head),
        },
        Script::StallAfterHeaders(body) => {
            write_head(stream, 200, &[], body.len())?;
            stall(shared)
        }
        Script::StallMidBody { body, after } => {
            write_head(stream, 200, &[], body.len())?;
            stream.write_all(&body[..(*after).min(body.len())])?;
            stream.flush()?;
            stall(shared)
        }
        Script::ShortBody { body, sent } => {
            let (status, extra, part) = ranged(body, range);
            write_head(stream, status, &extra, part.len())?;
            stream.write_all(&part[..(*sent).min(part.len())])
        }
        Script::LongBody { body, extra } => {
            let (status, hdrs, part) = ranged(body, range);
            write_head(stream, status, &hdrs, part.len())?;
            stream.write_all(part)?;
            stream.write_all(&vec![0x5a; *extra])
        }
        Script::Redirect(location) => {
            respond(stream, 302, &[("Location", location.clone())], b"", head)
        }
        Script::Status(status) => respond(stream, *status, &[], b"", head),
        Script::Challenge(value) => respond(
            stream,
            401,
            &[("WWW-Authenticate", value.clone())],
            b"",
            head,
        ),
        Script::FailFirst {
            fails,
            status,
            then,
        } => match hit < *fails {
            true => respond(stream, *status, &[], b"", head),
            false => answer(stream, shared, then, hit - fails, range, head),
        },
        Script::Document { body, headers } => {
            let hdrs: Vec<(&str, String)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            respond(stream, 200, &hdrs, body, head)
        }
    }
}

/// (status, headers, bytes) for an honest answer to `range`.
fn ranged(
    body: &[u8],
    range: Option<(u64, Option<u64>)>,
) -> (u16, Vec<(&'static str, String)>, &[u8]) {
    match clamp(range, body.len()) {
        Some((a, b)) => (
            206,
            vec![("Content-Range", format!("bytes {a}-{b}/{}", body.len()))],
            &body[a..=b],
        ),
        None => (200, Vec::new(), body),
    }
}

fn serve_range(
    stream: &mut TcpStream,
    body: &[u8],
    range: Option<(u64, Option<u64>)>,
    shift: usize,
    head: bool,
) -> std::io::Result<()> {
    let (status, hdrs, part) = ranged(body, range);
    if shift == 0 || status == 200 {
        return respond(stream, status, &hdrs, part, head);
    }
    let start = part.as_ptr() as usize - body.as_ptr() as usize;
    let shifted: Vec<u8> = (0..part.len())
        .map(|i| body[(start + i + shift) % body.len()])
        .collect();
    respond(stream, status, &hdrs, &shifted, head)
}

/// The asked range as inclusive indexes within `len`, or None for no (or an unusable) range.
fn clamp(range: Option<(u64, Option<u64>)>, len: usize) -> Option<(usize, usize)> {
    let (a, b) = range?;
    let last = len.checked_sub(1)?;
    let a = usize::try_from(a).ok()?;
    let b = b.map_or(last, |b| usize::try_from(b).unwrap_or(last).min(last));
    (a <= b).then_some((a, b))
}

/// `bytes=a-b` or `bytes=a-`.
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = match b.trim() {
        "" => None,
        b => Some(b.parse().ok()?),
    };
    Some((a, b))
}

fn write_head(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    len: usize,
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status} Scripted\r\nContent-Length: {len}\r\nConnection: close\r\n");
    if status == 200 || status == 206 {
        head += "Accept-Ranges: bytes\r\n";
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes())?;
    stream.flush()
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    write_head(stream, status, headers, body.len())?;
    if !head {
        stream.write_all(body)?;
    }
    stream.flush()
}

/// Keeps the connection open, sending nothing, until the server is dropped.
fn stall(shared: &Shared) -> std::io::Result<()> {
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
