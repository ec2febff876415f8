#!/usr/bin/env bash
# Benchmarks `qcow` against QEMU's own tools on the same images: runs
# testkit's bench-compare (testkit/src/bench_compare.rs says what it
# measures and which environment variables set it up), e.g.
#
#   benches/compare.sh            # builds target/release/qcow first
#   REPS=5 BENCH_DIR=/dev/shm/x QCOW=path/to/qcow benches/compare.sh
#   ONLY='zstd|deflate' RUZSTD=1 benches/compare.sh   # some rows; ruzstd too
#   ONLY=firmware FIRMWARE_TARGETS='x86_64-unknown-none aarch64-unknown-none' benches/compare.sh
#   QCOW_ALT=old/qcow QCOW_ALT_NAME=before benches/compare.sh  # a second build
#
# The table goes to stdout, the results as JSON to JSON_OUT (default
# target/bench/compare-DATE.json), from which
# `cargo run -p qcow2-testkit --bin readme-table -- FILE` makes README's table.
# Built in its own target directory (target/tools), so that building qcow in
# target/ does not wait for this run's lock.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
exec cargo run --quiet --manifest-path "$repo/Cargo.toml" --target-dir "$repo/target/tools" \
    -p qcow2-testkit --bin bench-compare -- "$@"
