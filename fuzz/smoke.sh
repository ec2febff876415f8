#!/usr/bin/env bash
# CI smoke fuzzing: each target for SMOKE_SECONDS (default 30) from the
# checked-in seeds. Exits non-zero on a crash, a timeout or an out-of-memory;
# without a nightly toolchain it prints a notice and exits 0 (the regression
# suite, `cargo test --test hostile`, runs on stable either way).
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
cd "$fuzz"
seconds=${SMOKE_SECONDS:-30}
targets=(open read decode structured follow disk disk_sparse uefi_adapter http_rules luks nbd netlink)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "smoke.sh: no nightly toolchain; skipping smoke fuzzing" >&2
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "smoke.sh: installing cargo-fuzz" >&2
    if ! cargo install --locked cargo-fuzz >/dev/null 2>&1; then
        echo "smoke.sh: cargo-fuzz is not available; skipping smoke fuzzing" >&2
        exit 0
    fi
fi

status=0
for target in "${targets[@]}"; do
    corpus=$(mktemp -d)
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    echo "smoke.sh: $target for ${seconds}s" >&2
    if ! cargo +nightly fuzz run -s none "$target" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=3072 \
        -print_final_stats=1 >"$corpus.log" 2>&1; then
        echo "smoke.sh: $target FAILED; log:" >&2
        tail -n 60 "$corpus.log" >&2
        status=1
    else
        grep -E "stat::number_of_executed_units" "$corpus.log" >&2 || true
    fi
    rm -rf "$corpus" "$corpus.log"
done
exit $status
