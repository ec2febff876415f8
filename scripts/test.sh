#!/usr/bin/env bash
# Runs every test: the crate's unit and QEMU-compared integration tests, the
# hostile-image suite, the CLI's tests, and the firmware booted in QEMU on
# x86_64 and aarch64. Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace "$@"
