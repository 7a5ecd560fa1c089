#!/usr/bin/env bash
# bench/archive.sh: a large tar.gz mounted by lazycas, ratarmount and archivemount, same archive,
# same run. Prints one table on stdout (progress goes to stderr):
#
#   first mount        time until `ls` of the archive root answers, from a fresh start: lazycas
#                      downloads it from a loopback nginx, verifies and indexes it in one pass;
#                      ratarmount builds its index; archivemount reads the archive
#   remount            the same with the index kept (lazycas: store + SQLite; ratarmount: its
#                      .index.sqlite; archivemount has none and reads the archive again)
#   first small read   `cat` of one small file right after a remount (three files in three places
#                      of the archive, each after its own remount; the best of the three)
#   200 MiB read       `cat` of a 200 MiB member, MB/s
#   200 MiB warm read  the same member again once it was read whole (lazycas keeps it decoded in
#                      its store and serves it by passthrough), page cache not dropped; the
#                      baseline is `cat` of a plain 200 MiB file in the page cache (ratio vs cat)
#   find               `find -type f | wc -l` over the mount
#   tar of the mount   `tar -cf - . | wc -c`
#   random reads       p50 / p99 latency of 1,000 reads of random small files (whole file each),
#                      once on the mount the measures above ran on (after the full tar: the
#                      tool's own caches are warm, the page cache is dropped) and once on a fresh
#                      mount (store or index made anew, then remounted: nothing decoded yet)
#   index size         lazycas: pages of its archive_* tables and indexes (SQLite dbstat);
#                      ratarmount: its .index.sqlite; archivemount: none (kept in memory)
#   peak RSS           VmHWM of the mount process, the largest over its runs
#
# Each figure is the best of BENCH_RUNS runs (default 3; archivemount: 1); the random-read
# percentiles come from one run of BENCH_READS reads (default 1000). The page cache is dropped
# before every measure (when we may: root), so reads hit the archive, not the kernel's cache.
#
# The archive: 20,000 small files (0-40 KiB of text), 50 medium files (~4 MiB, half random, half
# text) and 2 x 200 MiB members (same mix): ~1 GiB of tar, gzipped with pigz (ratio about 0.5).
# It is built once and cached in BENCH_ARCHIVE_DIR (default /tmp/lazycas-bench-archive).
#
# archivemount has no seek index: a read decompresses from the start of the archive. Its slow
# measures stop after BENCH_SLOW_BUDGET seconds (default 300) and show `>N s`, or the number of
# reads that fitted; the whole run takes about 15 minutes, most of it archivemount's.
# BENCH_ARCHIVEMOUNT=0 leaves it out (its column then says "skipped"). BENCH_CONFIG adds
# top-level TOML lines to lazycas's config (e.g. 'archive_cache = "512M"').
#
# Needs root (FUSE, drop_caches), nginx, curl, python3, pigz, tar, fusermount3, archivemount
# (Debian package), ratarmount (`pip install ratarmount`: installed into a venv in BENCH_VENV,
# default /tmp/lazycas-bench-venv, when not on PATH or in $RATARMOUNT). Everything it starts
# (nginx, the lazycas daemon, ratarmount, archivemount) is stopped by PID on exit, the mount
# point unmounted and the work dir removed.
set -euo pipefail
shopt -s inherit_errexit

repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
cache=${BENCH_ARCHIVE_DIR:-/tmp/lazycas-bench-archive}
venv=${BENCH_VENV:-/tmp/lazycas-bench-venv}
budget=${BENCH_SLOW_BUDGET:-300}
reads=${BENCH_READS:-1000}
runs=${BENCH_RUNS:-3}

source "$(dirname "$0")/lib.sh"

# Every measure starts on a quiet machine: lazycas commits decoded copies (hash, fsync) on
# threads of its own after the reads that made them, so before dropping the page cache this
# waits (up to 60 s) until its store's tmp/ holds no copy being written. The other tools have
# nothing to wait for.
drop_caches() {
    local _
    for _ in $(seq 600); do
        [ -n "$(ls -A "${work:-/nonexistent}/store/tmp" 2>/dev/null)" ] || break
        sleep 0.1
    done
    if [ "$dropping" = yes ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
}

require_tools nginx curl fusermount3 python3 pigz tar archivemount

ratarmount_bin=${RATARMOUNT:-$(command -v ratarmount || true)}
if [ -z "$ratarmount_bin" ]; then
    ratarmount_bin=$venv/bin/ratarmount
    if [ ! -x "$ratarmount_bin" ]; then
        say "installing ratarmount into $venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q ratarmount >&2
    fi
fi
[ -x "$ratarmount_bin" ] || die "no ratarmount at $ratarmount_bin"

build_lazycas "$repo" "$target"

# --- the archive (cached) ---------------------------------------------------------------------
archive=$cache/bench-v1.tar.gz
small_list=$cache/bench-v1.small
big_member=big/member-1.bin
if [ ! -s "$archive" ] || [ ! -s "$small_list" ]; then
    mkdir -p "$cache"
    src=$(mktemp -d "$cache/src.XXXXXX")
    say "generating the source tree in $src"
    python3 - "$src" "$small_list.tmp" <<'EOF'
import os, random, sys

root, small_list = sys.argv[1], sys.argv[2]
rng = random.Random(20240501)
words = ("archive member index checkpoint window inflate verify digest tar gzip the of a to "
         "fn let mut struct impl return offset size mode uid gid mtime link node hpc container "
         "image layer blob data model train epoch loss batch config yaml json key value 0 1 2 "
         "42 1024 2024 true false null error warning info debug trace").split()
# A 16 MiB text corpus; files take slices of it at random offsets (far beyond deflate's 32 KiB
# window, so the repetition does not help gzip).
corpus = " ".join(rng.choice(words) + ("\n" if rng.random() < 0.1 else "")
                  for _ in range(3_000_000)).encode()[: 16 << 20]

def text(n):
    off = rng.randrange(len(corpus) - n)
    return corpus[off:off + n]

def mixed(n):
    out, k = bytearray(), 0
    while len(out) < n:
        m = min(64 << 10, n - len(out))
        out += rng.randbytes(m) if k % 2 == 0 else text(m)
        k += 1
    return bytes(out)

def write(rel, data):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)

smalls = []
for i in range(20_000):
    rel = f"small/d{i // 200:03d}/f{i:05d}.txt"
    write(rel, text(rng.randrange(0, 40 << 10)))
    smalls.append(rel)
for i in range(50):
    write(f"medium/m{i:02d}.bin", mixed((4 << 20) + rng.randrange(-(256 << 10), 256 << 10)))
for i in (1, 2):
    p = os.path.join(root, f"big/member-{i}.bin")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        for _ in range(25):
            f.write(mixed(8 << 20))
with open(small_list, "w") as f:
    f.write("\n".join(smalls) + "\n")
EOF
    say "tar + pigz"
    tar --format=gnu --sort=name -cf - -C "$src" . | pigz -p "$(nproc)" -6 >"$archive.tmp"
    mv "$small_list.tmp" "$small_list"
    mv "$archive.tmp" "$archive"
    rm -rf "$src"
fi
archive_bytes=$(stat -c %s "$archive")
say "archive: $archive ($((archive_bytes >> 20)) MiB)"

# --- processes, mounts, clean-up ----------------------------------------------------------------
work=$(mktemp -d /tmp/lazycas-bench-archive-run.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt" "$work/docroot" "$work/nginx/logs" "$work/nginx/tmp"
nginx_pid=""
fs_pid=""


unmount_mnt() {
    if mounted "$mnt"; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
}

# Stops the mount process: unmount first (ratarmount and archivemount exit on it), then the PID.
stop_fs() {
    if [ -n "$fs_pid" ]; then
        unmount_mnt
        for _ in $(seq 50); do alive "$fs_pid" || break; sleep 0.1; done
        stop_pid "$fs_pid"
        fs_pid=""
    fi
    unmount_mnt
}

cleanup() {
    set +e
    stop_fs
    if [ -n "$nginx_pid" ]; then stop_pid "$nginx_pid"; fi
    mounted "$mnt" || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

init_drop_caches

# Peak RSS (VmHWM) of the mount process in KiB.
peak_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$fs_pid/status" 2>/dev/null || echo 0; }

# Starts the mount process in the background (command in "$@"; not in a subshell, so fs_pid
# is our child) and waits until `ls ROOT` answers; sets m_mount to the seconds taken.
start_fs() {
    local root=$1 t0
    shift
    t0=$(now)
    "$@" >>"$work/fs.log" 2>&1 &
    fs_pid=$!
    for _ in $(seq 36000); do
        if mounted "$mnt" && ls "$root" >/dev/null 2>&1; then
            m_mount=$(since "$t0")
            return 0
        fi
        alive "$fs_pid" || break
        sleep 0.05
    done
    tail -n 40 "$work/fs.log" >&2
    die "$* did not mount (see above)"
}

# The random-read helper: whole-file reads of N random small files (seeded), each timed.
cat >"$work/reads.py" <<'EOF'
import os, random, sys, time
root, listing, n, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
files = [l.strip() for l in open(listing) if l.strip()]
rng = random.Random(7)
picks = [rng.choice(files) for _ in range(n)]
lat, start = [], time.monotonic()
for rel in picks:
    t = time.perf_counter()
    with open(os.path.join(root, rel), "rb") as f:
        while f.read(1 << 20):
            pass
    lat.append(time.perf_counter() - t)
    if time.monotonic() - start > budget:
        break
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(f"{q(0.50):.2f} {q(0.99):.2f} {len(lat)}")
EOF

# Keeps the smaller (better) of the current value of VAR and VALUE; `>N` values lose to numbers.
keep_min() {
    local var=$1 value=$2
    printf -v "$var" '%s' "$(awk -v a="${!var}" -v b="$value" 'BEGIN {
        if (a == "" || a ~ /^>/) { print b; exit }
        if (b ~ /^>/) { print a; exit }
        print (b + 0 < a + 0) ? b : a }')"
}

# best_read FILE RUNS: MB/s of the fastest of RUNS `cat FILE` (200 MiB), nothing dropped.
best_read() {
    local file=$1 runs=$2 i t0 best=""
    for i in $(seq "$runs"); do
        t0=$(now)
        cat "$file" >/dev/null
        keep_min best "$(since "$t0")"
    done
    awk -v s="$best" 'BEGIN { printf "%.0f\n", 200 * 1048576 / 1e6 / s }'
}

# Runs every read measure but the first small read against ROOT, best of RUNS; sets m_big m_find m_tar (seconds,
# or `>budget`), m_p50 m_p99 (ms) and m_nreads.
read_measures() {
    local root=$1 runs=$2 t0 out status count i big_secs
    m_find="" m_tar="" big_secs=""
    for i in $(seq "$runs"); do
        drop_caches
        t0=$(now)
        if timeout "$budget" cat "$root/$big_member" >/dev/null; then
            keep_min big_secs "$(since "$t0")"
        else
            keep_min big_secs ">$budget"
        fi

        drop_caches
        t0=$(now)
        count=$(cd "$root" && timeout "$budget" find . -type f | wc -l)
        if [ "$count" -eq 20052 ]; then keep_min m_find "$(since "$t0")"; else keep_min m_find ">$budget"; fi

        drop_caches
        t0=$(now)
        set +e
        out=$(timeout "$budget" tar -cf - -C "$root" . | wc -c)
        status=${PIPESTATUS[0]}
        set -e
        if [ "$status" -eq 124 ]; then keep_min m_tar ">$budget"; else keep_min m_tar "$(since "$t0")"; fi
        say "  run $i: 200 MiB $big_secs s, find ($count files) $m_find s, tar ($out bytes) $m_tar s"
    done
    case $big_secs in
        ">"*) m_big="<$(awk -v s="$budget" 'BEGIN { printf "%.1f\n", 200 * 1048576 / 1e6 / s }')" ;;
        *) m_big=$(awk -v s="$big_secs" 'BEGIN { printf "%.0f\n", 200 * 1048576 / 1e6 / s }') ;;
    esac

    # Warm: two untimed reads (the first may still be decoding; lazycas commits its decoded copy
    # in the background), then the best of RUNS, nothing dropped.
    m_warm=""
    if timeout "$budget" cat "$root/$big_member" >/dev/null; then
        sleep 3
        timeout "$budget" cat "$root/$big_member" >/dev/null
        m_warm=$(best_read "$root/$big_member" "$runs")
    else
        m_warm="<$(awk -v s="$budget" 'BEGIN { printf "%.1f\n", 200 * 1048576 / 1e6 / s }')"
    fi
    say "  warm 200 MiB read: $m_warm MB/s"

    drop_caches
    read -r m_p50 m_p99 m_nreads < <(python3 "$work/reads.py" "$root" "$small_list" "$reads" "$budget")
    say "  random reads: p50 $m_p50 ms, p99 $m_p99 ms over $m_nreads reads"
}

# bench_tool RUNS ROOT MOUNT_FN RESET_FN: first mount (after RESET_FN) and remount, best of RUNS
# each, then the read measures on the last remount; sets t_first t_re t_peak (KiB) and m_*.
bench_tool() {
    local runs=$1 root=$2 mount_fn=$3 reset_fn=$4 i
    t_first="" t_re="" t_peak=0
    for i in $(seq "$runs"); do
        "$reset_fn"
        drop_caches
        "$mount_fn"
        keep_min t_first "$m_mount"
        t_peak=$(awk -v a="$t_peak" -v b="$(peak_kib)" 'BEGIN { print (a > b ? a : b) }')
        stop_fs
        say "  first mount $i: $m_mount s"
    done
    for i in $(seq "$runs"); do
        drop_caches
        "$mount_fn"
        keep_min t_re "$m_mount"
        say "  remount $i: $m_mount s"
        [ "$i" -eq "$runs" ] || stop_fs
    done
    # The first small read: one file each in three places of the archive, each right after a
    # remount (a new process: nothing of the earlier reads in its memory) with the page cache
    # dropped; nothing else was read from this store or index before.
    local firsts=(small/d000/f00000.txt small/d050/f10000.txt small/d099/f19999.txt) f t0 took
    m_small=""
    for f in "${firsts[@]}"; do
        stop_fs
        drop_caches
        "$mount_fn"
        drop_caches
        t0=$(now)
        cat "$root/$f" >/dev/null
        took=$(since "$t0")
        keep_min m_small "$took"
        say "  first read of $f: $took s"
    done
    read_measures "$root" "$runs"
    t_peak=$(awk -v a="$t_peak" -v b="$(peak_kib)" 'BEGIN { print (a > b ? a : b) }')
    stop_fs
    # The same random reads on a fresh mount: nothing decoded yet, no cache of the tool's warm.
    # The store (lazycas keeps decoded regions in it across mounts) or the index is made anew
    # first, then mounted again, so only the index is there.
    "$reset_fn"
    "$mount_fn"
    stop_fs
    drop_caches
    "$mount_fn"
    drop_caches
    read -r m_p50f m_p99f m_nreadsf < <(python3 "$work/reads.py" "$root" "$small_list" "$reads" "$budget")
    say "  random reads on a fresh mount: p50 $m_p50f ms, p99 $m_p99f ms over $m_nreadsf reads"
    t_peak=$(awk -v a="$t_peak" -v b="$(peak_kib)" 'BEGIN { print (a > b ? a : b) }')
    stop_fs
}

# --- origin -------------------------------------------------------------------------------------
ln "$archive" "$work/docroot/bench.tar.gz" 2>/dev/null || cp "$archive" "$work/docroot/bench.tar.gz"
sha=$(sha256sum "$archive" | cut -d' ' -f1)
start_nginx "$work/nginx" "$work/docroot"

# --- lazycas ------------------------------------------------------------------------------------
cat >"$work/lazycas.toml" <<EOF
store = "$work/store"
${BENCH_CONFIG:-}

[[asset]]
name = "bench/archive"
url = "http://127.0.0.1:$port/bench.tar.gz"
sha256 = "$sha"
EOF
lazycas_mount() { start_fs "$mnt/bench/archive" "$bin" mount "$mnt" --config "$work/lazycas.toml"; }
lazycas_reset() { rm -rf "$work/store"; }
say "lazycas: first mount (download + verify + index), remount, reads"
bench_tool "$runs" "$mnt/bench/archive" lazycas_mount lazycas_reset
l_first=$t_first l_re=$t_re l_peak=$t_peak
l_small=$m_small l_big=$m_big l_warm=$m_warm l_find=$m_find l_tar=$m_tar l_p50=$m_p50 l_p99=$m_p99
l_p50f=$m_p50f l_p99f=$m_p99f
# The baseline of the warm row: the same 200 MiB as a plain file, read from the page cache.
lazycas_mount
cat "$mnt/bench/archive/$big_member" >"$work/plain.bin"
stop_fs
cat "$work/plain.bin" >/dev/null
c_warm=$(best_read "$work/plain.bin" "$runs")
rm -f "$work/plain.bin"
say "  cat of a plain 200 MiB file in the page cache: $c_warm MB/s"
l_index=$(python3 - "$work/store/lazycas.db" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(c.execute("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat "
                "WHERE name LIKE 'archive\\_%' ESCAPE '\\' "
                "OR name LIKE 'sqlite\\_autoindex\\_archive\\_%' ESCAPE '\\'").fetchone()[0])
EOF
)
rm -rf "$work/store"

# --- ratarmount ---------------------------------------------------------------------------------
index=$work/ratarmount.index.sqlite
ratar_mount() { start_fs "$mnt" "$ratarmount_bin" -f --index-file "$index" "$archive" "$mnt"; }
ratar_reset() { rm -f "$index"; }
say "$("$ratarmount_bin" --version 2>/dev/null | head -n 1): first mount (index build), remount, reads"
bench_tool "$runs" "$mnt" ratar_mount ratar_reset
r_first=$t_first r_re=$t_re r_peak=$t_peak
r_small=$m_small r_big=$m_big r_warm=$m_warm r_find=$m_find r_tar=$m_tar r_p50=$m_p50 r_p99=$m_p99
r_p50f=$m_p50f r_p99f=$m_p99f
r_index=$(stat -c %s "$index")

# --- archivemount -------------------------------------------------------------------------------
am_mount() { start_fs "$mnt" archivemount -f -o readonly "$archive" "$mnt"; }
a_first=skipped a_re=skipped a_small=skipped a_big=skipped a_warm=skipped a_find=skipped a_tar=skipped
a_p50=skipped a_p99=skipped a_nreads=$reads a_peak=skipped
a_p50f=skipped a_p99f=skipped a_nreadsf=$reads
if [ "${BENCH_ARCHIVEMOUNT:-1}" != 0 ]; then
    # One run: it is orders of magnitude slower, and its slow measures hit the budget anyway.
    say "$(archivemount --version 2>&1 | head -n 1): first mount, remount (no index kept), reads"
    bench_tool 1 "$mnt" am_mount true
    a_first=$t_first a_re=$t_re a_peak=$t_peak
    a_small=$m_small a_big=$m_big a_warm=$m_warm a_find=$m_find a_tar=$m_tar a_p50=$m_p50 a_p99=$m_p99
    a_nreads=$m_nreads a_p50f=$m_p50f a_p99f=$m_p99f a_nreadsf=$m_nreadsf
fi

# --- the table ----------------------------------------------------------------------------------
# ratio LAZYCAS RATARMOUNT lower|higher: lazycas / ratarmount, and whether that is better.
ratio() {
    awk -v a="$1" -v b="$2" -v dir="$3" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) { print "n/a"; exit }
        r = a / b
        better = (dir == "lower") ? (r < 1) : (r > 1)
        verdict = sprintf("%.2f", r) == "1.00" ? "same" : (better ? "better" : "worse")
        printf "%.2fx (%s)\n", r, verdict
    }'
}
secs() { case $1 in ">"*) echo "$1 s" ;; skipped) echo "$1" ;; *) awk -v s="$1" 'BEGIN { printf "%.2f s\n", s }' ;; esac; }
ms() { case $1 in ">"*) echo "$1" ;; skipped) echo "$1" ;; *) awk -v s="$1" 'BEGIN { printf "%.1f ms\n", s * 1000 }' ;; esac; }
mib() { case $1 in skipped) echo "$1" ;; *) awk -v b="$1" 'BEGIN { printf "%.1f MiB\n", b / 1048576 }' ;; esac; }
unit() { case $1 in skipped) echo "$1" ;; *) echo "$1 $2" ;; esac; }
row() { printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$5"; }

reads_note=""
if [ "$a_nreads" -lt "$reads" ]; then reads_note=" (archivemount: $a_nreads reads in ${budget} s)"; fi
fresh_note=""
if [ "$a_nreadsf" -lt "$reads" ]; then fresh_note=" (archivemount: $a_nreadsf reads in ${budget} s)"; fi
say "archive: $((archive_bytes >> 20)) MiB tar.gz, 20,052 files; kernel $(uname -r), $(nproc) cores, page cache dropped: $dropping"
echo "| measure | lazycas | ratarmount | archivemount | ratio vs ratarmount |"
echo "|---|---:|---:|---:|---:|"
row "first mount (until \`ls\` answers; lazycas: download + verify + index)" \
    "$(secs "$l_first")" "$(secs "$r_first")" "$(secs "$a_first")" "$(ratio "$l_first" "$r_first" lower)"
row "remount with the index (archivemount: none kept)" \
    "$(secs "$l_re")" "$(secs "$r_re")" "$(secs "$a_re")" "$(ratio "$l_re" "$r_re" lower)"
row "first small-file read" "$(ms "$l_small")" "$(ms "$r_small")" "$(ms "$a_small")" "$(ratio "$l_small" "$r_small" lower)"
row "200 MiB member read" "$l_big MB/s" "$r_big MB/s" "$(unit "$a_big" MB/s)" "$(ratio "$l_big" "$r_big" higher)"
row "200 MiB member read, warm (ratio: lazycas vs \`cat\` of a plain file in the page cache, $c_warm MB/s)" \
    "$l_warm MB/s" "$r_warm MB/s" "$(unit "$a_warm" MB/s)" "$(ratio "$l_warm" "$c_warm" higher | sed 's/^/vs cat /')"
row "\`find -type f | wc -l\`" "$(secs "$l_find")" "$(secs "$r_find")" "$(secs "$a_find")" "$(ratio "$l_find" "$r_find" lower)"
row "\`tar -cf - . | wc -c\` of the mount" "$(secs "$l_tar")" "$(secs "$r_tar")" "$(secs "$a_tar")" "$(ratio "$l_tar" "$r_tar" lower)"
row "random small-file read p50, after the tar$reads_note" "$l_p50 ms" "$r_p50 ms" "$(unit "$a_p50" ms)" "$(ratio "$l_p50" "$r_p50" lower)"
row "random small-file read p99, after the tar" "$l_p99 ms" "$r_p99 ms" "$(unit "$a_p99" ms)" "$(ratio "$l_p99" "$r_p99" lower)"
row "random small-file read p50, fresh mount$fresh_note" "$l_p50f ms" "$r_p50f ms" "$(unit "$a_p50f" ms)" "$(ratio "$l_p50f" "$r_p50f" lower)"
row "random small-file read p99, fresh mount" "$l_p99f ms" "$r_p99f ms" "$(unit "$a_p99f" ms)" "$(ratio "$l_p99f" "$r_p99f" lower)"
row "index size" "$(mib "$l_index")" "$(mib "$r_index")" "none (in memory)" "$(ratio "$l_index" "$r_index" lower)"
kib_to_mib() { case $1 in skipped) echo "$1" ;; *) mib "$(($1 * 1024))" ;; esac; }
row "peak RSS of the mount process" "$(kib_to_mib "$l_peak")" "$(kib_to_mib "$r_peak")" \
    "$(kib_to_mib "$a_peak")" "$(ratio "$l_peak" "$r_peak" lower)"
