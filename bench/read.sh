#!/usr/bin/env bash
# bench/read.sh: read throughput of lazycas on a large random blob served by a loopback nginx,
# against what users do today. Prints one table on stdout (progress goes to stderr):
#
#   cold  first read through a fresh mount (`cat mnt/blob > /dev/null`: fetch + verify + serve)
#         vs `curl -o FILE && sha256sum FILE`   (download, then verify: what users do today)
#         vs `curl -o /dev/null`                (the network limit)
#         vs `openssl dgst -sha256` of the blob in the page cache (one core hashing: no verified
#            read of a whole blob can be faster, since its last byte waits for the whole hash)
#   warm  read through the mount vs `cat` of the stored blob file in store/blobs/sha256/...,
#         with the page cache dropped before each read, and with it kept
#
# Each figure is the best of BENCH_RUNS runs. Needs root (FUSE, drop_caches), nginx, curl,
# fusermount3. Knobs: BENCH_SIZE_MIB (default 1024), BENCH_RUNS (default 2), BENCH_DIR (where the
# blob, downloads and store go; default target/), BENCH_CONFIG (extra top-level TOML lines for
# lazycas, e.g. 'fetch_parallel = 8'), BENCH_PERF (a file: one extra cold read first, under
# `perf record -g` of the daemon, written there).
# Everything it starts (nginx, the lazycas daemon) is stopped by PID on exit, and the mount and
# the work dir are removed.
set -euo pipefail
shopt -s inherit_errexit

repo=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${BENCH_SIZE_MIB:-1024}
runs=${BENCH_RUNS:-2}
target=${CARGO_TARGET_DIR:-$repo/target}
bench_dir=${BENCH_DIR:-$target}

source "$(dirname "$0")/lib.sh"

require_tools nginx curl fusermount3 sha256sum python3 openssl

build_lazycas "$repo" "$target"

mkdir -p "$bench_dir"
work=$(mktemp -d "$bench_dir/bench-read.XXXXXX")
mnt=$work/mnt
nginx_pid=""
daemon_pid=""


stop_daemon() {
    if [ -n "$daemon_pid" ]; then
        stop_pid "$daemon_pid"
        daemon_pid=""
    fi
    if mounted "$mnt"; then
        fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
}

cleanup() {
    set +e
    stop_daemon
    if [ -n "$nginx_pid" ]; then stop_pid "$nginx_pid"; fi
    mounted "$mnt" || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# Seconds taken by a command (its output goes where the command sends it).
timed() {
    local t0 t1
    t0=$(now)
    "$@"
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
}

mbps() { awk -v bytes="$bytes" -v s="$1" 'BEGIN { printf "%.0f\n", bytes / 1e6 / s }'; }

# The better of two MB/s figures.
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b + 0 > a + 0) ? b : a }'; }

# measure VAR COMMAND...: times COMMAND and keeps the best MB/s in VAR. A failing command stops
# the script.
measure() {
    local var=$1 secs
    shift
    secs=$(timed "$@")
    printf -v "$var" '%s' "$(best "${!var}" "$(mbps "$secs")")"
}

can_drop_caches() { [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

read_file() { cat "$1" >/dev/null; }
curl_and_verify() { curl -sS --fail -o "$work/download" "$url" && sha256sum "$work/download" >/dev/null; }
curl_discard() { curl -sS --fail -o /dev/null "$url"; }
hash_only() { openssl dgst -sha256 "$work/docroot/blob" >/dev/null; }

# --- origin ------------------------------------------------------------------------------------
mkdir -p "$work/docroot" "$work/nginx/logs" "$work/nginx/tmp" "$mnt"
say "writing a ${size_mib} MiB random blob"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/docroot/blob"
bytes=$((size_mib * 1024 * 1024))
sha=$(sha256sum "$work/docroot/blob" | cut -d' ' -f1)

start_nginx "$work/nginx" "$work/docroot" "$work/nginx/logs/access.log"
url=http://127.0.0.1:$port/blob

# --- lazycas -----------------------------------------------------------------------------------
cat >"$work/lazycas.toml" <<EOF
store = "$work/store"
${BENCH_CONFIG:-}

[[asset]]
name = "blob"
url = "$url"
sha256 = "$sha"
kind = "file"
EOF

start_daemon() { start_lazycas "$bin" "$mnt" "$work/lazycas.toml" "$work/daemon.log"; }

fresh_mount() {
    stop_daemon
    rm -rf "$work/store"
    start_daemon
}

stored=$work/store/blobs/sha256/${sha:0:2}/$sha

cold="" curl_file="" curl_null="" sha_alone=""
for run in $(seq "$runs"); do
    say "cold run $run/$runs"
    fresh_mount
    sync
    if [ -n "${BENCH_PERF:-}" ] && [ "$run" -eq 1 ]; then
        # One more cold read, under `perf record -g` of the daemon (not measured).
        perf record -q -g -F 4999 -p "$daemon_pid" -o "$BENCH_PERF" 2>/dev/null &
        perf_pid=$!
        sleep 0.5
        read_file "$mnt/blob"
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        say "profile of a cold read: $BENCH_PERF"
        fresh_mount
        sync
    fi
    measure cold read_file "$mnt/blob"
    [ -f "$stored" ] || die "no verified blob at $stored after the cold read"
    rm -f "$work/download"
    sync
    measure curl_file curl_and_verify
    rm -f "$work/download"
    sync
    measure curl_null curl_discard
    read_file "$work/docroot/blob"
    measure sha_alone hash_only
done
[ "$(sha256sum "$stored" | cut -d' ' -f1)" = "$sha" ] || die "the stored blob does not hash to $sha"

warm_dropped="" plain_dropped="" warm_kept="" plain_kept=""
dropping=no
if can_drop_caches; then dropping=yes; fi
for run in $(seq "$runs"); do
    say "warm run $run/$runs"
    if [ "$dropping" = yes ]; then
        drop_caches
        measure warm_dropped read_file "$mnt/blob"
        drop_caches
        measure plain_dropped read_file "$stored"
    fi
    read_file "$mnt/blob"
    measure warm_kept read_file "$mnt/blob"
    read_file "$stored"
    measure plain_kept read_file "$stored"
done
stop_daemon

ratio() {
    if [ -z "$1" ] || [ -z "$2" ]; then echo "n/a"; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx\n", a / b }'
}
row() { printf '| %s | %s | %s | %s |\n' "$1" "${2:-n/a}" "${3:-n/a}" "$(ratio "$2" "$3")"; }

say "$size_mib MiB blob, best of $runs runs, kernel $(uname -r), $(nproc) cores"
echo "| measure | lazycas MB/s | baseline MB/s | ratio |"
echo "|---|---:|---:|---:|"
row 'cold read vs `curl -o FILE && sha256sum FILE`' "$cold" "$curl_file"
row 'cold read vs `curl -o /dev/null` (network limit)' "$cold" "$curl_null"
row 'cold read vs `openssl dgst -sha256` of the blob in the page cache (hash limit)' "$cold" "$sha_alone"
row 'warm read vs `cat` of the stored blob, page cache dropped' "$warm_dropped" "$plain_dropped"
row 'warm read vs `cat` of the stored blob, page cache kept' "$warm_kept" "$plain_kept"
