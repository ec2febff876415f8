#!/usr/bin/env bash
# Benchmarks getting one large file out of ext4 inside a compressed QCOW2
# image, side by side in one run:
#   qcow get     IMAGE 1:/big.bin -o OUT                (this project; and with --threads 1)
#   qemu-img convert -O raw IMAGE RAW; debugfs -R "dump /big.bin OUT" RAW?offset=START
#                                                        (without libguestfs)
#   qcow cat --offset START --length SIZE IMAGE > OUT   (the same number of bytes, raw)
#   qcow convert IMAGE RAW                               (the whole disk, for reference)
# Each runs REPS times, alternating; medians are printed as a markdown table.
#
#   benches/files.sh                      # builds target/release/qcow first
#   REPS=5 FILE_MIB=512 BENCH_DIR=/dev/shm/x benches/files.sh
#
# Needs qemu-img, sfdisk, mkfs.ext4, debugfs, and about 4 x FILE_MIB of tmpfs.
set -euo pipefail

REPS=${REPS:-5}
FILE_MIB=${FILE_MIB:-512}
BENCH_DIR=${BENCH_DIR:-/dev/shm/qcow-files-bench}

source "$(dirname "$0")/common.sh"
need "run scripts/setup.sh" qemu-img sfdisk mkfs.ext4 debugfs

mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
trap 'rm -f out.* disk.raw' EXIT

if [[ ! -f image.qcow2 || $(cat size 2>/dev/null) != "$FILE_MIB" ]]; then
    log "making a ${FILE_MIB} MiB file in ext4 in a GPT disk, compressed"
    rm -rf tree && mkdir tree
    # Compressible, non-uniform data: base64 of random bytes (deflate keeps ~75%).
    head -c $((FILE_MIB * 3 / 4))M /dev/urandom | base64 -w 0 | head -c "${FILE_MIB}M" >tree/big.bin
    fs_mib=$((FILE_MIB + FILE_MIB / 8 + 64))
    truncate -s "${fs_mib}M" fs.raw
    mkfs.ext4 -q -F -d tree fs.raw
    truncate -s $((fs_mib + 2))M disk.raw
    printf 'label: gpt\ntype=linux\n' | sfdisk -q disk.raw
    dd if=fs.raw of=disk.raw bs=1M seek=1 conv=notrunc status=none
    rm fs.raw
    qemu-img convert -c -O qcow2 disk.raw image.qcow2
    echo "$FILE_MIB" >size
fi
start=$("$QCOW" parts --json image.qcow2 | awk -F': ' '/"start"/ { gsub(",", "", $2); print $2; exit }')
bytes=$(stat -c %s tree/big.bin)

# Wall time, and CPU time (user + system, summed over a pipeline's
# commands): the machine may be shared, and CPU time is what load changes least.
declare -A times cpu
run() { # NAME FUNCTION
    local name=$1 t0 t1
    rm -f out.* cpu.log
    t0=$(date +%s.%N)
    "$2"
    t1=$(date +%s.%N)
    times[$name]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }') "
    cpu[$name]+="$(awk '{ sum += $1 + $2 } END { printf "%.4f", sum }' cpu.log) "
}
timed() { /usr/bin/time -a -o cpu.log -f "%U %S" "$@"; }
get() { timed "$QCOW" get image.qcow2 1:/big.bin -o out.get; }
get_one_thread() { timed "$QCOW" get --threads 1 image.qcow2 1:/big.bin -o out.get; }
pipeline() {
    timed qemu-img convert -O raw image.qcow2 out.raw
    timed debugfs -R "dump /big.bin out.dump" "out.raw?offset=$start" 2>/dev/null
}
same_bytes() { timed "$QCOW" cat --offset "$start" --length "$bytes" image.qcow2 >out.cat; }
convert() { timed "$QCOW" convert image.qcow2 out.convert; }

log "checking the outputs once"
get && cmp out.get tree/big.bin
pipeline && cmp out.dump tree/big.bin
rm -f cpu.log

for ((rep = 1; rep <= REPS; rep++)); do
    log "round $rep of $REPS"
    run "qcow get" get
    run "qcow get --threads 1" get_one_thread
    run "qemu-img convert + debugfs dump" pipeline
    run "qcow cat, same bytes" same_bytes
    run "qcow convert, whole disk" convert
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
get_wall=$(median <<<"${times["qcow get"]}")
get_cpu=$(median <<<"${cpu["qcow get"]}")
echo "| workload (${FILE_MIB} MiB file, image $(du -m image.qcow2 | cut -f1) MiB) | wall s | qcow get / this | CPU s | qcow get / this |"
echo "|---|---|---|---|---|"
for name in "qcow get" "qcow get --threads 1" "qemu-img convert + debugfs dump" "qcow cat, same bytes" "qcow convert, whole disk"; do
    wall=$(median <<<"${times[$name]}")
    used=$(median <<<"${cpu[$name]}")
    echo "| $name | $wall | $(ratio "$get_wall" "$wall") | $used | $(ratio "$get_cpu" "$used") |"
done
