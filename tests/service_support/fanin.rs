//! "N nodes behind one squid read the same blob at once": the scenario behind the acceptance
//! test and the closing figures (`bench/squid.sh`). Real nginx origin, real squid with the shipped
//! settings, N real lazycas daemons with their own stores and mount points.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::common::{
    sha256_file, with_deadline, Asset, Config, Daemon, Lazycas, Nginx, Origin, Squid,
};

use super::shipped::squid_settings_for_test;

/// How the nodes reach the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Through one squid with the shipped settings (`proxies = [squid]`).
    Squid,
    /// Straight to the origin: the baseline a site proxy is measured against.
    Direct,
}

/// What one fan-in run cost the origin.
#[derive(Debug, Clone)]
pub struct FanIn {
    /// How the nodes reached the origin.
    pub via: Via,
    /// Nodes that read the blob.
    pub nodes: usize,
    /// Blob size in bytes.
    pub size: u64,
    /// Body bytes the origin (nginx) sent for the blob.
    pub origin_bytes: u64,
    /// Requests the origin answered for the blob.
    pub origin_requests: usize,
    /// Requests squid answered for the blob (one per node expected).
    pub proxy_requests: usize,
    /// Of those, requests sent with a `Range` header (lazycas must send none through a proxy).
    pub proxy_ranged: usize,
    /// squid's result codes, e.g. `TCP_MISS`, `TCP_HIT`, `TCP_MEM_HIT`.
    pub proxy_results: Vec<String>,
    /// Wall time from the start signal until every node had read and hashed the blob.
    pub elapsed: Duration,
}

impl FanIn {
    /// Origin bytes as a multiple of the blob size.
    pub fn ratio(&self) -> f64 {
        self.origin_bytes as f64 / self.size as f64
    }
}

impl std::fmt::Display for FanIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "N={} nodes via {:?}, blob {} MiB: origin served {} bytes in {} request(s) = {:.2}x the blob; squid: {} request(s) {:?}; {:.1}s",
            self.nodes,
            self.via,
            self.size >> 20,
            self.origin_bytes,
            self.origin_requests,
            self.ratio(),
            self.proxy_requests,
            self.proxy_results,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Starts an origin, one squid with the shipped settings (for `Via::Squid`) and `n` nodes using
/// it as their only proxy, then has every node read the same `size`-byte blob at the same
/// moment; checks each node read the right bytes and returns what the origin served.
pub fn fan_in(n: usize, size: usize, via: Via) -> FanIn {
    let nginx = Nginx::start();
    let blob = nginx.put_random("images/shared.sif", size);
    let squid = (via == Via::Squid).then(|| Squid::start_with(&squid_settings_for_test(), 1024));
    let asset = Asset::file("images/shared.sif", &nginx.url_of(&blob), &blob.sha256);
    let proxies = squid.as_ref().map(|s| vec![s.proxy_url()]);
    let nodes: Vec<Lazycas> = (0..n)
        .map(|_| {
            Lazycas::with_config(Config {
                proxies: proxies.clone(),
                timeout_secs: Some(30),
                assets: vec![asset.clone()],
                ..Config::default()
            })
        })
        .collect();
    let mut daemons: Vec<Daemon> = nodes.iter().map(Lazycas::mount).collect();
    let paths: Vec<_> = daemons
        .iter()
        .map(|d| d.path("images/shared.sif"))
        .collect();
    let expected = blob.sha256.clone();
    let elapsed = with_deadline(
        Duration::from_secs(300),
        "N nodes reading one blob",
        move || {
            let start = Arc::new(Barrier::new(paths.len() + 1));
            let readers: Vec<_> = paths
                .into_iter()
                .map(|p| {
                    let start = start.clone();
                    std::thread::spawn(move || {
                        start.wait();
                        sha256_file(&p)
                    })
                })
                .collect();
            start.wait();
            let began = Instant::now();
            for r in readers {
                let got = r.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                assert_eq!(got, expected, "a node read wrong bytes");
            }
            began.elapsed()
        },
    );
    let log = nginx.log();
    let proxied: Vec<_> = squid
        .as_ref()
        .map(|s| s.log())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.ends_with(&blob.uri()))
        .collect();
    for d in &mut daemons {
        d.stop();
    }
    FanIn {
        via,
        nodes: n,
        size: blob.len(),
        origin_bytes: log.bytes_served(&blob.uri()),
        origin_requests: log.count(&blob.uri()),
        proxy_requests: proxied.len(),
        proxy_ranged: proxied.iter().filter(|r| r.range.is_some()).count(),
        proxy_results: proxied.iter().map(|r| r.result.clone()).collect(),
        elapsed,
    }
}
