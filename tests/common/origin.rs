//! What every test origin offers: a docroot to put files in, URLs for them, and an access log
//! that says which requests were served and how many body bytes each one sent.
//!
//! All origins write the same log line, nginx's format named `lazycas`:
//! `$request_method $uri $status $body_bytes_sent "$http_range" "$http_cache_control" "$http_via"`
//! (`-` for an absent header), so one parser serves nginx and the Python no-Range origin.

use super::content::{random_bytes, unique_seed, write_blob, Blob};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An HTTP server on 127.0.0.1 serving files from a directory.
pub trait Origin {
    /// The directory served at `/`.
    fn docroot(&self) -> &Path;
    /// `http://127.0.0.1:PORT`, no trailing slash.
    fn base_url(&self) -> String;
    /// Where the server logs its requests.
    fn access_log_path(&self) -> PathBuf;

    /// The URL of `rel` (relative to the docroot).
    fn url(&self, rel: &str) -> String {
        format!("{}/{}", self.base_url(), rel.trim_start_matches('/'))
    }

    /// The URL of a blob put in this origin.
    fn url_of(&self, blob: &Blob) -> String {
        self.url(&blob.rel)
    }

    /// Writes `bytes` to `rel` in the docroot.
    fn put(&self, rel: &str, bytes: Vec<u8>) -> Blob {
        write_blob(self.docroot(), rel, bytes)
    }

    /// Writes `len` random bytes, distinct from every other call's, to `rel` in the docroot.
    fn put_random(&self, rel: &str, len: usize) -> Blob {
        self.put(rel, random_bytes(len, unique_seed()))
    }

    /// The requests logged so far, once the log has stopped growing (a server may write a
    /// request's line just after the client saw its last byte).
    fn log(&self) -> AccessLog {
        AccessLog::read_settled(&self.access_log_path())
    }
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub status: u16,
    /// Body bytes sent (for an aborted transfer: the bytes sent before the abort).
    pub body_bytes: u64,
    /// The `Range` request header, if any.
    pub range: Option<String>,
    /// The `Cache-Control` request header, if any.
    pub cache_control: Option<String>,
    /// The `Via` request header (set by proxies such as squid), if any.
    pub via: Option<String>,
}

/// A snapshot of an origin's access log.
#[derive(Debug, Clone, Default)]
pub struct AccessLog {
    pub requests: Vec<Request>,
}

impl AccessLog {
    /// Parses the log at `path` as it is now (a missing file is an empty log).
    pub fn read(path: &Path) -> AccessLog {
        AccessLog::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Like `read`, but waits until the log has stopped growing (see `settled_text`).
    pub fn read_settled(path: &Path) -> AccessLog {
        AccessLog::parse(&settled_text(path))
    }

    /// Parses log text.
    pub fn parse(text: &str) -> AccessLog {
        let requests = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse_line(l).unwrap_or_else(|| panic!("unparsable access log line: {l:?}")))
            .collect();
        AccessLog { requests }
    }

    /// Requests for `uri` (`"/dir/a.bin"`; a missing leading slash is added).
    pub fn for_uri(&self, uri: &str) -> Vec<&Request> {
        let uri = normalize(uri);
        self.requests.iter().filter(|r| r.uri == uri).collect()
    }

    /// Number of requests for `uri`.
    pub fn count(&self, uri: &str) -> usize {
        self.for_uri(uri).len()
    }

    /// Body bytes served for `uri`, summed over all its requests.
    pub fn bytes_served(&self, uri: &str) -> u64 {
        self.for_uri(uri).iter().map(|r| r.body_bytes).sum()
    }

    /// Body bytes served for every path.
    pub fn total_bytes(&self) -> u64 {
        self.requests.iter().map(|r| r.body_bytes).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
}

impl std::fmt::Display for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.requests {
            writeln!(
                f,
                "{} {} {} {} range={} cache-control={} via={}",
                r.method,
                r.uri,
                r.status,
                r.body_bytes,
                r.range.as_deref().unwrap_or("-"),
                r.cache_control.as_deref().unwrap_or("-"),
                r.via.as_deref().unwrap_or("-"),
            )?;
        }
        Ok(())
    }
}

/// The contents of a log file once it has not changed for 250 ms (waiting at most 5 s): a
/// server may write a request's line just after the client has seen the last byte.
pub fn settled_text(path: &Path) -> String {
    let mut last = std::fs::read(path).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = std::fs::read(path).unwrap_or_default();
        if now == last || std::time::Instant::now() >= deadline {
            return String::from_utf8_lossy(&now).into_owned();
        }
        last = now;
    }
}

fn normalize(uri: &str) -> String {
    if uri.starts_with('/') {
        uri.to_string()
    } else {
        format!("/{uri}")
    }
}

/// Parses `METHOD URI STATUS BYTES "range" "cache-control" "via"`.
fn parse_line(line: &str) -> Option<Request> {
    let mut head = line.splitn(5, ' ');
    let method = head.next()?.to_string();
    let uri = head.next()?.to_string();
    let status = head.next()?.parse().ok()?;
    let body_bytes = head.next()?.parse().ok()?;
    let rest = head.next().unwrap_or("");
    // Quoted fields; nginx escapes `"` inside values as \x22, so splitting on quotes is exact.
    let quoted: Vec<&str> = rest.split('"').skip(1).step_by(2).collect();
    let field = |i: usize| {
        quoted
            .get(i)
            .filter(|v| !v.is_empty() && **v != "-")
            .map(|v| v.to_string())
    };
    Some(Request {
        method,
        uri,
        status,
        body_bytes,
        range: field(0),
        cache_control: field(1),
        via: field(2),
    })
}

/// Sends `GET path` to 127.0.0.1:`port` and returns (status, body), or None if nothing answers
/// in time. Only for harness handshakes; tests fetch through lazycas.
pub fn http_get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&resp[..split]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, resp[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nginx_lines() {
        let r = parse_line(
            r#"GET /a/b.bin 206 1048576 "bytes=0-1048575" "no-cache" "1.1 host (squid/5.7)""#,
        )
        .unwrap();
        assert_eq!(r.uri, "/a/b.bin");
        assert_eq!(r.status, 206);
        assert_eq!(r.body_bytes, 1048576);
        assert_eq!(r.range.as_deref(), Some("bytes=0-1048575"));
        assert_eq!(r.cache_control.as_deref(), Some("no-cache"));
        assert_eq!(r.via.as_deref(), Some("1.1 host (squid/5.7)"));
        let r = parse_line(r#"HEAD /x 200 0 "-" "-" "-""#).unwrap();
        assert_eq!((r.range, r.cache_control, r.via), (None, None, None));
    }
}
