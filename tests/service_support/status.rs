//! `lazycas status --json` as a test reads it.

use crate::common::Lazycas;

/// The parsed output of `lazycas status --json` for `node`.
#[track_caller]
pub fn status_json(node: &Lazycas) -> serde_json::Value {
    let out = node.cli(&["status", "--json"]);
    out.assert_success();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", out.stdout))
}

/// `used_bytes` from `lazycas status --json`.
#[track_caller]
pub fn used_bytes(node: &Lazycas) -> u64 {
    let s = status_json(node);
    s["used_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("status --json has no used_bytes: {s}"))
}
