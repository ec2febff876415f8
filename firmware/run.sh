#!/bin/sh
# Cargo's runner for the firmware (.cargo/config.toml): execs testkit's
# firmware-run (testkit/src/firmware_run.rs documents the options). It is
# built from the workspace root, where firmware/'s build target does not
# apply.
root=$(cd "$(dirname "$0")/.." && pwd)
(cd "$root" && cargo build -q -p qcow2-testkit --bin firmware-run) || exit 2
exec "${CARGO_TARGET_DIR:-$root/target}/debug/firmware-run" "$@"
