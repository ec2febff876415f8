#!/usr/bin/env bash
# Measures boot times to the marker of scripts/boot-disk.sh under the stock
# firmware: the raw disk booted by the firmware itself (run.sh --raw), and
# the same disk converted to QCOW2 (uncompressed, deflate, zstd) booted
# through qcow2.efi (run.sh IMAGE), and the zstd image with the driver
# loaded from a Driver#### variable and booted by the boot manager, like the
# raw disk (run.sh --driver-option IMAGE; the boot adding the variable is
# not counted). Prints one line per boot; the README's table is made from
# these lines.
#
#     uefi/measure.sh ARCH [ROUNDS [KINDS]]
#
# ARCH = x86_64 | aarch64, ROUNDS default 3, KINDS default
# "raw plain deflate zstd zstd-option".
#
# Builds the driver (dev profile, as `cargo run` does) first. Images go to
# target/uefi-measure/ARCH/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
arch=${1:?usage: measure.sh x86_64|aarch64 [ROUNDS]}
rounds=${2:-3}
target=$arch-unknown-uefi
(cd "$here" && cargo build --quiet --target "$target")
driver=$here/target/$target/debug/qcow2.efi
raw=$("$repo/scripts/boot-disk.sh" "$arch")
dir=$repo/target/uefi-measure/$arch
mkdir -p "$dir"
qemu-img convert -f raw -O qcow2 "$raw" "$dir/plain.qcow2"
qemu-img convert -f raw -O qcow2 -c -o compression_type=zlib "$raw" "$dir/deflate.qcow2"
qemu-img convert -f raw -O qcow2 -c -o compression_type=zstd "$raw" "$dir/zstd.qcow2"
for round in $(seq "$rounds"); do
    for kind in ${3:-raw plain deflate zstd zstd-option}; do
        case $kind in
        raw) args=(--raw "$raw") ;;
        zstd-option) args=(--driver-option "$dir/zstd.qcow2") ;;
        *) args=("$dir/$kind.qcow2") ;;
        esac
        line=$(QCOW2_UEFI_WORK="$dir/run" "$here/run.sh" "$driver" "${args[@]}" 2>&1 >/dev/null | tail -1)
        echo "$arch round $round $kind: $line"
    done
done
