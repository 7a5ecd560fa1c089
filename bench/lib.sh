# bench/lib.sh: helpers the bench scripts share (sourced, not run). Everything they start is a
# child of the sourcing script, stopped by PID; nothing is ever killed by name.

say() { echo "bench: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Alive and not yet a zombie (our own unreaped children only, so the PID cannot be reused).
alive() {
    local state
    [ -r "/proc/$1/stat" ] || return 1
    read -r _ _ state _ <"/proc/$1/stat" || return 1
    [ "$state" != Z ]
}

# SIGTERM a child by PID, wait up to 10 s, then SIGKILL; reap it.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}

# require_tools TOOL...: dies naming the first tool that is not installed, or a missing /dev/fuse.
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || die "$tool not found (see .ci/run)"
    done
    [ -e /dev/fuse ] || die "/dev/fuse is missing"
}

# build_lazycas REPO TARGET: builds the release binary and sets bin to it.
build_lazycas() {
    say "building the release binary"
    cargo build --release --manifest-path "$1/Cargo.toml" >&2
    bin=$2/release/lazycas
    [ -x "$bin" ] || die "no binary at $bin"
}

now() { date +%s.%N; }

# Seconds since T0 (a `now` value).
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.6f\n", b - a }'; }

# Sets dropping=yes when we may drop the page cache (root) and drops it once; drop_caches then
# syncs and drops it, or does nothing.
init_drop_caches() {
    dropping=no
    if [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then dropping=yes; fi
}
drop_caches() { if [ "$dropping" = yes ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }

# start_lazycas BIN MNT CONFIG LOG: runs `BIN mount MNT --config CONFIG` in the background (in
# this shell, so daemon_pid is our child), stderr to LOG, and returns once MNT is mounted.
start_lazycas() {
    local bin=$1 mnt=$2 config=$3 log=$4
    "$bin" mount "$mnt" --config "$config" 2>>"$log" &
    daemon_pid=$!
    for _ in $(seq 3000); do
        mounted "$mnt" && return 0
        alive "$daemon_pid" || break
        sleep 0.01
    done
    tail -n 50 "$log" >&2
    die "lazycas did not mount $mnt"
}

mounted() { awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_nginx DIR DOCROOT [ACCESS_LOG]: a loopback nginx serving DOCROOT, its config, logs and
# temp files under DIR, access log to ACCESS_LOG (default off). Runs in this shell (not a
# subshell) so it can set nginx_pid (our child) and port, and returns once nginx answers.
start_nginx() {
    local dir=$1 docroot=$2 access=${3:-off} token="bench-$$-$RANDOM" nginx_bin
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    mkdir -p "$dir/logs" "$dir/tmp"
    port=$(free_port)
    cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log $access;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$port;
        root $docroot;
        location = /__bench { return 200 "$token"; }
    }
}
CONF
    "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        2>>"$dir/logs/stderr.log" &
    nginx_pid=$!
    for _ in $(seq 100); do
        [ "$(curl -s "http://127.0.0.1:$port/__bench" || true)" = "$token" ] && return 0
        alive "$nginx_pid" || break
        sleep 0.1
    done
    die "nginx did not start: $(cat "$dir/logs/error.log" "$dir/logs/stderr.log")"
}
