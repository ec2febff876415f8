#!/usr/bin/env bash
# Scaling: does a read cost the same on a huge image as on a small one?
#
# 1. 4 KiB random reads over a 64 GiB image whose every cluster is allocated
#    (preallocation=metadata: 8 MiB of L2 tables, data sparse on tmpfs), with
#    1 MiB of L2 cache on both sides, so the tables do not fit (QEMU's own
#    l2-cache-size benchmark case). qemu-img bench in 7.2 has no random
#    pattern: it reads with a stride of 1 MiB + 4 KiB instead, which also
#    touches a new L2 slice almost every read. Reports reads/s (wall) and
#    CPU time, alternating the tools, medians of REPS runs.
# 2. Open + first 4 KiB read of a 2 TiB image against a 16 MiB one: wall
#    time and the number of pread calls (strace), which should not grow with
#    the image.
#
#   benches/scaling.sh                 # builds target/release/qcow first
#   REPS=5 COUNT=200000 BENCH_DIR=/dev/shm/x QCOW=path/to/qcow benches/scaling.sh
#
# Needs: qemu-img, qemu-io, GNU time, strace; a few MiB of tmpfs (the
# images are sparse).
set -euo pipefail

REPS=${REPS:-5}
COUNT=${COUNT:-100000}
BENCH_DIR=${BENCH_DIR:-/dev/shm/qcow-scaling}
source "$(dirname "$0")/common.sh"
need "apt-get install qemu-utils time strace" qemu-img qemu-io /usr/bin/time strace

mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
trap 'rm -f time.txt strace.txt' EXIT

make_image() {
    local name=$1 size=$2; shift 2
    [[ -f $name ]] && return 0
    qemu-img create -q -f qcow2 "$@" "$name.tmp" "$size"
    mv "$name.tmp" "$name"
}
make_image alloc64g.qcow2 64G -o preallocation=metadata
make_image sparse2t.qcow2 2T
make_image small16m.qcow2 16M
# One written cluster in each, so that the first read finds data.
for image in sparse2t.qcow2 small16m.qcow2; do
    qemu-io -c 'write -P 7 0 64k' "$image" >/dev/null
done

# "wall cpu" of one run (output discarded).
measure() {
    /usr/bin/time -f '%e %U %S' -o time.txt "$@" >/dev/null 2>&1 || { log "failed: $*"; return 1; }
    awk 'END { printf "%.4f %.4f\n", $1, $2 + $3 }' time.txt
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field_median() { awk -v n="$1" '{ print $n }' | median; }

log "random reads over 64 GiB, 1 MiB of L2 cache, $COUNT reads x $REPS"
qcow=() qemu=()
opts="driver=qcow2,file.filename=alloc64g.qcow2,l2-cache-size=1M"
for ((i = 0; i < REPS; i++)); do
    qcow+=("$(measure "$QCOW" bench -c "$COUNT" -s 4K --pattern random --l2-cache-size 1M alloc64g.qcow2)")
    qemu+=("$(measure qemu-img bench -d 1 -c "$COUNT" -s 4K -S 1052672 --image-opts "$opts")")
done
qw=$(printf '%s\n' "${qcow[@]}" | field_median 1); qc=$(printf '%s\n' "${qcow[@]}" | field_median 2)
mw=$(printf '%s\n' "${qemu[@]}" | field_median 1); mc=$(printf '%s\n' "${qemu[@]}" | field_median 2)

# pread calls and wall time of opening an image and reading its first 4 KiB.
first_read() {
    local image=$1 start end wall
    start=$(date +%s.%N)
    "$QCOW" bench -c 1 -s 4K "$image" >/dev/null 2>&1 || { log "failed: qcow bench $image"; return 1; }
    end=$(date +%s.%N)
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.4f", b - a }')
    strace -f -qq -e trace=pread64,preadv,read -o strace.txt "$QCOW" bench -c 1 -s 4K "$image" >/dev/null 2>&1
    # Reads of the image only: the CLI also reads /proc and its own files.
    local fd_reads
    fd_reads=$(grep -cE '^[0-9]+ +(pread64|preadv)\(' strace.txt || true)
    echo "$wall $fd_reads"
}
big=$(first_read sparse2t.qcow2)
small=$(first_read small16m.qcow2)

echo
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average $(cut -d ' ' -f 1-3 /proc/loadavg); $(qemu-img --version | head -n 1)."
echo
echo "| workload | qcow | QEMU | qcow/QEMU |"
echo "|---|---|---|---|"
awk -v c="$COUNT" -v qw="$qw" -v mw="$mw" -v qc="$qc" -v mc="$mc" 'BEGIN {
    printf "| 4 KiB reads over 64 GiB allocated, L2 cache 1M (qcow random, QEMU strided), reads/s | %.0f (CPU %.2f s) | %.0f (CPU %.2f s) | %.2fx the rate |\n", c / qw, qc, c / mw, mc, (c / qw) / (c / mw)
}'
read -r bw br <<<"$big"
read -r sw sr <<<"$small"
echo "| open + first 4 KiB read, 2 TiB image | $bw s, $br preads | - | - |"
echo "| open + first 4 KiB read, 16 MiB image | $sw s, $sr preads | - | - |"
