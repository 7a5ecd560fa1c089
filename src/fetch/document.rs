//! Small documents over HTTP: registry manifests and tokens, library and shub API answers,
//! chunk indexes, directory listings. [`Fetcher::get_document`] sends one GET through the
//! same routes (proxy groups with failover), deadlines and retries as blob downloads, and
//! returns the whole body, bounded: a body larger than the caller's limit is an error, never a
//! buffer that grows with what a server sends.
//!
//! Statuses are the caller's to judge (a registry's 401 carries the challenge it needs), except
//! 5xx, which is retried and then an error like any network failure. Verifying the bytes is the
//! caller's job too: it knows which digest they must have.

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use url::Url;

use super::attempt::{backoff, reqwest_message};
use super::{FetchError, Fetcher};

/// One document to GET.
#[derive(Debug, Clone, Copy)]
pub struct DocumentRequest<'a> {
    /// What it is for, in log lines and errors (`registry 127.0.0.1:5000 manifest team/app:1.4`).
    pub label: &'a str,
    /// Where.
    pub url: &'a Url,
    /// `Accept`, when the server picks a format by it (registry manifests).
    pub accept: Option<&'a str>,
    /// Other headers (`Authorization` for the host of `url` only: dropped on a cross-host
    /// redirect).
    pub headers: &'a HeaderMap,
    /// The largest body accepted.
    pub max_bytes: usize,
}

/// A document as the server sent it.
#[derive(Debug, Clone)]
pub struct Document {
    /// The HTTP status.
    pub status: u16,
    /// The URL that answered (after redirects).
    pub url: Url,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Document {
    /// The `Content-Type` without parameters, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.header(CONTENT_TYPE.as_str())
            .map(|v| v.split(';').next().unwrap_or(v).trim())
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Fetcher {
    /// GETs `req.url` through the proxy groups in order (members of a group fail over), with
    /// the fetcher's deadlines and retries; the first answer that is not a network failure or
    /// a 5xx is returned whatever its status.
    pub async fn get_document(&self, req: &DocumentRequest<'_>) -> Result<Document, FetchError> {
        let mut routes = self.routes.search(req.url);
        while let Some((route, client)) = routes.next() {
            match self.document_with_retries(req, &client).await {
                Ok(doc) => return Ok(doc),
                Err(e) => {
                    tracing::warn!("{e}");
                    routes.failed(&route, e);
                }
            }
        }
        Err(routes.last_failure().unwrap_or(FetchError::NoSource {
            label: req.label.to_string(),
        }))
    }

    async fn document_with_retries(
        &self,
        req: &DocumentRequest<'_>,
        client: &reqwest::Client,
    ) -> Result<Document, FetchError> {
        let mut tries = 0;
        loop {
            let result = self.document_once(req, client).await;
            let retry = match &result {
                Ok(doc) => doc.status >= 500,
                Err(FetchError::Network { .. }) => true,
                Err(_) => false,
            };
            if !retry || tries >= self.settings.retries {
                return match result {
                    Ok(doc) if doc.status >= 500 => Err(FetchError::Status {
                        label: req.label.to_string(),
                        url: req.url.to_string(),
                        status: doc.status,
                    }),
                    other => other,
                };
            }
            tries += 1;
            backoff(tries).await;
        }
    }

    async fn document_once(
        &self,
        req: &DocumentRequest<'_>,
        client: &reqwest::Client,
    ) -> Result<Document, FetchError> {
        let timeout = self.settings.timeout;
        let fail = |message: String| FetchError::Network {
            label: req.label.to_string(),
            url: req.url.to_string(),
            message,
        };
        let stalled = |what| FetchError::Timeout {
            label: req.label.to_string(),
            url: req.url.to_string(),
            secs: timeout.as_secs(),
            what,
        };
        let mut builder = client.get(req.url.clone()).headers(req.headers.clone());
        if let Some(accept) = req.accept {
            builder = builder.header(ACCEPT, accept);
        }
        let mut resp = match tokio::time::timeout(timeout, builder.send()).await {
            Err(_) => return Err(stalled("no response")),
            Ok(Err(e)) if e.is_timeout() => return Err(stalled("connect")),
            Ok(Err(e)) if e.is_connect() => {
                return Err(FetchError::Unreachable {
                    label: req.label.to_string(),
                    url: req.url.to_string(),
                    message: reqwest_message(&e),
                })
            }
            Ok(Err(e)) => return Err(fail(reqwest_message(&e))),
            Ok(Ok(r)) => r,
        };
        if resp
            .content_length()
            .is_some_and(|n| n > req.max_bytes as u64)
        {
            return Err(fail(format!(
                "answer of {} bytes is larger than the {} accepted",
                resp.content_length().unwrap_or(0),
                req.max_bytes
            )));
        }
        let mut body = BytesMut::new();
        loop {
            match tokio::time::timeout(timeout, resp.chunk()).await {
                Err(_) => return Err(stalled("body stalled")),
                Ok(Err(e)) => return Err(fail(reqwest_message(&e))),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(piece))) => {
                    if body.len() + piece.len() > req.max_bytes {
                        return Err(fail(format!(
                            "answer is larger than the {} bytes accepted",
                            req.max_bytes
                        )));
                    }
                    body.extend_from_slice(&piece);
                }
            }
        }
        Ok(Document {
            status: resp.status().as_u16(),
            url: resp.url().clone(),
            headers: resp.headers().clone(),
            body: body.freeze(),
        })
    }
}
