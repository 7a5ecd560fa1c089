#!/usr/bin/env bash
# bench/lazy.sh: range-lazy images. A ~1 GiB squashfs image of real files (/usr/share, /usr/lib)
# plus random bytes, indexed with `lazycas index`, served by a loopback nginx and pinned in the
# catalog by sha256 and index_sha256. Prints one table on stdout (progress goes to stderr):
#
#   first small-file read   from a fresh store: squashfuse mounts the image from the lazycas
#                           mount and `cat`s one small file; bytes fetched and requests (nginx
#                           access log, image and index) and the time taken, vs a full `curl`
#                           download of the image, then squashfuse on the local copy + `cat`
#   full sequential read    `cat` of the image through the mount (fresh store), MB/s, vs
#                           `curl -o /dev/null` (the network limit; target >= 0.8x)
#   new version             the same tree with one directory of real files added (sorting
#                           first, so everything after it moves in the image), read in full
#                           after the first version: bytes fetched vs the true difference
#                           (how much the image grew)
#
# Each time and rate is the best of BENCH_RUNS runs (default 2); bytes and requests come from
# the last run. The page cache is dropped before every measure (when we may: root). Knobs:
# BENCH_REAL_MIB (real files, default 2450), BENCH_RANDOM_MIB (default 192), BENCH_ADDED_MIB
# (the new version's directory, default 16), BENCH_LAZY_DIR (where the images are built and
# kept between runs, default /tmp/lazycas-bench-lazy), BENCH_CONFIG (extra top-level TOML lines
# for lazycas). Needs root (FUSE, drop_caches), nginx, curl, squashfuse, mksquashfs (package
# squashfs-tools), fusermount3, python3. Everything it starts (nginx, the lazycas daemon,
# squashfuse) is stopped by PID on exit, mounts are unmounted and the work dir removed.
set -euo pipefail
shopt -s inherit_errexit

repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
cache=${BENCH_LAZY_DIR:-/tmp/lazycas-bench-lazy}
runs=${BENCH_RUNS:-2}
real_mib=${BENCH_REAL_MIB:-2450}
random_mib=${BENCH_RANDOM_MIB:-192}
added_mib=${BENCH_ADDED_MIB:-16}

source "$(dirname "$0")/lib.sh"

require_tools nginx curl fusermount3 python3 squashfuse mksquashfs sha256sum

build_lazycas "$repo" "$target"

# --- the images (cached) ----------------------------------------------------------------------
key="r${real_mib}-x${random_mib}-a${added_mib}"
v1=$cache/$key-v1.sqfs
v2=$cache/$key-v2.sqfs
small_rel_file=$cache/$key.small
if [ ! -s "$v2.lazycas-index" ] || [ ! -s "$v1.lazycas-index" ] || [ ! -s "$small_rel_file" ]; then
    mkdir -p "$cache"
    tree=$(mktemp -d "$cache/tree.XXXXXX")
    say "building the tree in $tree: $real_mib MiB of real files (hard links), $random_mib MiB random"
    python3 - "$tree" "$real_mib" "$random_mib" "$small_rel_file.tmp" <<'EOF'
import os, random, shutil, sys

tree, real, rnd, small_list = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3]) << 20, sys.argv[4]
copied, smalls = 0, []

def place(src, dest):
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)

for top in ("/usr/share", "/usr/lib"):
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            if copied >= real:
                break
            src = os.path.join(dirpath, name)
            if os.path.islink(src) or not os.path.isfile(src):
                continue
            try:
                size = os.path.getsize(src)
            except OSError:
                continue
            rel = os.path.join(top.strip("/").replace("/", "_"), os.path.relpath(src, top))
            dest = os.path.join(tree, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:
                place(src, dest)
            except OSError:
                continue
            copied += size
            if 2048 <= size < 16384:
                smalls.append(rel)
rng = random.Random(20261130)
with open(os.path.join(tree, "random.bin"), "wb") as f:
    for _ in range(rnd >> 20):
        f.write(rng.randbytes(1 << 20))
# One small file from the middle of the tree (not its first directory).
with open(small_list, "w") as f:
    f.write(smalls[len(smalls) // 2] + "\n")
print(f"{copied >> 20} MiB of real files, {len(smalls)} small ones", file=sys.stderr)
EOF
    say "mksquashfs (first version)"
    mksquashfs "$tree" "$v1.tmp" -noappend -no-progress -quiet -processors "$(nproc)" >&2
    say "adding one directory of $added_mib MiB for the second version"
    python3 - "$tree/aaa_added" "$added_mib" <<'EOF'
import os, shutil, sys
dest, budget, copied = sys.argv[1], int(sys.argv[2]) << 20, 0
for dirpath, dirnames, filenames in os.walk("/usr/include"):
    dirnames.sort()
    for name in sorted(filenames):
        src = os.path.join(dirpath, name)
        if copied >= budget or os.path.islink(src) or not os.path.isfile(src):
            continue
        out = os.path.join(dest, os.path.relpath(src, "/usr/include"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copyfile(src, out)
        copied += os.path.getsize(src)
print(f"added {copied >> 20} MiB", file=sys.stderr)
EOF
    say "mksquashfs (second version)"
    mksquashfs "$tree" "$v2.tmp" -noappend -no-progress -quiet -processors "$(nproc)" >&2
    rm -rf "$tree"
    for v in "$v1" "$v2"; do
        mv "$v.tmp" "$v"
        "$bin" index "$v" >"$v.pin"
    done
    mv "$small_rel_file.tmp" "$small_rel_file"
fi
small_rel=$(cat "$small_rel_file")
v1_bytes=$(stat -c %s "$v1")
v2_bytes=$(stat -c %s "$v2")
say "images: $v1 ($((v1_bytes >> 20)) MiB), $v2 ($((v2_bytes >> 20)) MiB); small file $small_rel"

# --- processes, mounts, clean-up ----------------------------------------------------------------
work=$(mktemp -d /tmp/lazycas-bench-lazy-run.XXXXXX)
mnt=$work/mnt
sq=$work/squash
mkdir -p "$mnt" "$sq" "$work/docroot"
nginx_pid=""
daemon_pid=""
squash_pid=""

unmount() { if mounted "$1"; then fusermount3 -u "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true; fi; }

stop_squash() {
    unmount "$sq"
    if [ -n "$squash_pid" ]; then
        stop_pid "$squash_pid"
        squash_pid=""
    fi
}

stop_daemon() {
    stop_squash
    if [ -n "$daemon_pid" ]; then
        stop_pid "$daemon_pid"
        daemon_pid=""
    fi
    unmount "$mnt"
}

cleanup() {
    set +e
    stop_daemon
    if [ -n "$nginx_pid" ]; then stop_pid "$nginx_pid"; fi
    mounted "$mnt" || mounted "$sq" || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dropping=no
if [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then dropping=yes; fi
drop_caches() { if [ "$dropping" = yes ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.6f\n", b - a }'; }
keep_min() { printf -v "$1" '%s' "$(awk -v a="${!1}" -v b="$2" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }')"; }

# --- origin -------------------------------------------------------------------------------------
for v in "$v1" "$v2"; do
    name=$(basename "$v")
    ln "$v" "$work/docroot/$name" 2>/dev/null || cp "$v" "$work/docroot/$name"
    cp "$v.lazycas-index" "$work/docroot/$name.lazycas-index"
done
access=$work/nginx/logs/access.log
start_nginx "$work/nginx" "$work/docroot" "$access"
url1=http://127.0.0.1:$port/$(basename "$v1")
url2=http://127.0.0.1:$port/$(basename "$v2")

# Body bytes and requests nginx served for URI prefix $1 since the log was last cleared.
served_bytes() { awk -v u="$1" 'index($7, u) == 1 { s += $10 } END { print s + 0 }' "$access"; }
served_requests() { awk -v u="$1" 'index($7, u) == 1 { n++ } END { print n + 0 }' "$access"; }
clear_log() { : >"$access"; }

# --- lazycas ------------------------------------------------------------------------------------
# asset NAME URL IMAGE: a catalog entry pinning IMAGE's sha256 and its index.
asset() {
    printf '\n[[asset]]\nname = "%s"\nurl = "%s"\nsha256 = "%s"\nindex_sha256 = "%s"\nkind = "file"\n' \
        "$1" "$2" "$(sha256sum "$3" | cut -d' ' -f1)" "$(cat "$3.pin")"
}
{
    printf 'store = "%s"\n%s\n' "$work/store" "${BENCH_CONFIG:-}"
    asset img "$url1" "$v1"
    asset img2 "$url2" "$v2"
} >"$work/lazycas.toml"

fresh_daemon() {
    stop_daemon
    rm -rf "$work/store"
    drop_caches
    start_lazycas "$bin" "$mnt" "$work/lazycas.toml" "$work/daemon.log"
}

# squashfuse IMAGE, wait for the mount, cat the small file.
squash_cat() {
    squashfuse -f "$1" "$sq" 2>>"$work/squashfuse.log" &
    squash_pid=$!
    for _ in $(seq 600); do
        mounted "$sq" && break
        alive "$squash_pid" || die "squashfuse exited: $(tail -n 5 "$work/squashfuse.log")"
        sleep 0.01
    done
    cat "$sq/$small_rel" >/dev/null
}

small_lazy="" small_curl="" seq_lazy="" seq_curl=""
for run in $(seq "$runs"); do
    say "run $run/$runs: first small-file read through lazycas"
    fresh_daemon
    clear_log
    t0=$(now)
    squash_cat "$mnt/img"
    keep_min small_lazy "$(since "$t0")"
    small_bytes=$(served_bytes "/$(basename "$v1")")
    small_requests=$(served_requests "/$(basename "$v1")")
    stop_squash

    say "run $run/$runs: first small-file read after a full curl download"
    rm -f "$work/local.sqfs"
    drop_caches
    t0=$(now)
    curl -sS --fail -o "$work/local.sqfs" "$url1"
    squash_cat "$work/local.sqfs"
    keep_min small_curl "$(since "$t0")"
    stop_squash
    rm -f "$work/local.sqfs"

    say "run $run/$runs: full sequential read"
    stop_daemon
    drop_caches
    t0=$(now)
    curl -sS --fail -o /dev/null "$url1"
    secs=$(since "$t0")
    keep_min seq_curl "$secs"
    say "  curl: $secs s"
    fresh_daemon
    clear_log
    t0=$(now)
    cat "$mnt/img" >/dev/null
    secs=$(since "$t0")
    keep_min seq_lazy "$secs"
    seq_requests=$(served_requests "/$(basename "$v1")")
    say "  lazycas: $secs s, $seq_requests requests"

    say "run $run/$runs: new version after the first"
    clear_log
    cat "$mnt/img2" >/dev/null
    new_bytes=$(served_bytes "/$(basename "$v2")")
    new_requests=$(served_requests "/$(basename "$v2")")

done
stop_daemon

# --- the table ----------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.3fx\n", a / b }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB\n", b / 1048576 }'; }
secs() { awk -v s="$1" 'BEGIN { printf "%.2f s\n", s }'; }
rate() { awk -v s="$1" -v b="$v1_bytes" 'BEGIN { printf "%.0f\n", b / 1e6 / s }'; }
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; }

growth=$((v2_bytes - v1_bytes))
say "image $((v1_bytes >> 20)) MiB (v2 $((v2_bytes >> 20)) MiB), best of $runs runs, kernel $(uname -r), $(nproc) cores, page cache dropped: $dropping"
echo "| measure | lazycas | baseline | ratio |"
echo "|---|---:|---:|---:|"
row "first small-file read: bytes fetched (vs full \`curl\` download)" \
    "$(mib "$small_bytes")" "$(mib "$v1_bytes")" "$(ratio "$small_bytes" "$v1_bytes")"
row "first small-file read: requests" "$small_requests" "1" "$(ratio "$small_requests" 1)"
row "first small-file read: time (squashfuse mount + \`cat\`; baseline: \`curl\` first)" \
    "$(secs "$small_lazy")" "$(secs "$small_curl")" "$(ratio "$small_lazy" "$small_curl")"
row "full sequential read, MB/s (vs \`curl -o /dev/null\`; $seq_requests requests)" \
    "$(rate "$seq_lazy")" "$(rate "$seq_curl")" "$(ratio "$seq_curl" "$seq_lazy")"
row "new version (one directory added): bytes fetched vs the growth of the image ($new_requests requests)" \
    "$(mib "$new_bytes")" "$(mib "$growth")" "$(ratio "$new_bytes" "$growth")"
