#!/usr/bin/env bash
# Boots a boot disk as a raw virtio drive under the stock firmware (OVMF on
# x86_64, AAVMF on aarch64; TCG, fresh VARS copy, -net none -no-reboot) and
# requires the marker line of scripts/boot-disk.sh. It is the baseline that a
# boot through the QCOW2 driver is compared with.
#
#     scripts/boot-raw.sh ARCH [DISK]     DISK defaults to scripts/boot-disk.sh ARCH
#
# The guest's console goes to stdout. The last stderr line gives the seconds
# from QEMU's start to the marker and to QEMU's exit. Exits 0 only when the
# marker appeared and QEMU then exited 0 by itself (the guest powered off);
# a timeout (BOOT_TIMEOUT seconds, default 120) is a failure.
set -euo pipefail

die() {
    echo "boot-raw: error: $*" >&2
    exit 1
}

[[ $# == 1 || $# == 2 ]] || die "usage: $0 x86_64|aarch64 [DISK]"
arch=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
disk=${2:-$("$repo/scripts/boot-disk.sh" "$arch")}
[[ -f $disk ]] || die "no disk at $disk"
timeout_s=${BOOT_TIMEOUT:-120}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case $arch in
x86_64)
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$tmp/vars.fd"
    qemu=(qemu-system-x86_64 -M q35
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd")
    ;;
aarch64)
    cp /usr/share/AAVMF/AAVMF_VARS.fd "$tmp/vars.fd"
    qemu=(qemu-system-aarch64 -M virt -cpu cortex-a57
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd")
    ;;
*) die "unknown architecture '$arch' (expected x86_64 or aarch64)" ;;
esac
qemu+=(-accel tcg -m 512 -nographic -no-reboot -net none
    -drive "if=pflash,format=raw,unit=1,file=$tmp/vars.fd"
    -drive "file=$disk,format=raw,if=virtio,readonly=on")

marker="QCOW2-BOOT-MARKER: reached init on $arch"
now_ms() { echo $(($(date +%s%N) / 1000000)); }
start=$(now_ms)
marker_ms=
while IFS= read -r line; do
    printf '%s\n' "$line"
    if [[ -z $marker_ms && $line == *"$marker"* ]]; then
        marker_ms=$(($(now_ms) - start))
    fi
done < <(timeout "$timeout_s" "${qemu[@]}" </dev/null 2>&1)
wait $! && status=0 || status=$?
end_ms=$(($(now_ms) - start))

seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
[[ $status != 124 ]] || die "timeout: no power-off within ${timeout_s} s (marker ${marker_ms:+seen}${marker_ms:-not seen})"
[[ -n $marker_ms ]] || die "QEMU exited with status $status without the line '$marker'"
[[ $status == 0 ]] || die "the marker appeared but QEMU exited with status $status"
echo "boot-raw: $arch: marker after $(seconds "$marker_ms") s, QEMU exited 0 after $(seconds "$end_ms") s" >&2
