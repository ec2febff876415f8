#!/usr/bin/env bash
# Cargo runner for the firmware: boots the ELF in QEMU on a QCOW2 image.
#
#   run.sh <firmware.elf>                          the default demo image
#   run.sh <firmware.elf> <image> [backing...]     that image; its backing
#                                                  chain is found with
#                                                  `qemu-img info` unless
#                                                  the backing files are given
#   ... --file N:/PATH [--file ...]                hash these files inside the
#                                                  image instead of the whole
#                                                  disk (`N:` the partition)
#   ... --passphrase-file PATH                     unlock encrypted images
#                                                  (the image and its backing
#                                                  files) with the file's
#                                                  bytes, verbatim, as QEMU's
#                                                  `--object secret,file=PATH`
#
# The --file locations and the passphrase reach the firmware on one more
# read-only disk, the control disk, attached last with the serial
# "qcow2-demo-control": one `key: value` line per request (`file: N:/PATH`,
# `passphrase-hex: <hex of the file's bytes>`), padded with zeros to whole
# sectors. firmware/src/control.rs defines the format; the file is made
# private (mktemp) and removed when QEMU has stopped.
#
# Cargo calls it as `runner` (firmware/.cargo/config.toml) with the ELF
# first and the arguments after `--` next. The architecture comes from the
# ELF's e_machine, so `--target aarch64-unknown-none` needs nothing else.
#
# Every file is attached read-only as a *raw* virtio-blk drive (the guest
# reads the qcow2 bytes itself), in chain order: the image first, then its
# backing file, then that file's backing, ... QEMU puts the first device in
# the highest virtio-mmio slot, which is how the firmware knows the image.
# Each disk's virtio-blk serial is its file's base name, cut to 20 bytes
# (the field's size); the firmware finds a backing file by that serial.
#
# The firmware reports success by an exit value that QEMU turns into
# status 33 (isa-debug-exit's (0x10 << 1) | 1 on x86, semihosting exit(33)
# on arm); this script maps 33 to 0 and everything else to a failure, so a
# QEMU that stops for any other reason never counts as success.
#
# Environment: QCOW2_FW_TIMEOUT (seconds, default 120), QCOW2_FW_MEMORY
# (guest RAM, default 128M), QCOW2_FW_QEMU_ARGS (extra QEMU arguments).

set -euo pipefail

readonly APT_COMMAND="apt-get update && apt-get install -y --allow-downgrades qemu-system-x86 qemu-system-arm qemu-utils/bookworm"
readonly SUCCESS_STATUS=33
readonly TIMEOUT="${QCOW2_FW_TIMEOUT:-120}"
readonly MEMORY="${QCOW2_FW_MEMORY:-128M}"

die() {
    echo "run.sh: $*" >&2
    exit 2
}

[[ $# -ge 1 ]] || die "usage: run.sh <firmware.elf> [image [backing...]] [--file N:/PATH]... [--passphrase-file PATH]"
elf=$1
shift
[[ -f $elf ]] || die "no such firmware ELF: $elf"

# Separate the --file requests and the passphrase from the image and its
# backing files.
files=()
passphrase_file=
positional=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --passphrase-file)
        [[ $# -ge 2 ]] || die "--passphrase-file needs a path"
        passphrase_file=$2
        shift 2
        ;;
    --passphrase-file=*)
        passphrase_file=${1#--passphrase-file=}
        shift
        ;;
    --file)
        [[ $# -ge 2 ]] || die "--file needs a location (N:/PATH or /PATH)"
        files+=("$2")
        shift 2
        ;;
    --file=*)
        files+=("${1#--file=}")
        shift
        ;;
    *)
        positional+=("$1")
        shift
        ;;
    esac
done
set -- ${positional[@]+"${positional[@]}"}
if [[ -n $passphrase_file ]]; then
    [[ -f $passphrase_file && -r $passphrase_file ]] || die "cannot read the passphrase file: $passphrase_file"
fi

# e_machine: 62 = EM_X86_64, 183 = EM_AARCH64.
machine=$(od -An -tu2 -j18 -N2 "$elf" | tr -d ' ')
case $machine in
62) arch=x86_64 ;;
183) arch=aarch64 ;;
*) die "$elf: not an x86_64 or aarch64 ELF (e_machine $machine)" ;;
esac

# QEMU itself: install it where we can, otherwise say how.
need=("qemu-system-$arch" qemu-img)
[[ $# -eq 0 ]] && need+=(qemu-io) # only the default image is written by qemu-io
missing=()
for tool in "${need[@]}"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "run.sh: ${missing[*]} missing; installing: $APT_COMMAND" >&2
        bash -c "$APT_COMMAND" >&2 || die "installing QEMU failed; run: $APT_COMMAND"
    else
        die "${missing[*]} not found; install QEMU 7.2 system emulators and tools, e.g. as root: $APT_COMMAND"
    fi
fi

# The default demo image, cached next to the build output:
# <target-dir>/demo/, the ELF being <target-dir>/<triple>/<profile>/<name>.
default_image() {
    local demo_dir image version=1
    demo_dir="$(cd "$(dirname "$elf")/../.." && pwd)/demo"
    image="$demo_dir/demo-v$version.qcow2"
    if [[ ! -f $image ]]; then
        mkdir -p "$demo_dir"
        local partial="$image.partial.$$"
        # 64 MiB, qcow2 v3, 64 KiB clusters: patterned data (most of the
        # disk, so the throughput numbers mean something), a zeroed range
        # (zero clusters), one compressed cluster, and an unallocated tail.
        qemu-img create -q -f qcow2 -o compat=1.1,cluster_size=65536 "$partial" 64M
        qemu-io -f qcow2 \
            -c "write -q -P 0x11 0 16M" \
            -c "write -q -P 0x22 16M 16M" \
            -c "write -q -z 32M 4M" \
            -c "write -q -P 0x33 36M 24M" \
            -c "write -q -c -P 0x44 60M 64k" \
            "$partial" >/dev/null
        mv "$partial" "$image"
        echo "run.sh: made the demo image $image" >&2
    fi
    printf '%s\n' "$image"
}

if [[ $# -eq 0 ]]; then
    set -- "$(default_image)"
fi
[[ -f $1 ]] || die "no such image: $1"

disks=("$@")
if [[ $# -eq 1 ]]; then
    # The chain as QEMU resolves it (relative backing names are relative
    # to the overlay's directory): one "image: <path>" line per member.
    mapfile -t disks < <(qemu-img info --backing-chain -U "$1" | sed -n 's/^image: //p')
    [[ ${#disks[@]} -ge 1 ]] || die "qemu-img info found no image in $1"
    disks[0]=$1
fi

# The control disk (format: firmware/src/control.rs), only when there is
# something to ask.
control=
if [[ ${#files[@]} -gt 0 || -n $passphrase_file ]]; then
    control=$(mktemp "${TMPDIR:-/tmp}/qcow2-demo-control.XXXXXX")
    trap 'rm -f "$control"' EXIT
    {
        for file in ${files[@]+"${files[@]}"}; do
            printf 'file: %s\n' "$file"
        done
        if [[ -n $passphrase_file ]]; then
            printf 'passphrase-hex: %s\n' "$(od -An -v -tx1 "$passphrase_file" | tr -d ' \n')"
        fi
    } >"$control"
    # The firmware reads at most 64 KiB of it (firmware/src/control.rs).
    [[ $(stat -c %s "$control") -le 65536 ]] || die "the --file list and passphrase take more than 64 KiB"
    truncate -s %512 "$control"
fi

# QEMU's option syntax doubles commas inside values.
escape() { printf '%s' "${1//,/,,}"; }

drive_args=()
index=0
for disk in "${disks[@]}"; do
    [[ -f $disk ]] || die "no such backing file: $disk"
    name=$(basename -- "$disk")
    # 20 bytes, not characters: the firmware compares bytes (serial_for).
    serial=$(printf '%s' "$name" | head -c 20)
    drive_args+=(
        -drive "file=$(escape "$disk"),format=raw,if=none,id=disk$index,readonly=on"
        -device "virtio-blk-device,drive=disk$index,serial=$(escape "$serial")"
    )
    index=$((index + 1))
done
if [[ -n $control ]]; then
    drive_args+=(
        -drive "file=$(escape "$control"),format=raw,if=none,id=disk$index,readonly=on"
        -device "virtio-blk-device,drive=disk$index,serial=qcow2-demo-control"
    )
fi

# Accelerator: KVM when it is hardware-assisted, else TCG. A /dev/kvm on a
# host CPU without vmx/svm is a paravirtual KVM (PVM, for nested sandboxes):
# it runs a guest that is not PVM-aware about 1000 times slower than
# native (measured: a register-only loop at ~7 us per iteration), far
# slower than TCG. QCOW2_FW_ACCEL overrides ("kvm", "tcg", ...).
accel_args() {
    local accel=${QCOW2_FW_ACCEL:-}
    if [[ -z $accel ]]; then
        if [[ $(uname -m) == "$arch" ]] && grep -qwE 'vmx|svm' /proc/cpuinfo 2>/dev/null; then
            accel=kvm
        else
            accel=tcg
        fi
    fi
    if [[ $accel == kvm ]]; then
        printf '%s\n' -accel kvm -accel tcg # TCG if KVM cannot be opened
    else
        printf '%s\n' -accel "$accel"
    fi
}
mapfile -t accel < <(accel_args)

case $arch in
x86_64)
    qemu=(qemu-system-x86_64 -M microvm "${accel[@]}"
        -device isa-debug-exit,iobase=0xf4,iosize=0x04)
    ;;
aarch64)
    # Under KVM (an arm64 host) the CPU model must be the host's: `max`.
    cpu=cortex-a72
    [[ ${accel[1]} == kvm ]] && cpu=max
    qemu=(qemu-system-aarch64 -M virt "${accel[@]}" -cpu "$cpu"
        -semihosting-config enable=on,target=native)
    ;;
esac

# Word splitting of the extra arguments is intended.
# shellcheck disable=SC2206
extra=(${QCOW2_FW_QEMU_ARGS:-})

status=0
# --foreground: QEMU stays in the terminal's process group, so Ctrl-C
# reaches it; stdin is not needed (the firmware reads no input).
timeout --foreground -k 5 "$TIMEOUT" \
    "${qemu[@]}" -m "$MEMORY" -nodefaults -no-user-config -nographic -no-reboot \
    -serial stdio "${drive_args[@]}" "${extra[@]}" -kernel "$elf" </dev/null || status=$?

case $status in
"$SUCCESS_STATUS") exit 0 ;;
124 | 137)
    echo "run.sh: QEMU did not finish within ${TIMEOUT}s" >&2
    exit 124
    ;;
*)
    echo "run.sh: firmware failed (QEMU exit status $status)" >&2
    exit 1
    ;;
esac
