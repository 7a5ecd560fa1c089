#!/usr/bin/env bash
# bench/oci.sh: a container image run straight from the lazycas mount, against what users do
# today to get a root filesystem out of a registry (`skopeo copy` to an OCI layout, then
# `umoci unpack`). Same image, same loopback registry, same run. Prints one table on stdout
# (progress goes to stderr):
#
#   first line   seconds from nothing to `runc run` printing the container's first line:
#                lazycas: start the daemon on an empty store, `runc run` with the mounted
#                docker/<registry>/<repo>:<tag>/rootfs as its read-only root (the tag is
#                resolved, the layers fetched, verified, indexed and merged on first access);
#                baseline: `skopeo copy docker://… oci:…`, `umoci unpack`, `runc run` of the
#                unpacked rootfs. Both runc bundles use the same `runc spec` (read-only root).
#   disk used    `du` of the lazycas store after that run (blobs + SQLite indexes) vs the OCI
#                layout plus the unpacked bundle
#   tar          `tar -cf - . | wc -c` of the rootfs, MB/s: through the mount vs over the
#                unpacked directory (page cache dropped before each when root)
#
# The image: ~300 MiB in 5 gzip layers built with umoci: real files copied from this host
# (/usr/share/doc, python, locales, shared libraries) and random data, plus `cat` and the
# libraries it needs, which the container runs. It is built once and cached in
# BENCH_OCI_DIR (default /tmp/lazycas-bench-oci); a registry (Debian's docker-registry) is
# started on a free 127.0.0.1 port with a throwaway storage directory and the image pushed to
# it with skopeo.
#
# Each figure is the best of BENCH_RUNS runs (default 3). BENCH_CONFIG adds top-level TOML lines
# to lazycas's config. Needs root (runc, FUSE, drop_caches), docker-registry, skopeo, umoci,
# runc, fusermount3, python3, curl, ldd. Everything it starts (registry, lazycas daemon,
# containers) is stopped by PID (containers by their id) on exit, the mount point unmounted and
# the work dir removed.
set -euo pipefail
shopt -s inherit_errexit

repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
cache=${BENCH_OCI_DIR:-/tmp/lazycas-bench-oci}
runs=${BENCH_RUNS:-3}

source "$(dirname "$0")/lib.sh"

require_tools docker-registry skopeo umoci runc fusermount3 python3 curl ldd tar du
[ "$(id -u)" -eq 0 ] || die "runc needs root"

build_lazycas "$repo" "$target"

# --- the image (cached) -------------------------------------------------------------------------
layout=$cache/layout
tag=bench-v1
if [ ! -e "$cache/built-v1" ]; then
    rm -rf "$cache"
    mkdir -p "$cache"
    say "building the image in $layout"
    umoci init --layout "$layout" >&2
    umoci new --image "$layout:$tag" >&2
    umoci unpack --image "$layout:$tag" "$cache/bundle" >&2
    rootfs=$cache/bundle/rootfs
    # copy_files CAP_MIB DEST SOURCE...: real files of SOURCE trees (sorted, symlinks and
    # special files skipped) copied under ROOTFS at the same path until CAP_MIB is reached.
    copy_files() {
        python3 - "$rootfs" "$@" <<'EOF'
import os, shutil, sys
rootfs, cap = sys.argv[1], int(sys.argv[2]) << 20
done = 0
for src in sys.argv[3:]:
    for d, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(d, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            size = os.path.getsize(p)
            if done + size > cap:
                continue
            dest = os.path.join(rootfs, p.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:
                shutil.copy2(p, dest)
            except OSError:
                continue
            done += size
print(done >> 20, file=sys.stderr)
EOF
    }
    random_files() {
        local dir=$rootfs/$1 count=$2 i
        mkdir -p "$dir"
        for i in $(seq "$count"); do head -c $((4 << 20)) /dev/urandom >"$dir/blob-$i.bin"; done
    }
    # Layer 1: what the container runs (`cat` and its libraries at the paths ldd names), the
    # directories runc mounts over, documentation.
    cat_bin=$(readlink -f "$(command -v cat)")
    for f in "$cat_bin" $(ldd "$cat_bin" | grep -o '/[^ ]*'); do
        mkdir -p "$rootfs$(dirname "$f")"
        cp -L "$f" "$rootfs$f"
    done
    mkdir -p "$rootfs"/{proc,dev,sys,tmp,etc}
    echo "hello from the image" >"$rootfs/hello.txt"
    printf '%s\n' "$cat_bin" >"$cache/cat-bin"
    copy_files 40 /usr/share/doc
    umoci repack --refresh-bundle --image "$layout:$tag" "$cache/bundle" >&2
    # Layer 2: python modules (many small text files).
    copy_files 60 /usr/lib/python3 /usr/lib/python3.11 /usr/share/perl
    umoci repack --refresh-bundle --image "$layout:$tag" "$cache/bundle" >&2
    # Layer 3: random data (does not compress).
    random_files data/a 15
    umoci repack --refresh-bundle --image "$layout:$tag" "$cache/bundle" >&2
    # Layer 4: shared libraries and locales.
    copy_files 100 /usr/lib/x86_64-linux-gnu /usr/share/locale
    umoci repack --refresh-bundle --image "$layout:$tag" "$cache/bundle" >&2
    # Layer 5: more random data, and a changed file over layer 1's.
    random_files data/b 10
    echo "hello from the top layer" >"$rootfs/hello.txt"
    umoci repack --refresh-bundle --image "$layout:$tag" "$cache/bundle" >&2
    du -s -B1 --apparent-size "$rootfs" | cut -f1 >"$cache/rootfs-bytes"
    rm -rf "$cache/bundle"
    touch "$cache/built-v1"
fi
rootfs_bytes=$(cat "$cache/rootfs-bytes")
cat_bin=$(cat "$cache/cat-bin")
say "image: $((rootfs_bytes >> 20)) MiB of files in 5 layers"

# --- processes, mounts, clean-up ----------------------------------------------------------------
work=$(mktemp -d /tmp/lazycas-bench-oci-run.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt" "$work/registry/storage"
registry_pid=""
daemon_pid=""
containers=()

unmount_mnt() {
    if mounted "$mnt"; then
        fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
}

stop_daemon() {
    if [ -n "$daemon_pid" ]; then
        stop_pid "$daemon_pid"
        daemon_pid=""
    fi
    unmount_mnt
}

cleanup() {
    set +e
    for id in "${containers[@]}"; do runc delete --force "$id" >/dev/null 2>&1; done
    stop_daemon
    if [ -n "$registry_pid" ]; then stop_pid "$registry_pid"; fi
    mounted "$mnt" || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

init_drop_caches

# The smaller of the current value of VAR and VALUE.
keep_min() {
    local var=$1 value=$2
    printf -v "$var" '%s' "$(awk -v a="${!var}" -v b="$value" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }')"
}

# --- the registry -------------------------------------------------------------------------------
rport=$(free_port)
registry=127.0.0.1:$rport
cat >"$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry/storage
http:
  addr: $registry
  secret: lazycas-bench-secret
EOF
docker-registry serve "$work/registry/config.yml" >>"$work/registry/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$registry/v2/" || true)" = 200 ] && break
    alive "$registry_pid" || break
    sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$registry/v2/" || true)" = 200 ] ||
    die "docker-registry did not start: $(cat "$work/registry/registry.log")"
image=$registry/bench/app:v1
say "pushing the image to $image"
skopeo copy --insecure-policy --dest-tls-verify=false "oci:$layout:$tag" "docker://$image" >&2

# --- runc bundles -------------------------------------------------------------------------------
# bundle_for DIR ROOTFS: DIR/config.json from `runc spec`, running `cat /hello.txt` on ROOTFS.
bundle_for() {
    local dir=$1 root=$2
    mkdir -p "$dir"
    rm -f "$dir/config.json"
    (cd "$dir" && runc spec)
    python3 - "$dir/config.json" "$root" "$cat_bin" <<'EOF'
import json, sys
path, root, cat = sys.argv[1:]
c = json.load(open(path))
c["root"] = {"path": root, "readonly": True}
c["process"]["terminal"] = False
c["process"]["args"] = [cat, "/hello.txt"]
json.dump(c, open(path, "w"))
EOF
}
expected="hello from the top layer"

# first_line BUNDLE T0: runs the container, returns once it printed its first line (checked),
# sets m_first to the seconds since T0, then waits for the container and deletes it.
first_line() {
    local bundle=$1 t0=$2 id line pid
    id=lazycas-bench-$$-$RANDOM
    containers+=("$id")
    exec 3< <(runc run --bundle "$bundle" "$id" 2>>"$work/runc.log")
    pid=$!
    IFS= read -r line <&3 || true
    m_first=$(since "$t0")
    exec 3<&-
    wait "$pid" 2>/dev/null || true
    runc delete --force "$id" >/dev/null 2>&1 || true
    [ "$line" = "$expected" ] || {
        tail -n 20 "$work/runc.log" >&2
        [ -f "$work/daemon.log" ] && tail -n 40 "$work/daemon.log" >&2
        die "the container printed \"$line\", not \"$expected\""
    }
}

# tar_rate ROOT: MB/s of `tar -cf - . | wc -c` over ROOT, best of RUNS (caches dropped).
tar_rate() {
    local root=$1 best="" t0 secs bytes i
    for i in $(seq "$runs"); do
        drop_caches
        t0=$(now)
        bytes=$(tar -cf - -C "$root" . | wc -c)
        secs=$(since "$t0")
        keep_min best "$secs"
    done
    awk -v b="$bytes" -v s="$best" 'BEGIN { printf "%.0f\n", b / 1e6 / s }'
}

disk_bytes() { du -s -B1 "$@" | awk '{ n += $1 } END { print n }'; }

# --- lazycas ------------------------------------------------------------------------------------
cat >"$work/lazycas.toml" <<EOF
store = "$work/store"
${BENCH_CONFIG:-}

[registries."$registry"]
insecure = true
EOF
mounted_rootfs=$mnt/docker/$registry/bench/app:v1/rootfs
bundle_for "$work/lazycas-bundle" "$mounted_rootfs"

start_daemon() { start_lazycas "$bin" "$mnt" "$work/lazycas.toml" "$work/daemon.log"; }

l_first="" l_disk=""
for i in $(seq "$runs"); do
    stop_daemon
    rm -rf "$work/store"
    drop_caches
    t0=$(now)
    start_daemon
    first_line "$work/lazycas-bundle" "$t0"
    keep_min l_first "$m_first"
    l_disk=$(disk_bytes "$work/store")
    say "lazycas run $i: first line after $m_first s, store $((l_disk >> 20)) MiB"
done
l_tar=$(tar_rate "$mounted_rootfs")
say "lazycas: tar of the mounted rootfs $l_tar MB/s"
stop_daemon

# --- skopeo copy + umoci unpack -----------------------------------------------------------------
b_first="" b_disk=""
for i in $(seq "$runs"); do
    rm -rf "$work/pulled" "$work/bundle"
    drop_caches
    t0=$(now)
    skopeo copy --insecure-policy --src-tls-verify=false "docker://$image" "oci:$work/pulled:v1" >/dev/null
    umoci unpack --image "$work/pulled:v1" "$work/bundle" >/dev/null
    bundle_for "$work/bundle" "$work/bundle/rootfs"
    first_line "$work/bundle" "$t0"
    keep_min b_first "$m_first"
    b_disk=$(disk_bytes "$work/pulled" "$work/bundle")
    say "skopeo + umoci run $i: first line after $m_first s, layout + bundle $((b_disk >> 20)) MiB"
done
b_tar=$(tar_rate "$work/bundle/rootfs")
say "baseline: tar of the unpacked rootfs $b_tar MB/s"

# --- the table ----------------------------------------------------------------------------------
ratio() {
    awk -v a="$1" -v b="$2" -v dir="$3" -v goal="${4:-}" 'BEGIN {
        r = a / b
        better = (dir == "lower") ? (r < 1) : (r > 1)
        verdict = sprintf("%.2f", r) == "1.00" ? "same" : (better ? "better" : "worse")
        met = goal == "" ? "" : (r < goal + 0 ? ", target < " goal "x met" : ", target < " goal "x MISSED")
        printf "%.2fx (%s%s)\n", r, verdict, met
    }'
}
secs() { awk -v s="$1" 'BEGIN { printf "%.2f s\n", s }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB\n", b / 1048576 }'; }
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; }

say "image: $((rootfs_bytes >> 20)) MiB rootfs, 5 gzip layers; best of $runs runs; kernel $(uname -r), $(nproc) cores, page cache dropped: $dropping"
echo "| measure | lazycas | skopeo copy + umoci unpack | ratio |"
echo "|---|---:|---:|---:|"
row "nothing to \`runc run\` printing its first line" "$(secs "$l_first")" "$(secs "$b_first")" \
    "$(ratio "$l_first" "$b_first" lower 0.5)"
row "disk used (store vs OCI layout + unpacked bundle)" "$(mib "$l_disk")" "$(mib "$b_disk")" \
    "$(ratio "$l_disk" "$b_disk" lower 0.5)"
row "\`tar -cf - . \\| wc -c\` of the rootfs (mount vs unpacked dir)" "$l_tar MB/s" "$b_tar MB/s" \
    "$(ratio "$l_tar" "$b_tar" higher)"
