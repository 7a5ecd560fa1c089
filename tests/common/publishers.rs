//! Loopback stand-ins for the publishers' servers, written in the test from their public API
//! descriptions, because neither a Sylabs library server nor a Singularity Registry Server can
//! be installed here:
//! - `LibraryServer`: the Sylabs library API as scs-library-client uses it:
//!   `GET /v1/images/<entity>/<collection>/<container>:<tag>?arch=` answers
//!   `{"data": {"hash": "sha256.<hex>", "size": N, ...}}`, and
//!   `GET /v1/imagefile/<ref>?arch=` answers `303 See Other` to a `BlobHost`. Both require the
//!   configured bearer token.
//! - `ShubServer`: Singularity Registry Server's `GET /api/container/<collection>/<name>:<tag>`,
//!   answering `{"id", "name", "image", "tag", "version", "collection", ...}` (`{}` when it has
//!   no such container), the image URL pointing at a `BlobHost`.
//! - `BlobHost`: the storage a library redirects to: serves bytes with `Range`, and REJECTS
//!   (403) any request carrying an `Authorization` header, counting them.
//!
//! Each is one `std::net` listener on 127.0.0.1 with a thread per connection (one request per
//! connection, `Connection: close`); dropping the value stops its accept loop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
}

/// An answer.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(status: u16, body: String) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into_bytes(),
        }
    }

    pub fn empty(status: u16) -> HttpResponse {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

type Handler = Arc<dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync>;

/// A loopback HTTP server running `handler` for every request, recording each request.
pub struct Loopback {
    port: u16,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Loopback {
    pub fn start(handler: Handler) -> Loopback {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback server");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (handler, requests) = (handler.clone(), requests.clone());
                    std::thread::spawn(move || serve(conn, &handler, &requests));
                }
            })
        };
        Loopback {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, handler: &Handler, requests: &Mutex<Vec<HttpRequest>>) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    let mut req = HttpRequest {
        method: method.to_string(),
        target: target.to_string(),
        headers: Vec::new(),
    };
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            req.headers
                .push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    requests.lock().expect("requests").push(req.clone());
    let resp = handler(&req);
    let mut out = format!("HTTP/1.1 {} X\r\n", resp.status);
    for (n, v) in &resp.headers {
        out += &format!("{n}: {v}\r\n");
    }
    out += &format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body.len()
    );
    let mut conn = conn;
    let _ = conn.write_all(out.as_bytes());
    if req.method != "HEAD" {
        let _ = conn.write_all(&resp.body);
    }
    let _ = conn.flush();
}

/// Blob storage: `/blobs/<name>` with `Range`, refusing any `Authorization`.
pub struct BlobHost {
    pub server: Loopback,
    blobs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl BlobHost {
    pub fn start() -> BlobHost {
        let blobs: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let handler = {
            let blobs = blobs.clone();
            Arc::new(move |req: &HttpRequest| {
                if req.header("authorization").is_some() {
                    return HttpResponse::empty(403);
                }
                let Some(name) = req.path().strip_prefix("/blobs/") else {
                    return HttpResponse::empty(404);
                };
                let Some(bytes) = blobs.lock().expect("blobs").get(name).cloned() else {
                    return HttpResponse::empty(404);
                };
                ranged(req, bytes)
            })
        };
        BlobHost {
            server: Loopback::start(handler),
            blobs,
        }
    }

    /// Puts (or replaces) `/blobs/<name>`.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.blobs
            .lock()
            .expect("blobs")
            .insert(name.to_string(), bytes);
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/blobs/{name}", self.server.host())
    }

    /// Requests that carried an `Authorization` header (all refused).
    pub fn authorized_requests(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.header("authorization").is_some())
            .count()
    }

    /// Requests for a byte range.
    pub fn range_requests(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.header("range").is_some())
            .count()
    }
}

/// 206 for `Range: bytes=a-b` (or `a-`), else 200 with the whole body.
fn ranged(req: &HttpRequest, bytes: Vec<u8>) -> HttpResponse {
    let total = bytes.len() as u64;
    let range = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            let start: u64 = a.parse().ok()?;
            let end: u64 = if b.is_empty() {
                total.checked_sub(1)?
            } else {
                b.parse::<u64>().ok()?.min(total.checked_sub(1)?)
            };
            (start <= end).then_some((start, end))
        });
    match range {
        Some((start, end)) => HttpResponse {
            status: 206,
            headers: vec![(
                "Content-Range".into(),
                format!("bytes {start}-{end}/{total}"),
            )],
            body: bytes[start as usize..=end as usize].to_vec(),
        },
        None => HttpResponse {
            status: 200,
            headers: vec![("Accept-Ranges".into(), "bytes".into())],
            body: bytes,
        },
    }
}

/// One image a library or shub server knows.
#[derive(Debug, Clone)]
pub struct Published {
    /// `entity/collection/container:tag` (library) or `collection/container:tag` (shub).
    pub reference: String,
    /// What the API states: `sha256.<hex>` (library hash, shub version) or an md5 (shub).
    pub stated_hash: String,
    pub size: u64,
    /// Where its bytes are (a `BlobHost` URL).
    pub blob_url: String,
}

/// The Sylabs library API subset above.
pub struct LibraryServer {
    pub server: Loopback,
    images: Arc<Mutex<Vec<Published>>>,
}

impl LibraryServer {
    pub fn start(token: &str) -> LibraryServer {
        let images: Arc<Mutex<Vec<Published>>> = Arc::default();
        let expected_auth = format!("Bearer {token}");
        let handler = {
            let images = images.clone();
            Arc::new(move |req: &HttpRequest| {
                if req.header("authorization") != Some(expected_auth.as_str()) {
                    return HttpResponse::json(401, r#"{"error":{"code":401}}"#.into());
                }
                if !req.query().split('&').any(|kv| kv.starts_with("arch=")) {
                    return HttpResponse::json(400, r#"{"error":{"code":400}}"#.into());
                }
                let path = req.path();
                let (what, reference) = if let Some(r) = path.strip_prefix("/v1/images/") {
                    ("images", r)
                } else if let Some(r) = path.strip_prefix("/v1/imagefile/") {
                    ("imagefile", r)
                } else {
                    return HttpResponse::empty(404);
                };
                let found = images
                    .lock()
                    .expect("images")
                    .iter()
                    .find(|i| i.reference == reference)
                    .cloned();
                let Some(image) = found else {
                    return HttpResponse::json(404, r#"{"error":{"code":404}}"#.into());
                };
                match what {
                    "images" => HttpResponse::json(
                        200,
                        format!(
                            r#"{{"data":{{"id":"5cb9c34d7d960d82f5f5bc57","hash":"{}","size":{},"uploaded":true,"containerName":"{}"}}}}"#,
                            image.stated_hash, image.size, image.reference
                        ),
                    ),
                    _ => HttpResponse {
                        status: 303,
                        headers: vec![("Location".into(), image.blob_url.clone())],
                        body: Vec::new(),
                    },
                }
            })
        };
        LibraryServer {
            server: Loopback::start(handler),
            images,
        }
    }

    pub fn publish(&self, image: Published) {
        self.images.lock().expect("images").push(image);
    }
}

/// The Singularity Registry Server API subset above.
pub struct ShubServer {
    pub server: Loopback,
    containers: Arc<Mutex<Vec<Published>>>,
}

impl ShubServer {
    pub fn start() -> ShubServer {
        let containers: Arc<Mutex<Vec<Published>>> = Arc::default();
        let handler = {
            let containers = containers.clone();
            Arc::new(move |req: &HttpRequest| {
                let Some(reference) = req.path().strip_prefix("/api/container/") else {
                    return HttpResponse::empty(404);
                };
                let reference = reference.trim_end_matches('/');
                let found = containers
                    .lock()
                    .expect("containers")
                    .iter()
                    .find(|c| c.reference == reference)
                    .cloned();
                let Some(c) = found else {
                    return HttpResponse::json(200, "{}".into());
                };
                let (collection, rest) = c.reference.split_once('/').unwrap_or(("", ""));
                let (name, tag) = rest.split_once(':').unwrap_or((rest, "latest"));
                HttpResponse::json(
                    200,
                    format!(
                        r#"{{"id":7,"name":"{name}","image":"{}","tag":"{tag}","add_date":"2024-01-01T00:00:00Z","metrics":{{}},"version":"{}","frozen":false,"metadata":{{}},"collection":"{collection}"}}"#,
                        c.blob_url, c.stated_hash
                    ),
                )
            })
        };
        ShubServer {
            server: Loopback::start(handler),
            containers,
        }
    }

    pub fn publish(&self, container: Published) {
        self.containers.lock().expect("containers").push(container);
    }
}
