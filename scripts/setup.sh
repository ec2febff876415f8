#!/usr/bin/env bash
# Installs what the tests and the demo need and a fresh machine lacks: the
# pinned Rust toolchain with its targets, QEMU 7.2's emulators and tools, the
# stock UEFI firmware and the tools that build the test disks, then builds
# the UEFI boot disks. Where it cannot install (not root, no apt-get), it
# stops and names the command.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reads rust-toolchain.toml and installs that toolchain with its targets and components.
rustup toolchain install >/dev/null

# install WHAT APT_ARGS...: runs `apt-get install APT_ARGS` as root, or stops
# naming the command. The lock timeout waits for another apt-get (a parallel setup).
install() {
    local what=$1
    shift
    local command="apt-get update && apt-get install -y $*"
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "setup: installing $what" >&2
        DEBIAN_FRONTEND=noninteractive bash -c "${command//apt-get /apt-get -o DPkg::Lock::Timeout=600 }" >/dev/null
    else
        echo "setup: missing $what; install them with (as root):" >&2
        echo "    $command" >&2
        exit 1
    fi
}

missing=()
for tool in qemu-img qemu-io qemu-system-x86_64 qemu-system-aarch64; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    # The emulators of the distribution's own QEMU are not installable here;
    # QEMU 7.2 from bookworm provides all four, and the pin keeps qemu-img.
    install "QEMU (missing: ${missing[*]})" --allow-downgrades \
        qemu-system-x86 qemu-system-arm qemu-utils/bookworm
fi

# The UEFI boot tests: stock firmware for both architectures, GRUB's x86_64
# modules, busybox and the x86_64 kernel; and the tools that build GPT/MBR
# disks, ext2/3/4 and FAT file systems without root (the boot disks and the
# file tests' disks of testkit/src/make_disks.rs). scripts/boot-disk.sh fetches
# the arm64 pieces itself (no arm64 architecture is added to dpkg). The `qcow`
# tool's zstd decoder links the system's libzstd, as QEMU does (libzstd-dev).
# `qcow serve`'s tests read its exports with libnbd's nbdinfo and nbdcopy
# (libnbd-bin), and over TLS with certificates made by openssl; its benchmark
# (testkit's nbd-bench) reads with fio's nbd engine. The Debian package is
# built with dpkg-deb and dpkg-shlibdeps (dpkg-dev), and the root boot test's
# Debian root with mmdebstrap (testkit/src/root_disk.rs). The tests of reading
# images over HTTP serve them with nginx (nginx-light, started by the tests
# themselves on a local port). The firmware and the UEFI driver build libzstd's decoder for
# their targets with clang (feature `zstd-c-nostd`).
packages=(ovmf qemu-efi-aarch64 grub-efi-amd64-bin mtools dosfstools fdisk
    e2fsprogs busybox-static cpio linux-image-cloud-amd64 libzstd-dev pkg-config
    libnbd-bin openssl fio dpkg-dev mmdebstrap nginx-light clang)
mapfile -t installed < <(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null |
    sed -n 's/ install ok installed$//p')
missing=()
for pkg in "${packages[@]}"; do
    [[ " ${installed[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    install "the boot and disk test packages (missing: ${missing[*]})" \
        --no-install-recommends "${missing[@]}"
fi

# Builds (or finds up to date in target/boot-disk/) the boot disks of both
# architectures, so that a test run starts with them and any download error
# shows here, once.
for arch in x86_64 aarch64; do
    scripts/boot-disk.sh "$arch" >/dev/null
done
