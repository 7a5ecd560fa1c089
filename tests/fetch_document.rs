//! `Fetcher::get_document` against real servers started by the test: a loopback nginx for
//! bodies, statuses and the size bound, a dead origin for the deadline. No FUSE needed.

mod common;

use std::time::{Duration, Instant};

use common::{DeadOrigin, Nginx, Origin};
use lazycas::config::Config;
use lazycas::fetch::{DocumentRequest, FetchError, FetchSettings, Fetcher};
use reqwest::header::HeaderMap;
use url::Url;

fn fetcher(timeout_secs: u64) -> Fetcher {
    let config = Config::parse(&format!("timeout_secs = {timeout_secs}"), None).expect("config");
    Fetcher::new(FetchSettings::from_config(&config)).expect("fetcher")
}

fn get(f: &Fetcher, url: &str, max_bytes: usize) -> Result<lazycas::fetch::Document, FetchError> {
    let url = Url::parse(url).expect("url");
    let headers = HeaderMap::new();
    let req = DocumentRequest {
        label: "test document",
        url: &url,
        accept: Some("application/json"),
        headers: &headers,
        max_bytes,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(f.get_document(&req))
}

#[test]
fn a_document_comes_whole_and_a_missing_one_as_its_status() {
    let origin = Nginx::start();
    let blob = origin.put("doc.json", b"{\"a\": 1}".to_vec());
    let f = fetcher(5);
    let doc = get(&f, &origin.url_of(&blob), 1024).expect("get");
    assert!(doc.is_success());
    assert_eq!(&doc.body[..], b"{\"a\": 1}");
    assert_eq!(doc.content_type(), Some("application/octet-stream"));
    let missing = get(&f, &origin.url("nope.json"), 1024).expect("get 404");
    assert_eq!(missing.status, 404);
    assert!(!missing.is_success());
}

#[test]
fn a_body_larger_than_the_bound_is_refused() {
    let origin = Nginx::start();
    let blob = origin.put_random("big.bin", 100_000);
    let err = get(&fetcher(5), &origin.url_of(&blob), 4096).expect_err("bounded");
    assert!(
        err.to_string().contains("larger than"),
        "unexpected error: {err}"
    );
}

#[test]
fn a_dead_origin_fails_within_the_deadline() {
    let dead = DeadOrigin::start();
    let started = Instant::now();
    let err = get(&fetcher(2), &dead.url("x.json"), 1024).expect_err("dead");
    assert!(matches!(err, FetchError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
