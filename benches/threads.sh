#!/usr/bin/env bash
# Throughput of many readers sharing one opened image: `qcow bench
# --threads T` for T = 1, 2, 4, 8, each thread reading through the same
# `Image` (one cache, one lock), against one thread.
#
#   benches/threads.sh            # builds target/release/qcow first
#   REPS=3 BENCH_DIR=/dev/shm/x QCOW=path/to/qcow benches/threads.sh
#
# Every thread count sends the same requests (thread t of T sends requests
# t, t+T, ...), so the times compare directly. Prints the median of REPS
# runs as a markdown table. Images (about 320 MiB) stay in BENCH_DIR.
set -euo pipefail

REPS=${REPS:-3}
BENCH_DIR=${BENCH_DIR:-/dev/shm/qcow-bench-threads}
source "$(dirname "$0")/common.sh"
need "apt-get install qemu-utils" qemu-img qemu-io

mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
if [[ ! -f plain.qcow2 ]]; then
    log "making images in $BENCH_DIR"
    qemu-img create -q -f qcow2 plain.qcow2.tmp 256M
    qemu-io -c 'write -P 0x5a 0 256M' plain.qcow2.tmp >/dev/null
    mv plain.qcow2.tmp plain.qcow2
fi
if [[ ! -f zstd.qcow2 ]]; then
    head -c $((48 << 20)) /dev/urandom | base64 -w 0 | head -c $((64 << 20)) >src.raw
    qemu-img convert -c -O qcow2 -o compression_type=zstd src.raw zstd.qcow2.tmp
    rm src.raw
    mv zstd.qcow2.tmp zstd.qcow2
fi

# name | image | bench options
workloads=(
    "4 KiB random reads, all L2 cached|plain.qcow2|-c 400000 -s 4K --pattern random"
    "4 KiB random reads, 4 KiB L2 cache (a miss per read)|plain.qcow2|-c 200000 -s 4K --pattern random --l2-cache-size 4K"
    "64 KiB random reads, zstd-compressed|zstd.qcow2|-c 4000 -s 64K --pattern random"
)

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "| workload | threads | seconds | MiB/s | vs 1 thread |"
echo "|---|---|---|---|---|"
for workload in "${workloads[@]}"; do
    IFS='|' read -r name image options <<<"$workload"
    one=
    for threads in 1 2 4 8; do
        times=()
        for _ in $(seq "$REPS"); do
            # shellcheck disable=SC2086 # options are words
            line=$("$QCOW" bench $options --threads "$threads" "$image" | grep 'Run completed')
            times+=("$(sed -E 's/Run completed in ([0-9.]+) seconds \(([0-9.]+) MiB.*/\1 \2/' <<<"$line")")
        done
        seconds=$(printf '%s\n' "${times[@]}" | awk '{ print $1 }' | median)
        rate=$(printf '%s\n' "${times[@]}" | awk '{ print $2 }' | median)
        one=${one:-$rate}
        echo "| $name | $threads | $seconds | $rate | $(awk -v r="$rate" -v o="$one" 'BEGIN { printf "%.2fx", r / o }') |"
    done
done
