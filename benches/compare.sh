#!/usr/bin/env bash
# Benchmarks `qcow` against QEMU's own tools on the same images.
#
# Makes its images with qemu-img/qemu-io in a tmpfs directory, runs each
# workload alternating between the tools, REPS times, and prints the medians
# and the ratio to QEMU as a markdown table.
#
#   benches/compare.sh            # builds target/release/qcow first
#   REPS=5 BENCH_DIR=/dev/shm/x QCOW=path/to/qcow benches/compare.sh
#
# Needs: qemu-img, qemu-io, GNU time (/usr/bin/time), about 9 GiB of tmpfs.
# The images stay in BENCH_DIR for the next run (making them takes about a
# minute); remove the directory when done. qemu-img bench has no random
# pattern in QEMU 7.2, so the random rows compare with its strided reads.
set -euo pipefail

REPS=${REPS:-5}
BENCH_DIR=${BENCH_DIR:-/dev/shm/qcow-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SEQ_COUNT=${SEQ_COUNT:-250000}
RAND_COUNT=${RAND_COUNT:-100000}

log() { printf '%s\n' "$*" >&2; }

if [[ -z ${QCOW:-} ]]; then
    log "building qcow (release)"
    cargo build --quiet --release -p qcow2-cli --manifest-path "$ROOT/Cargo.toml"
    QCOW=$ROOT/target/release/qcow
fi
for tool in qemu-img qemu-io /usr/bin/time; do
    command -v "$tool" >/dev/null || { log "missing $tool (apt-get install qemu-utils time)"; exit 1; }
done

mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
trap 'rm -f out-*.raw' EXIT

make_images() {
    # Compressible, non-uniform data: base64 of random bytes (deflate keeps ~75%).
    if [[ ! -f src.raw ]]; then
        log "making images in $BENCH_DIR"
        head -c $((768 << 20)) /dev/urandom | base64 -w 0 | head -c $((1 << 30)) >src.raw.tmp
        mv src.raw.tmp src.raw
    fi
    local codec
    if [[ ! -f full.qcow2 ]]; then
        qemu-img convert -O qcow2 -o cluster_size=64k src.raw full.qcow2.tmp
        mv full.qcow2.tmp full.qcow2
    fi
    for codec in zlib zstd; do
        [[ -f $codec.qcow2 ]] && continue
        qemu-img convert -c -O qcow2 -o cluster_size=64k,compression_type=$codec src.raw $codec.qcow2.tmp
        mv $codec.qcow2.tmp $codec.qcow2
    done
    if [[ ! -f big.qcow2 ]]; then
        qemu-img create -q -f qcow2 -o cluster_size=64k big.qcow2.tmp 4G
        # qemu-io takes at most 2 GiB per request.
        qemu-io -c 'write -P 0x5a 0 1G' -c 'write -P 0x5b 1G 1G' -c 'write -P 0x5c 2G 1G' \
            -c 'write -P 0x5d 3G 1G' big.qcow2.tmp >/dev/null
        mv big.qcow2.tmp big.qcow2
    fi
    if [[ ! -f sparse2t.qcow2 ]]; then
        qemu-img create -q -f qcow2 sparse2t.qcow2.tmp 2T
        qemu-io -c 'write -P 1 0 8M' -c 'write -P 2 1T 8M' sparse2t.qcow2.tmp >/dev/null
        mv sparse2t.qcow2.tmp sparse2t.qcow2
    fi
    if [[ ! -f small16m.qcow2 ]]; then
        qemu-img create -q -f qcow2 small16m.qcow2.tmp 16M
        qemu-io -c 'write -P 1 0 16M' small16m.qcow2.tmp >/dev/null
        mv small16m.qcow2.tmp small16m.qcow2
    fi
}

# Wall-clock seconds of one run of a command (output discarded).
seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || { log "failed: $*"; return 1; }
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.4f\n", b - a }'
}

# Peak RSS in KiB of one run of a command.
peak_rss() {
    /usr/bin/time -f '%M' -o rss.txt "$@" >/dev/null 2>&1 || { log "failed: $*"; return 1; }
    tail -n 1 rss.txt
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

ROWS=()
row() { ROWS+=("$1"); }

# Whole-disk read to a raw file in the same tmpfs directory.
bench_convert() {
    local label=$1 image=$2 with_cp=$3 i qcow=() qemu=() cp=()
    log "convert: $label"
    for ((i = 0; i < REPS; i++)); do
        qcow+=("$(seconds "$QCOW" convert "$image" out-qcow.raw)"); rm -f out-qcow.raw
        qemu+=("$(seconds qemu-img convert -O raw "$image" out-qemu.raw)"); rm -f out-qemu.raw
        if [[ $with_cp == yes ]]; then
            cp+=("$(seconds cp src.raw out-cp.raw)"); rm -f out-cp.raw
        fi
    done
    local mq mm mc="-" vs_cp="-"
    mq=$(printf '%s\n' "${qcow[@]}" | median)
    mm=$(printf '%s\n' "${qemu[@]}" | median)
    if [[ $with_cp == yes ]]; then
        mc=$(printf '%s\n' "${cp[@]}" | median)
        vs_cp=$(ratio "$mq" "$mc")
        mc="$mc s"
    fi
    row "| $label | $mq s | $mm s | $(ratio "$mq" "$mm") | $mc | $vs_cp |"
}

# 4 KiB reads: qcow bench vs qemu-img bench -d 1 on the 4 GiB image.
bench_reads() {
    local label=$1 cache=$2 count=$3 qcow_args=$4 qemu_args=$5 i qcow=() qemu=()
    log "reads: $label, L2 cache $cache"
    local opts="driver=qcow2,file.filename=big.qcow2,l2-cache-size=$cache"
    for ((i = 0; i < REPS; i++)); do
        # shellcheck disable=SC2086
        qcow+=("$(seconds "$QCOW" bench -c "$count" -s 4K --l2-cache-size "$cache" $qcow_args big.qcow2)")
        # shellcheck disable=SC2086
        qemu+=("$(seconds qemu-img bench -d 1 -c "$count" -s 4K $qemu_args --image-opts "$opts")")
    done
    local mq mm
    mq=$(printf '%s\n' "${qcow[@]}" | median)
    mm=$(printf '%s\n' "${qemu[@]}" | median)
    row "| $label, L2 cache $cache | $mq s | $mm s | $(ratio "$mq" "$mm") | - | - |"
}

# Peak memory of a whole-disk read of a 2 TiB sparse image against a 16 MiB one.
bench_memory() {
    local i big=() small=() qemu_big=()
    log "memory: 2 TiB sparse vs 16 MiB"
    for ((i = 0; i < REPS; i++)); do
        big+=("$(peak_rss "$QCOW" convert sparse2t.qcow2 out-big.raw)"); rm -f out-big.raw
        small+=("$(peak_rss "$QCOW" convert small16m.qcow2 out-small.raw)"); rm -f out-small.raw
        qemu_big+=("$(peak_rss qemu-img convert -O raw sparse2t.qcow2 out-qemu.raw)"); rm -f out-qemu.raw
    done
    local mb ms mq
    mb=$(printf '%s\n' "${big[@]}" | median)
    ms=$(printf '%s\n' "${small[@]}" | median)
    mq=$(printf '%s\n' "${qemu_big[@]}" | median)
    row "| peak RSS, convert 2 TiB sparse (16 MiB image: $ms KiB) | $mb KiB | $mq KiB | $(ratio "$mb" "$mq") | - | - |"
}

make_images
started=$(date +%s)
bench_convert "convert 1 GiB, 64 KiB clusters, all allocated" full.qcow2 yes
bench_convert "convert 1 GiB, deflate-compressed" zlib.qcow2 no
bench_convert "convert 1 GiB, zstd-compressed" zstd.qcow2 no
bench_reads "4 KiB seq reads x$SEQ_COUNT" 1M "$SEQ_COUNT" "" ""
bench_reads "4 KiB seq reads x$SEQ_COUNT" 64K "$SEQ_COUNT" "" ""
bench_reads "4 KiB strided reads (step 1 MiB + 4 KiB) x$RAND_COUNT" 1M "$RAND_COUNT" "-S 1052672" "-S 1052672"
bench_reads "4 KiB strided reads (step 1 MiB + 4 KiB) x$RAND_COUNT" 64K "$RAND_COUNT" "-S 1052672" "-S 1052672"
bench_reads "4 KiB random reads x$RAND_COUNT (qemu: strided, it has no random pattern)" 1M "$RAND_COUNT" "--pattern random" "-S 1052672"
bench_reads "4 KiB random reads x$RAND_COUNT (qemu: strided, it has no random pattern)" 64K "$RAND_COUNT" "--pattern random" "-S 1052672"
bench_memory

echo
echo "Medians of $REPS alternating runs; ratio = qcow / QEMU (below 1 is faster). $(qemu-img --version | head -n 1)."
echo "Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; images on tmpfs."
echo
echo "| workload | qcow | QEMU | qcow/QEMU | cp of raw | qcow/cp |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Run time (without image creation): $(($(date +%s) - started)) s."
