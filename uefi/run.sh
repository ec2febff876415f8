#!/usr/bin/env bash
# Cargo runner for qcow2.efi: boots QEMU with stock UEFI firmware, loads the
# driver from a small FAT disk and boots the operating system inside a QCOW2
# image.
#
#   run.sh DRIVER.efi                 demo: scripts/boot-disk.sh's disk as zstd qcow2
#   run.sh DRIVER.efi IMAGE           IMAGE attached as a raw virtio-blk drive
#                                     (the guest sees the QCOW2 bytes)
#   run.sh DRIVER.efi --file IMAGE    IMAGE and the backing/data files it names
#                                     (found beside it on the host) copied to
#                                     the driver's FAT disk and attached as
#                                     files through \qcow2.cfg
#   run.sh DRIVER.efi --raw DISK      DISK booted directly by the firmware,
#                                     without the driver: the baseline for
#                                     boot times
#   run.sh DRIVER.efi --driver-option IMAGE
#                                     as a real machine would: a first boot
#                                     adds a Driver#### variable with the
#                                     shell's `bcfg driver add` and powers
#                                     off; the second boot (same VARS) must
#                                     boot IMAGE's ESP from the firmware's
#                                     boot manager, the firmware having
#                                     loaded the driver by itself: reaching
#                                     the shell is a failure
#   run.sh DRIVER.efi --driver-option --file IMAGE
#                                     the same with IMAGE attached as a file
#                                     on a GPT stick (one FAT32 partition,
#                                     PARTUUID $QCOW2_UEFI_STICK_PARTUUID or
#                                     a fixed one); the first boot also adds
#                                     a Boot#### for the image's ESP, first
#                                     in BootOrder (`efibootmgr --create`
#                                     on a real machine)
#
# Cargo calls it as `runner` (uefi/.cargo/config.toml) with the driver first.
# The architecture comes from the PE machine field, so `--target
# aarch64-unknown-uefi` needs nothing else.
#
# The driver disk's startup.nsh (CRLF, run by the UEFI Shell after its
# 5-second countdown) finds the disk by a
# tag file, loads the driver, reconnects, and runs \EFI\BOOT\BOOTX64.EFI
# (BOOTAA64.EFI) from the first file system holding it: the driver disk
# holds no \EFI\BOOT, so that is the image's ESP.
#
# The serial console goes to stdout. Exit 0 when the guest powers off (QEMU
# exits 0 by itself). Exit 1 with a message when a line says the boot
# failed (the driver's `qcow2.efi: error:`, this script's own
# `qcow2-runner: error:`, a driver panic, a kernel panic), when QEMU fails,
# or on a timeout (QCOW2_UEFI_TIMEOUT seconds, default 300).
# The last stderr line gives the seconds from QEMU's start to the OS loader's
# start, to the marker of scripts/boot-disk.sh (when seen) and to QEMU's exit.
#
# QCOW2_UEFI_SMP=N gives the guest N CPUs (default 1).
#
# QCOW2_UEFI_RECONNECT=1 adds `reconnect -r` after loading the driver: the
# driver is stopped and started again before the boot.
#
# Work files (driver disk, VARS copy, console log, demo image) are kept in
# target/uefi-run/ARCH of the repository, or in $QCOW2_UEFI_WORK.

set -euo pipefail

readonly TIMEOUT="${QCOW2_UEFI_TIMEOUT:-300}"
readonly SETUP_HINT="run scripts/setup.sh (as root), or: apt-get install -y qemu-system-x86 qemu-system-arm qemu-utils ovmf qemu-efi-aarch64 mtools dosfstools"

die() {
    echo "run.sh: error: $*" >&2
    exit 1
}

[[ $# -ge 1 ]] || die "usage: run.sh DRIVER.efi [IMAGE | --file IMAGE | --raw DISK | --driver-option IMAGE]"
driver=$1
shift
[[ -f $driver ]] || die "no such driver: $driver"
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

# PE machine: 0x8664 = x86_64, 0xaa64 = aarch64.
pe_offset=$(od -An -tu4 -j60 -N4 "$driver" | tr -d ' ')
machine=$(od -An -tx2 -j$((pe_offset + 4)) -N2 "$driver" | tr -d ' ')
case $machine in
8664) arch=x86_64 boot_name=BOOTX64.EFI ;;
aa64) arch=aarch64 boot_name=BOOTAA64.EFI ;;
*) die "$driver: not an x86_64 or aarch64 PE image (machine $machine)" ;;
esac

mode=disk
# --driver-option --file IMAGE: the image attached as a file, the driver
# loaded from Driver0000.
as_file=
case ${1:-} in
--file) mode=file && shift ;;
--raw) mode=raw && shift ;;
--driver-option)
    mode=option && shift
    [[ ${1:-} != --file ]] || { as_file=yes && shift; }
    ;;
esac
[[ $# -le 1 ]] || die "usage: run.sh DRIVER.efi [IMAGE | --file IMAGE | --raw DISK | --driver-option IMAGE]"
image=${1:-}

need=("qemu-system-$arch" qemu-img mkfs.vfat mcopy)
missing=()
for tool in "${need[@]}"; do
    PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] || die "missing ${missing[*]}: $SETUP_HINT"
PATH=$PATH:/usr/sbin:/sbin

case $arch in
x86_64)
    code=/usr/share/OVMF/OVMF_CODE_4M.fd vars=/usr/share/OVMF/OVMF_VARS_4M.fd
    qemu=(qemu-system-x86_64 -M q35)
    ;;
aarch64)
    code=/usr/share/AAVMF/AAVMF_CODE.fd vars=/usr/share/AAVMF/AAVMF_VARS.fd
    qemu=(qemu-system-aarch64 -M virt -cpu cortex-a57)
    ;;
esac
[[ -f $code && -f $vars ]] || die "no firmware at $code: $SETUP_HINT"

work="${QCOW2_UEFI_WORK:-$repo/target/uefi-run/$arch}"
# The stick's partition with --driver-option --file (a GPT partition GUID).
readonly STICK_PARTUUID="${QCOW2_UEFI_STICK_PARTUUID:-6a5c0e1f-3b2d-4c8e-9f70-1d2e3f4a5b6c}"
mkdir -p "$work"

# Plain `cargo run`: the boot disk converted to a zstd-compressed QCOW2,
# rebuilt when the raw disk changes.
if [[ -z $image ]]; then
    [[ $mode == disk ]] || die "--file, --raw and --driver-option need an image"
    raw=$("$repo/scripts/boot-disk.sh" "$arch")
    image="$work/demo.qcow2"
    if [[ ! -f $image || $raw -nt $image ]]; then
        echo "run.sh: converting $raw to $image (qcow2, zstd)" >&2
        qemu-img convert -f raw -O qcow2 -c -o compression_type=zstd "$raw" "$image.tmp"
        mv "$image.tmp" "$image"
    fi
fi
[[ -f $image ]] || die "no such image: $image"
image=$(cd "$(dirname "$image")" && pwd)/$(basename "$image")

# The chain of files a file-attached image needs, from `qemu-img info`:
# every backing file and external data file, each by its base name, since
# the driver looks for them beside the image.
chain_files() {
    qemu-img info --backing-chain --output=json "$1" | python3 -c '
import json, os, sys
for layer in json.load(sys.stdin):
    print(layer["filename"])
    data = layer.get("format-specific", {}).get("data", {}).get("data-file")
    if data:
        print(os.path.join(os.path.dirname(layer["filename"]), data))
'
}

# The FAT disk holding the driver (and, with --file, the image files).
make_driver_disk() {
    local disk=$1
    shift
    local dir="$work/fat"
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$driver" "$dir/qcow2.efi"
    echo "qcow2 runner driver disk" >"$dir/qcow2-runner.tag"
    local fs_list="" n
    for n in $(seq 0 19); do fs_list+=" fs$n"; done
    {
        echo "@echo -off"
        echo "for %a in$fs_list"
        echo "  if exist %a:\\qcow2-runner.tag then"
        echo "    load %a:\\qcow2.efi"
        echo "  endif"
        echo "endfor"
        if [[ -n ${QCOW2_UEFI_RECONNECT:-} ]]; then
            # Disconnects every driver (qcow2.efi's Stop detaches and frees
            # its disks) and connects them again (Start attaches anew).
            echo "reconnect -r"
        fi
        echo "connect -r"
        echo "map -r"
        echo "for %b in$fs_list"
        echo "  if exist %b:\\EFI\\BOOT\\$boot_name then"
        echo "    echo \"qcow2-runner: booting %b:\\EFI\\BOOT\\$boot_name\""
        echo "    %b:\\EFI\\BOOT\\$boot_name"
        echo "  endif"
        echo "endfor"
        echo "echo \"qcow2-runner: error: no file system with \\EFI\\BOOT\\$boot_name\""
    } | sed 's/$/\r/' >"$dir/startup.nsh"
    local bytes=$((8 << 20)) file
    if [[ $# -gt 0 ]]; then
        for file in "$@"; do
            bytes=$((bytes + $(stat -c %s "$file") * 11 / 10))
        done
        printf '\\%s\r\n' "$(basename "$1")" >"$dir/qcow2.cfg"
    fi
    rm -f "$disk"
    local kib=$(((bytes < (40 << 20) ? (40 << 20) : bytes) / 1024))
    local target=$disk
    if [[ $mode == option-file ]]; then
        # A stick as sold: a GPT with one FAT32 partition, whose PARTUUID
        # (fixed here, STICK_PARTUUID) qcow2root=efi names. 1 MiB before
        # it, 1 MiB after it for the backup GPT.
        truncate -s $(((kib + 2048) * 1024)) "$disk"
        printf 'label: gpt\nstart=2048, size=%d, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=%s\n' \
            $((kib * 2)) "$STICK_PARTUUID" | sfdisk -q "$disk"
        mkfs.vfat --offset=2048 -F 32 -n QCOW2DRV "$disk" "$kib" >/dev/null
        target="$disk@@1M"
    else
        mkfs.vfat -C -F 32 -n QCOW2DRV "$disk" "$kib" >/dev/null
    fi
    mcopy -i "$target" "$dir"/* ::/
    for file in "$@"; do
        mcopy -i "$target" "$file" "::/$(basename "$file")"
    done
}

drives=()
[[ $mode != option || -z $as_file ]] || mode=option-file
case $mode in
disk | option)
    make_driver_disk "$work/driver.img"
    drives+=(-drive "file=$image,format=raw,if=virtio,readonly=on")
    drives+=(-drive "file=$work/driver.img,format=raw,if=virtio,readonly=on")
    ;;
file | option-file)
    files=()
    while IFS= read -r file; do files+=("$file"); done < <(chain_files "$image")
    make_driver_disk "$work/driver.img" "${files[@]}"
    drives+=(-drive "file=$work/driver.img,format=raw,if=virtio,readonly=on")
    ;;
raw)
    drives+=(-drive "file=$image,format=raw,if=virtio,readonly=on")
    ;;
esac

stick_target=$work/driver.img
[[ $mode != option-file ]] || stick_target="$work/driver.img@@1M"
cp "$vars" "$work/vars.fd"
qemu+=(-accel tcg -m 512 -smp "${QCOW2_UEFI_SMP:-1}" -nographic -no-reboot -net none
    -drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
    -drive "if=pflash,format=raw,unit=1,file=$work/vars.fd"
    "${drives[@]}")

# --driver-option: the first boot writes Driver0000 into the VARS copy.
# With --file also a Boot#### for the image's ESP, first in BootOrder, as
# `efibootmgr --create` does on a real machine: without one, the firmware's
# boot manager makes an option for the attached image by itself, but
# appends it to BootOrder, after the options it already had (here the EFI
# Shell, which then always starts first; on a PC, the installed system).
if [[ $mode == option* ]]; then
    fs_list=""
    for n in $(seq 0 19); do fs_list+=" fs$n"; done
    {
        echo "@echo -off"
        if [[ $mode == option-file ]]; then
            # The driver loaded by hand for once, to find the image's ESP.
            echo "for %a in$fs_list"
            echo "  if exist %a:\\qcow2-runner.tag then"
            echo "    load %a:\\qcow2.efi"
            echo "  endif"
            echo "endfor"
            echo "connect -r"
            echo "map -r"
            echo "for %b in$fs_list"
            echo "  if exist %b:\\EFI\\BOOT\\$boot_name then"
            echo "    bcfg boot add 0 %b:\\EFI\\BOOT\\$boot_name \"image ESP\""
            echo "  endif"
            echo "endfor"
            echo "bcfg boot dump"
        fi
        echo "for %a in$fs_list"
        echo "  if exist %a:\\qcow2-runner.tag then"
        echo "    bcfg driver add 0 %a:\\qcow2.efi \"qcow2.efi\""
        echo "  endif"
        echo "endfor"
        echo "bcfg driver dump"
        echo "reset -s"
    } | sed 's/$/\r/' >"$work/install.nsh"
    mcopy -o -i "$stick_target" "$work/install.nsh" ::/startup.nsh
    echo "run.sh: first boot: adding Driver0000 with bcfg driver add" >&2
    if ! timeout "$TIMEOUT" "${qemu[@]}" </dev/null >"$work/install.log" 2>&1; then
        cat "$work/install.log"
        die "the boot that adds Driver0000 failed"
    fi
    grep -qaE "Desc +- qcow2.efi" "$work/install.log" || {
        cat "$work/install.log"
        die "bcfg did not add Driver0000"
    }
    [[ $mode != option-file ]] || grep -qaE "Desc +- image ESP" "$work/install.log" || {
        cat "$work/install.log"
        die "bcfg did not add a Boot#### for the image's ESP"
    }
    # Reaching the shell on the second boot means the boot manager did not
    # boot the image by itself.
    printf '%s\r\n' "echo \"qcow2-runner: error: the boot manager did not boot the image with the driver loaded from Driver0000\"" >"$work/install.nsh"
    mcopy -o -i "$stick_target" "$work/install.nsh" ::/startup.nsh
    echo "run.sh: second boot: the firmware loads qcow2.efi from Driver0000" >&2
fi

marker="QCOW2-BOOT-MARKER: reached init"
now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
log="$work/console.log"
: >"$log"
start=$(now_ms)
"${qemu[@]}" </dev/null >"$log" 2>&1 &
qemu_pid=$!
tail -n +1 -f --pid="$qemu_pid" "$log" &
tail_pid=$!
cleanup() {
    kill "$qemu_pid" 2>/dev/null || true
}
trap cleanup EXIT

# When the OS loader starts: the shell script's line, or, booting raw,
# the boot manager's.
case $mode in
raw | option*) loader_line="BdsDxe: starting Boot" ;;
*) loader_line="qcow2-runner: booting" ;;
esac
loader_ms=
marker_ms=
failure=
failure_lines="qcow2\.efi: error:|qcow2-runner: error:|\[PANIC\]|Kernel panic"
while :; do
    if [[ -z $loader_ms ]] && grep -a "$loader_line" "$log" | grep -qva "EFI Internal Shell"; then
        loader_ms=$(($(now_ms) - start))
    fi
    if [[ -z $marker_ms ]] && grep -qa "$marker" "$log"; then
        marker_ms=$(($(now_ms) - start))
    fi
    if line=$(grep -m1 -a -E "$failure_lines" "$log"); then
        failure=$line
        break
    fi
    kill -0 "$qemu_pid" 2>/dev/null || break
    if (($(now_ms) - start > TIMEOUT * 1000)); then
        failure="timeout: the guest did not power off within $TIMEOUT s"
        break
    fi
    sleep 0.2
done
end_ms=$(($(now_ms) - start))
if [[ -n $failure ]]; then
    # The line may have been caught half-written: let the rest arrive.
    sleep 0.5
    failure=$(grep -m1 -a -E "$failure_lines" "$log" | tr -d '\r') || true
    kill "$qemu_pid" 2>/dev/null || true
fi
wait "$qemu_pid" && status=0 || status=$?
wait "$tail_pid" 2>/dev/null || true
timing="loader not started"
[[ -z $loader_ms ]] || timing="loader started after $(seconds "$loader_ms") s"
if [[ -n $marker_ms ]]; then
    timing+=", marker after $(seconds "$marker_ms") s"
    [[ -z $loader_ms ]] || timing+=" ($(seconds $((marker_ms - loader_ms))) s from loader to marker)"
else
    timing+=", marker not seen"
fi
timing+=", QEMU ended after $(seconds "$end_ms") s"
[[ -z $failure ]] || die "$failure ($timing)"
[[ $status == 0 ]] || die "QEMU exited with status $status ($timing)"
echo "run.sh: $arch: guest powered off: $timing" >&2
