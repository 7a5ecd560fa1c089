#!/usr/bin/env bash
# Runs every fuzz target (or those named after SECONDS) for SECONDS each, one after the other,
# on one core, starting from seeds/<target> and the corpus kept in corpus/<target>.
# Crashes are written to artifacts/<target>/; the script exits 1 if any target found one.
#   fuzz/run.sh 180                  # every target, 3 minutes each
#   fuzz/run.sh 60 tar_index reference
set -uo pipefail
cd "$(dirname "$0")"
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(tar_index archive_read chunk_index span_index reference manifest api_json)
fi
./build.sh --quiet || exit 2
triple=$(rustc -vV | sed -n 's/^host: //p')
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: ${seconds}s"
    # -rss_limit_mb: a parser that allocates from an untrusted count shows up as a crash.
    "target/$triple/release/$t" "corpus/$t" "seeds/$t" \
        -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -max_len=1048576 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 |
        grep -E '^(#[0-9]+ +DONE|==[0-9]+==|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|artifact_prefix|Test unit written)' 
    if ls "artifacts/$t"/crash-* "artifacts/$t"/oom-* "artifacts/$t"/timeout-* >/dev/null 2>&1; then
        echo "!! $t: crashes in fuzz/artifacts/$t"
        failed=1
    fi
done
exit $failed
