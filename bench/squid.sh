#!/usr/bin/env bash
# bench/squid.sh: what N nodes reading the same blob cost the origin through one site squid.
# Prints one table on stdout: for N = 1, 4, 8 lazycas nodes behind one squid (with the settings
# of systemd/squid-lazycas.conf) reading one 64 MiB blob at the same moment, and for N = 4 nodes
# going straight to the origin as the baseline: origin bytes (from nginx's access log), origin
# requests, origin bytes as a multiple of the blob, squid's result codes, wall time.
#
# It runs the ignored test `squid_fan_in_figures` of tests/service.rs, which starts everything
# (nginx, squid, the daemons) on 127.0.0.1 and stops it by PID. Needs root (FUSE), nginx, squid,
# fusermount3 (see .ci/run). Where the test cannot run it fails (LAZYCAS_TESTS_REQUIRE_FUSE=1)
# instead of printing SKIPPED and an empty table, and this script shows its output and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
export LAZYCAS_TESTS_REQUIRE_FUSE=1
out=$(cargo test --release --test service -- --ignored --exact squid_fan_in_figures --nocapture 2>&1) || {
    echo "$out" >&2
    exit 1
}
echo "$out" | grep '^|'
