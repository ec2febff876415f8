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

# The Debian boots of tests/root_boot.rs (the package's build, a Debian
# disk made with mmdebstrap, then one guest at a time under TCG: minutes,
# mostly one core) are the longest part: they start first, as soon as
# their own test binary is built, and run beside the build and the rest of
# the suite, which use the other core. Their output comes after the rest's.
cargo test -p qcow2-reader --test root_boot --no-run
root_log=$(mktemp)
# A session of its own, so that stopping it stops its guests too.
setsid cargo test -p qcow2-reader --test root_boot >"$root_log" 2>&1 &
root_pid=$!
trap 'kill -- -"$root_pid" 2>/dev/null || true; rm -f "$root_log"' EXIT

status=0
cargo test --workspace -- --skip root_boot:: || status=$?

root_status=0
wait "$root_pid" || root_status=$?
echo "== tests/root_boot.rs (run beside the rest)" >&2
cat "$root_log" >&2
if [[ $status -ne 0 || $root_status -ne 0 ]]; then
    echo "test.sh: failed (the suite: exit $status; tests/root_boot.rs: exit $root_status)" >&2
    exit 1
fi
