#!/usr/bin/env bash
# Benchmarks `qcow` against QEMU's own tools on the same images.
#
# Makes its images with qemu-img/qemu-io in a tmpfs directory, runs each
# workload alternating between the tools, REPS times, and prints the medians
# and the ratio to QEMU as a markdown table.
#
#   benches/compare.sh            # builds target/release/qcow first
#   REPS=5 BENCH_DIR=/dev/shm/x QCOW=path/to/qcow benches/compare.sh
#   ONLY='zstd|deflate' RUZSTD=1 benches/compare.sh   # some rows; ruzstd too
#   ONLY=firmware FIRMWARE_TARGETS='x86_64-unknown-none aarch64-unknown-none' benches/compare.sh
#   QCOW_ALT=old/qcow QCOW_ALT_NAME=before benches/compare.sh  # a second build
#
# A second `qcow` (QCOW_ALT, named QCOW_ALT_NAME) is measured in the same
# alternation on the rows whose label matches ALT_ROWS (default: every
# convert and read row): a before/after comparison of two commits on the
# same images. RUZSTD=1 builds the ruzstd variant as that second tool and
# sets ALT_ROWS=zstd.
#
# Every convert row is also measured against the copy limit: the image's raw
# source copied by as many parallel `dd` streams as convert uses threads.
# Each tool's CPU time (user + sys, from GNU time) is reported next to its
# wall time: on a shared machine it is the steadier of the two.
#
# Writes the table to stdout and the results as JSON to JSON_OUT (default
# target/bench/compare-DATE.json), from which `benches/readme_table.py`
# makes README's table.
#
# Needs: qemu-img, qemu-io, GNU time (/usr/bin/time), jq, about 12 GiB of tmpfs.
# The images stay in BENCH_DIR for the next run (making them takes about a
# minute); remove the directory when done. qemu-img bench has no random
# pattern in QEMU 7.2, so the random rows compare with its strided reads.
set -euo pipefail

REPS=${REPS:-5}
BENCH_DIR=${BENCH_DIR:-/dev/shm/qcow-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SEQ_COUNT=${SEQ_COUNT:-250000}
RAND_COUNT=${RAND_COUNT:-100000}
ONLY=${ONLY:-}
ALT_ROWS=${ALT_ROWS:-.}
QCOW_ALT_NAME=${QCOW_ALT_NAME:-alt}
NPROC=$(nproc)
THREADS=${THREADS:-$((NPROC < 4 ? NPROC : 4))} # qcow convert's default
JSON_OUT=${JSON_OUT:-$ROOT/target/bench/compare-$(date -u +%Y%m%dT%H%M%SZ).json}
mkdir -p "$(dirname "$JSON_OUT")"
JSON_OUT=$(cd "$(dirname "$JSON_OUT")" && pwd)/$(basename "$JSON_OUT") # the run cds to BENCH_DIR

log() { printf '%s\n' "$*" >&2; }

if [[ -n ${RUZSTD:-} ]]; then
    # The same tool with ruzstd instead of libzstd, as a second qcow column.
    log "building qcow with ruzstd (release)"
    cargo build --quiet --release -p qcow2-cli --no-default-features --manifest-path "$ROOT/Cargo.toml"
    cp "$ROOT/target/release/qcow" "$ROOT/target/release/qcow-ruzstd"
    QCOW_ALT=$ROOT/target/release/qcow-ruzstd
    QCOW_ALT_NAME=ruzstd
    ALT_ROWS=zstd
fi
if [[ -z ${QCOW:-} ]]; then
    log "building qcow (release)"
    cargo build --quiet --release -p qcow2-cli --manifest-path "$ROOT/Cargo.toml"
    QCOW=$ROOT/target/release/qcow
fi
for tool in qemu-img qemu-io /usr/bin/time jq dd; do
    command -v "$tool" >/dev/null || { log "missing $tool (apt-get install qemu-utils time jq coreutils)"; exit 1; }
done

mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
trap 'rm -f out-*.raw time.txt' EXIT

# Whether the rows named by $1 (a word of their label) are to run.
want() { [[ -z $ONLY || $1 =~ $ONLY ]]; }

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
    # Text: the C headers of this machine, repeated to 1 GiB (zstd keeps ~20%).
    if [[ ! -f text.raw ]]; then
        find /usr/include -name '*.h' -type f -print0 | sort -z | xargs -0 cat >headers.txt
        [[ -s headers.txt ]] || { log "no C headers in /usr/include for the text image"; exit 1; }
        local copies i
        copies=$(((1 << 30) / $(stat -c %s headers.txt) + 1))
        # head stops the loop's last cat with SIGPIPE: check the size instead.
        for ((i = 0; i < copies; i++)); do cat headers.txt; done | head -c $((1 << 30)) >text.raw.tmp || true
        [[ $(stat -c %s text.raw.tmp) == $((1 << 30)) ]] || { log "could not make text.raw"; exit 1; }
        rm -f headers.txt
        mv text.raw.tmp text.raw
    fi
    for codec in zlib zstd; do
        if [[ ! -f $codec.qcow2 ]]; then
            qemu-img convert -c -O qcow2 -o cluster_size=64k,compression_type=$codec src.raw $codec.qcow2.tmp
            mv $codec.qcow2.tmp $codec.qcow2
        fi
        if [[ ! -f text-$codec.qcow2 ]]; then
            qemu-img convert -c -O qcow2 -o cluster_size=64k,compression_type=$codec text.raw text-$codec.qcow2.tmp
            mv text-$codec.qcow2.tmp text-$codec.qcow2
        fi
    done
    if [[ ! -f big.qcow2 ]] && { want seq || want strided || want random; }; then
        qemu-img create -q -f qcow2 -o cluster_size=64k big.qcow2.tmp 4G
        # qemu-io takes at most 2 GiB per request.
        qemu-io -c 'write -P 0x5a 0 1G' -c 'write -P 0x5b 1G 1G' -c 'write -P 0x5c 2G 1G' \
            -c 'write -P 0x5d 3G 1G' big.qcow2.tmp >/dev/null
        mv big.qcow2.tmp big.qcow2
    fi
    want memory || return 0
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

# One run of a command: "wall user+sys maxrss_kib" (output discarded). CPU
# time is the steadier number on a shared machine; it counts children too.
measure() {
    /usr/bin/time -f '%e %U %S %M' -o time.txt "$@" >/dev/null 2>&1 || { log "failed: $*"; return 1; }
    awk 'END { printf "%.4f %.4f %d\n", $1, $2 + $3, $4 }' time.txt
}

# The copy limit: FILE copied to OUT by STREAMS parallel dd processes, each
# taking an equal share of the bytes (what STREAMS threads of convert may
# at best reach on this storage).
parallel_dd() {
    local file=$1 out=$2 streams=$3 size share i
    size=$(stat -c %s "$file")
    share=$(((size + streams - 1) / streams))
    for ((i = 0; i < streams; i++)); do
        dd if="$file" of="$out" bs=1M iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc \
            skip=$((i * share)) seek=$((i * share)) count=$share status=none &
    done
    wait
}
# As a command GNU time can run.
LIMIT_COPY=(bash -c "$(declare -f parallel_dd); parallel_dd \"\$@\"" parallel_dd)

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
# Field N (1 wall, 2 cpu, 3 rss) of each "wall cpu rss" line, median.
field_median() { awk -v n="$1" '{ print $n }' | median; }

ROWS=()
JSON_ROWS=()
row() { ROWS+=("$1"); }
# JSON_ROWS entry: workload, then numbers (null when absent).
json_row() {
    local label=$1 kind=$2; shift 2
    JSON_ROWS+=("$(jq -cn --arg workload "$label" --arg kind "$kind" --argjson values "$1" \
        '{workload: $workload, kind: $kind} + $values')")
}

# "yes" when the second build (QCOW_ALT) is to run on the row labelled $1.
alt_wanted() {
    if [[ -n ${QCOW_ALT:-} && $1 =~ $ALT_ROWS ]]; then echo yes; fi
}
# The JSON fields of the second build's medians (from "wall cpu rss" lines).
alt_json() {
    local name=$1; shift
    if [[ $# -eq 0 ]]; then
        echo '{"alt_name": null, "alt_s": null, "alt_cpu_s": null}'
        return
    fi
    jq -cn --arg name "$name" --argjson aw "$(printf '%s\n' "$@" | field_median 1)" \
        --argjson ac "$(printf '%s\n' "$@" | field_median 2)" '{alt_name: $name, alt_s: $aw, alt_cpu_s: $ac}'
}
# The label suffix naming the second build's medians, from alt_json's output.
alt_label() { jq -r 'if .alt_name then " (\(.alt_name): \(.alt_s) s, CPU \(.alt_cpu_s) s)" else "" end' <<<"$1"; }

# The table row and JSON of a convert workload labelled $1, from the
# "wall cpu rss" lines in the calling function's arrays qcow, qemu, limit
# and alt (bash's locals are visible to the functions a function calls).
convert_row() {
    local label=$1 qw qc mw mc lw lc alt_fields
    qw=$(printf '%s\n' "${qcow[@]}" | field_median 1); qc=$(printf '%s\n' "${qcow[@]}" | field_median 2)
    mw=$(printf '%s\n' "${qemu[@]}" | field_median 1); mc=$(printf '%s\n' "${qemu[@]}" | field_median 2)
    lw=$(printf '%s\n' "${limit[@]}" | field_median 1); lc=$(printf '%s\n' "${limit[@]}" | field_median 2)
    alt_fields=$(alt_json "$QCOW_ALT_NAME" "${alt[@]}")
    row "| $label$(alt_label "$alt_fields") | $qw s | $mw s | $(ratio "$qw" "$mw") | $qc s | $mc s | $lw s | $(ratio "$qw" "$lw") |"
    json_row "$label" convert "$(jq -cn --argjson qw "$qw" --argjson qc "$qc" --argjson mw "$mw" --argjson mc "$mc" \
        --argjson lw "$lw" --argjson lc "$lc" --argjson alt "$alt_fields" \
        '{qcow_s: $qw, qcow_cpu_s: $qc, qemu_s: $mw, qemu_cpu_s: $mc, limit_s: $lw, limit_cpu_s: $lc} + $alt')"
}

# Whole-disk read to a raw file in the same tmpfs directory, alternating
# qcow, QEMU and the copy limit of the image's raw source (RAW).
bench_convert() {
    local label=$1 image=$2 raw=$3 i qcow=() qemu=() limit=() alt=() with_alt=
    log "convert: $label"
    with_alt=$(alt_wanted "$label")
    for ((i = 0; i < REPS; i++)); do
        qcow+=("$(measure "$QCOW" convert --threads "$THREADS" "$image" out-qcow.raw)"); rm -f out-qcow.raw
        qemu+=("$(measure qemu-img convert -O raw "$image" out-qemu.raw)"); rm -f out-qemu.raw
        limit+=("$(measure "${LIMIT_COPY[@]}" "$raw" out-dd.raw "$THREADS")"); rm -f out-dd.raw
        if [[ -n $with_alt ]]; then
            alt+=("$(measure "$QCOW_ALT" convert --threads "$THREADS" "$image" out-alt.raw)"); rm -f out-alt.raw
        fi
    done
    convert_row "$label"
}

# The whole-disk read of a LUKS (aes-256-xts, QEMU's default) copy of
# src.raw, both tools given the same passphrase file: qcow convert
# --passphrase-file vs qemu-img convert --object secret --image-opts. Same
# row and JSON as bench_convert. iter-time is small: the row measures the
# decryption, not PBKDF2.
bench_convert_luks() {
    local label=$1 i qcow=() qemu=() limit=() alt=() with_alt
    local secret="secret,id=sec0,file=luks.pass"
    local opts="driver=qcow2,encrypt.key-secret=sec0,file.filename=luks.qcow2"
    printf %s "qcow2-reader bench" >luks.pass
    if [[ ! -f luks.qcow2 ]]; then
        log "making luks.qcow2"
        qemu-img convert -O qcow2 --object "$secret" \
            -o cluster_size=64k,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 \
            src.raw luks.qcow2.tmp
        mv luks.qcow2.tmp luks.qcow2
    fi
    log "convert: $label"
    with_alt=$(alt_wanted "$label")
    if [[ -n $with_alt ]] && ! "$QCOW_ALT" convert --help | grep -q -- --passphrase-file; then
        log "$QCOW_ALT_NAME has no --passphrase-file: not measured on this row"
        with_alt=
    fi
    for ((i = 0; i < REPS; i++)); do
        qcow+=("$(measure "$QCOW" convert --threads "$THREADS" --passphrase-file luks.pass luks.qcow2 out-qcow.raw)"); rm -f out-qcow.raw
        qemu+=("$(measure qemu-img convert --object "$secret" --image-opts "$opts" -O raw out-qemu.raw)"); rm -f out-qemu.raw
        limit+=("$(measure "${LIMIT_COPY[@]}" src.raw out-dd.raw "$THREADS")"); rm -f out-dd.raw
        if [[ -n $with_alt ]]; then
            alt+=("$(measure "$QCOW_ALT" convert --threads "$THREADS" --passphrase-file luks.pass luks.qcow2 out-alt.raw)"); rm -f out-alt.raw
        fi
    done
    convert_row "$label"
}

# 4 KiB reads: qcow bench vs qemu-img bench -d 1 on the 4 GiB image.
bench_reads() {
    local label=$1 cache=$2 count=$3 qcow_args=$4 qemu_args=$5 i qcow=() qemu=() alt=() with_alt
    log "reads: $label, L2 cache $cache"
    with_alt=$(alt_wanted "$label")
    local opts="driver=qcow2,file.filename=big.qcow2,l2-cache-size=$cache"
    for ((i = 0; i < REPS; i++)); do
        # shellcheck disable=SC2086
        qcow+=("$(measure "$QCOW" bench -c "$count" -s 4K --l2-cache-size "$cache" $qcow_args big.qcow2)")
        # shellcheck disable=SC2086
        qemu+=("$(measure qemu-img bench -d 1 -c "$count" -s 4K $qemu_args --image-opts "$opts")")
        if [[ -n $with_alt ]]; then
            # shellcheck disable=SC2086
            alt+=("$(measure "$QCOW_ALT" bench -c "$count" -s 4K --l2-cache-size "$cache" $qcow_args big.qcow2)")
        fi
    done
    local qw qc mw mc alt_fields
    qw=$(printf '%s\n' "${qcow[@]}" | field_median 1); qc=$(printf '%s\n' "${qcow[@]}" | field_median 2)
    mw=$(printf '%s\n' "${qemu[@]}" | field_median 1); mc=$(printf '%s\n' "${qemu[@]}" | field_median 2)
    alt_fields=$(alt_json "$QCOW_ALT_NAME" "${alt[@]}")
    row "| $label, L2 cache $cache$(alt_label "$alt_fields") | $qw s | $mw s | $(ratio "$qw" "$mw") | $qc s | $mc s | - | - |"
    json_row "$label, L2 cache $cache" reads "$(jq -cn --argjson qw "$qw" --argjson qc "$qc" --argjson mw "$mw" --argjson mc "$mc" \
        --argjson alt "$alt_fields" '{qcow_s: $qw, qcow_cpu_s: $qc, qemu_s: $mw, qemu_cpu_s: $mc} + $alt')"
}

# Peak memory of a whole-disk read of a 2 TiB sparse image against a 16 MiB one.
bench_memory() {
    local i big=() small=() qemu_big=()
    log "memory: 2 TiB sparse vs 16 MiB"
    for ((i = 0; i < REPS; i++)); do
        big+=("$(measure "$QCOW" convert sparse2t.qcow2 out-big.raw)"); rm -f out-big.raw
        small+=("$(measure "$QCOW" convert small16m.qcow2 out-small.raw)"); rm -f out-small.raw
        qemu_big+=("$(measure qemu-img convert -O raw sparse2t.qcow2 out-qemu.raw)"); rm -f out-qemu.raw
    done
    local mb ms mq
    mb=$(printf '%s\n' "${big[@]}" | field_median 3)
    ms=$(printf '%s\n' "${small[@]}" | field_median 3)
    mq=$(printf '%s\n' "${qemu_big[@]}" | field_median 3)
    row "| peak RSS, convert 2 TiB sparse (16 MiB image: $ms KiB) | $mb KiB | $mq KiB | $(ratio "$mb" "$mq") | - | - | - | - |"
    json_row "peak RSS, convert 2 TiB sparse" memory "$(jq -cn --argjson mb "$mb" --argjson ms "$ms" --argjson mq "$mq" \
        '{qcow_kib: $mb, qcow_small_kib: $ms, qemu_kib: $mq}')"
}

# The firmware's qcow2 read against a raw read of the same virtio disk, on
# the default demo image under QEMU TCG: the release firmware is booted
# RUNS times (default 2) per target in FIRMWARE_TARGETS (default
# x86_64-unknown-none; add aarch64-unknown-none for arm). The interleaving
# of qcow2 and raw passes happens inside the firmware; each boot prints,
# per queue depth, the best pass of each read and the median and spread of
# the per-pass qcow2/raw throughput ratios, which this records per run.
bench_firmware() {
    local target elf out run depth_rows=() runs=${FIRMWARE_RUNS:-2}
    for target in ${FIRMWARE_TARGETS:-x86_64-unknown-none}; do
        log "firmware: $target, $runs boots"
        (cd "$ROOT/firmware" && cargo build --quiet --release --target "$target")
        elf=$ROOT/firmware/target/$target/release/qcow2-firmware
        local depth1=() queued=()
        for ((run = 0; run < runs; run++)); do
            out=$("$ROOT/firmware/run.sh" "$elf" 2>&1) || { log "firmware run failed: $out"; return 1; }
            # One JSON object per queue depth: {depth, qcow2_mb_s, raw_mb_s,
            # median, min, max} from the demo's "queue depth N:" blocks (the
            # serial console ends lines with CR LF).
            mapfile -t depth_rows < <(awk '
                /^  queue depth [0-9]+:$/ { depth = $3; sub(":", "", depth) }
                /^    qcow2 read:/ { qcow2 = $3 }
                /^    raw read:/ { raw = $3 }
                /^    qcow2\/raw per pass:/ {
                    sub(",", "", $5)
                    printf "{\"depth\":%d,\"qcow2_mb_s\":%s,\"raw_mb_s\":%s,\"median\":%s,\"min\":%s,\"max\":%s}\n",
                        depth, qcow2, raw, $5, $7, $9
                }' < <(tr -d '\r' <<<"$out"))
            [[ ${#depth_rows[@]} -eq 2 ]] || { log "firmware output not understood: $out"; return 1; }
            depth1+=("${depth_rows[0]}")
            queued+=("${depth_rows[1]}")
        done
        local label="firmware $target (QEMU TCG), 64 MiB demo image: qcow2/raw read throughput"
        local d1 dq runs_json
        d1=$(printf '%s\n' "${depth1[@]}" | jq -cs .)
        dq=$(printf '%s\n' "${queued[@]}" | jq -cs .)
        for runs_json in "$d1" "$dq"; do
            # Per run: "median (min-max)", and the best passes' MB/s.
            local ratios qcow2 raw
            ratios=$(jq -r '.[] | "\(.median) \(.min) \(.max)"' <<<"$runs_json" |
                awk '{ printf "%s%.2f (%.2f-%.2f)", (NR > 1 ? ", " : ""), $1, $2, $3 }')
            qcow2=$(jq -r '[.[] | .qcow2_mb_s | tostring] | join(", ")' <<<"$runs_json")
            raw=$(jq -r '[.[] | .raw_mb_s | tostring] | join(", ")' <<<"$runs_json")
            row "| $label, queue depth $(jq -r '.[0].depth' <<<"$runs_json"), median (spread) per run: $ratios | $qcow2 MB/s | raw $raw MB/s | - | - | - | - | - |"
        done
        json_row "$label" firmware "$(jq -cn --arg target "$target" --argjson depth1 "$d1" --argjson queued "$dq" \
            '{target: $target, depth1: $depth1, queued: $queued}')"
    done
}

# The firmware row reads its own demo image: no need for the big ones.
[[ $ONLY == firmware ]] || make_images
started=$(date +%s)
date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
if [[ -n $ONLY ]]; then
    log "only rows matching: $ONLY"
fi
want "allocated" && bench_convert "convert 1 GiB, 64 KiB clusters, all allocated" full.qcow2 src.raw
want "deflate" && bench_convert "convert 1 GiB, deflate-compressed" zlib.qcow2 src.raw
want "zstd" && bench_convert "convert 1 GiB, zstd-compressed" zstd.qcow2 src.raw
want "zstd" && bench_convert "convert 1 GiB, zstd-compressed, text (C headers)" text-zstd.qcow2 text.raw
want "deflate" && bench_convert "convert 1 GiB, deflate-compressed, text (C headers)" text-zlib.qcow2 text.raw
want "luks" && bench_convert_luks "convert 1 GiB, LUKS aes-256-xts"
want "seq" && bench_reads "4 KiB seq reads x$SEQ_COUNT" 1M "$SEQ_COUNT" "" ""
want "seq" && bench_reads "4 KiB seq reads x$SEQ_COUNT" 64K "$SEQ_COUNT" "" ""
want "strided" && bench_reads "4 KiB strided reads (step 1 MiB + 4 KiB) x$RAND_COUNT" 1M "$RAND_COUNT" "-S 1052672" "-S 1052672"
want "strided" && bench_reads "4 KiB strided reads (step 1 MiB + 4 KiB) x$RAND_COUNT" 64K "$RAND_COUNT" "-S 1052672" "-S 1052672"
want "random" && bench_reads "4 KiB random reads x$RAND_COUNT (qemu: strided, it has no random pattern)" 1M "$RAND_COUNT" "--pattern random" "-S 1052672"
want "random" && bench_reads "4 KiB random reads x$RAND_COUNT (qemu: strided, it has no random pattern)" 64K "$RAND_COUNT" "--pattern random" "-S 1052672"
want "memory" && bench_memory
want "firmware" && bench_firmware
elapsed=$(($(date +%s) - started))
load_after=$(cut -d ' ' -f 1-3 /proc/loadavg)

qemu_version=$(qemu-img --version | head -n 1)
cpu_model=$(lscpu | sed -n 's/^Model name: *//p')
mem_gib=$(free -g | awk '/^Mem:/ { print $2 }')
echo
echo "Medians of $REPS alternating runs; ratio = qcow / QEMU (below 1 is faster). $qemu_version."
echo "Machine: $(nproc) CPUs, $cpu_model, $mem_gib GiB RAM; images on tmpfs; $date_utc;"
echo "load average $load_before before, $load_after after. Limit: the raw file copied by $THREADS parallel dd streams (convert uses $THREADS threads)."
echo
echo "| workload | qcow | QEMU | qcow/QEMU | qcow CPU | QEMU CPU | limit | qcow/limit |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Run time (without image creation): $elapsed s."

jq -n --arg date "$date_utc" --arg qemu "$qemu_version" --arg cpu "$cpu_model" \
    --argjson cpus "$(nproc)" --argjson mem "$mem_gib" --argjson reps "$REPS" \
    --argjson threads "$THREADS" --arg load_before "$load_before" --arg load_after "$load_after" \
    --argjson elapsed "$elapsed" --arg qcow "$("$QCOW" --version 2>/dev/null || echo "$QCOW")" \
    '{date: $date, machine: {cpus: $cpus, cpu: $cpu, memory_gib: $mem,
       load_average_before: $load_before, load_average_after: $load_after},
      qemu: $qemu, qcow: $qcow, reps: $reps, convert_threads: $threads, run_seconds: $elapsed,
      rows: $ARGS.positional}' --jsonargs "${JSON_ROWS[@]}" >"$JSON_OUT"
log "results: $JSON_OUT (benches/readme_table.py makes README's table from it)"
