//! The files this repository ships for running lazycas as a service (`systemd/`), and the
//! shipped squid settings adapted to a squid the tests start.

use std::path::PathBuf;

/// `systemd/NAME` in this repository.
pub fn shipped_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

/// Directives of `squid-lazycas.conf` that describe a site's machine (where the cache lives, how
/// much memory, who may connect) rather than how lazycas's requests are cached; the test squid
/// (`common::Squid`) sets its own.
const SITE_DIRECTIVES: &[&str] = &[
    "cache_dir",
    "cache_mem",
    "http_port",
    "http_access",
    "acl",
    "cache_effective_user",
    "cache_effective_group",
    "pid_filename",
    "access_log",
    "cache_log",
    "coredump_dir",
];

/// The caching settings of `systemd/squid-lazycas.conf` (collapsed forwarding, object sizes,
/// range and abort handling, refresh patterns), without comments and site directives, ready to
/// append to a test squid's config.
pub fn squid_settings_for_test() -> String {
    let path = shipped_file("squid-lazycas.conf");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| {
            let word = l.split_whitespace().next().unwrap_or("");
            !SITE_DIRECTIVES.contains(&word)
        })
        .collect();
    assert!(
        kept.contains(&"collapsed_forwarding on"),
        "squid-lazycas.conf must turn collapsed_forwarding on: {kept:?}"
    );
    kept.join("\n")
}
