#!/usr/bin/env bash
# Runs every test: the crate's unit and QEMU-compared integration tests, the
# hostile-image suite, the CLI's tests, and the firmware booted in QEMU on
# x86_64 and aarch64. Installs what is missing first (scripts/setup.sh).
#
#   scripts/test.sh              the whole suite
#   scripts/test.sh ARGS...      `cargo test --workspace ARGS...`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [[ $# -gt 0 ]]; then
    exec cargo test --workspace "$@"
fi

# Two lanes, one per core. The Debian boots of tests/root_boot.rs (the
# package's build, a Debian disk made with mmdebstrap, then one guest at a
# time under TCG: minutes, mostly one core), then the HTTP boots of
# tests/uefi_http.rs, start first, as soon as their test binaries are
# built; the rest of the suite is built and run beside them. The lanes take
# about as long (a whole CI run on 2026-12-07: the rest 1019 s from the
# start of the tests, root_boot 700 s, uefi_http 172 s of the rest). The
# first lane's output comes after the rest's.
lane=(-p qcow2-reader --test root_boot --test uefi_http)
cargo test "${lane[@]}" --no-run
root_log=$(mktemp)
# A session of its own, so that stopping it stops its guests too.
setsid cargo test "${lane[@]}" >"$root_log" 2>&1 &
root_pid=$!
trap 'kill -- -"$root_pid" 2>/dev/null || true; rm -f "$root_log"' EXIT

status=0
cargo test --workspace -- --skip root_boot:: --skip uefi_http:: || status=$?

root_status=0
wait "$root_pid" || root_status=$?
echo "== tests/root_boot.rs and tests/uefi_http.rs (run beside the rest)" >&2
cat "$root_log" >&2
if [[ $status -ne 0 || $root_status -ne 0 ]]; then
    echo "test.sh: failed (the suite: exit $status; tests/root_boot.rs and tests/uefi_http.rs: exit $root_status)" >&2
    exit 1
fi
