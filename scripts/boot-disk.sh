#!/usr/bin/env bash
# Prints the path of the boot disk of the UEFI boot tests, built or found up
# to date, as the only line on stdout (progress and errors on stderr):
#
#     scripts/boot-disk.sh ARCH          ARCH = x86_64 | aarch64
#
# The disk is made by testkit/src/boot_disk.rs (scripts/boot-disk.md says
# how and why); this runs its binary. Its own target directory: a test that
# calls this under `cargo test` would otherwise wait on that run's lock.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
exec cargo run --quiet --manifest-path "$repo/Cargo.toml" --target-dir "$repo/target/tools" \
    -p qcow2-testkit --bin boot-disk -- "$@"
