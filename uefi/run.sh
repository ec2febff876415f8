#!/bin/sh
# Cargo's runner for qcow2.efi (.cargo/config.toml): execs testkit's
# uefi-run (testkit/src/uefi_run.rs documents the options). It is built
# from the workspace root, where uefi/'s build target does not apply.
root=$(cd "$(dirname "$0")/.." && pwd)
(cd "$root" && cargo build -q -p qcow2-testkit --bin uefi-run) || exit 1
exec "${CARGO_TARGET_DIR:-$root/target}/debug/uefi-run" "$@"
