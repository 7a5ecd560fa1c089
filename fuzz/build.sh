#!/usr/bin/env bash
# Builds every fuzz target with libFuzzer's coverage instrumentation on the stable toolchain.
# The flags are the ones cargo-fuzz passes (minus -Zsanitizer, the one nightly-only flag):
# SanitizerCoverage is an LLVM pass that stable rustc runs through -C passes / -C llvm-args.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps RUSTFLAGS off build scripts and proc macros (they must not be instrumented).
exec cargo build --release --bins --target "$(rustc -vV | sed -n "s/^host: //p")" "$@"
