#!/usr/bin/env bash
# The differential test against QEMU (cli/tests/differential/), as long as
# asked: corrupts QEMU-made images and compares `qcow` with `qemu-img
# convert` on each mutant. Prints every disagreement and keeps its files
# (default: target/differential/seed-S/INDEX-KIND/). Fails if any mutant
# gives wrong bytes, crashes or hangs the tool, or differs in verdict for a
# reason README does not list.
#
#   scripts/differential.sh [--mutants N] [--seed S] [--jobs J] [--keep DIR] [--release]
set -euo pipefail
cd "$(dirname "$0")/.."
mutants=300 seed=17 jobs=2 keep="$PWD/target/differential" profile=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mutants) mutants="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        --keep) keep="$(realpath -m "$2")"; shift 2 ;;
        --release) profile=(--release); shift ;;
        *) echo "usage: $0 [--mutants N] [--seed S] [--jobs J] [--keep DIR] [--release]" >&2; exit 2 ;;
    esac
done
for tool in qemu-img timeout; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y qemu-utils coreutils" >&2; exit 1; }
done
QCOW_DIFFERENTIAL_MUTANTS="$mutants" QCOW_DIFFERENTIAL_SEED="$seed" \
QCOW_DIFFERENTIAL_JOBS="$jobs" QCOW_DIFFERENTIAL_KEEP="$keep" \
    exec cargo test "${profile[@]}" -p qcow2-cli --test differential -- --nocapture
