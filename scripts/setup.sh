#!/usr/bin/env bash
# Installs what the tests and the demo need and a fresh machine lacks: the
# pinned Rust toolchain with its targets, and QEMU 7.2's emulators and tools.
# Where it cannot install (not root, no apt-get), it stops and names the command.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reads rust-toolchain.toml and installs that toolchain with its targets and components.
rustup toolchain install >/dev/null

qemu_tools=(qemu-img qemu-io qemu-system-x86_64 qemu-system-aarch64)
missing=()
for tool in "${qemu_tools[@]}"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    # The emulators of the distribution's own QEMU are not installable here;
    # QEMU 7.2 from bookworm provides all four, and the pin keeps qemu-img.
    install="apt-get update && apt-get install -y --allow-downgrades qemu-system-x86 qemu-system-arm qemu-utils/bookworm"
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "setup: installing QEMU (missing: ${missing[*]})" >&2
        DEBIAN_FRONTEND=noninteractive bash -c "$install" >/dev/null
    else
        echo "setup: missing ${missing[*]}; install them with (as root):" >&2
        echo "    $install" >&2
        exit 1
    fi
fi

# The UEFI boot tests: stock firmware for both architectures, GRUB's x86_64
# modules, the tools that build a GPT disk without root, busybox and the
# x86_64 kernel. scripts/boot-disk.sh fetches the arm64 pieces itself (no
# arm64 architecture is added to dpkg) and builds the disks into target/.
boot_packages=(ovmf qemu-efi-aarch64 grub-efi-amd64-bin mtools dosfstools fdisk
    e2fsprogs busybox-static cpio linux-image-cloud-amd64)
mapfile -t installed < <(dpkg-query -W -f='${Package} ${Status}\n' "${boot_packages[@]}" 2>/dev/null |
    sed -n 's/ install ok installed$//p')
missing=()
for pkg in "${boot_packages[@]}"; do
    [[ " ${installed[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    install="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "setup: installing the UEFI boot test packages (missing: ${missing[*]})" >&2
        # The lock timeout waits for another apt-get (a parallel setup).
        DEBIAN_FRONTEND=noninteractive bash -c "${install//apt-get /apt-get -o DPkg::Lock::Timeout=600 }" >/dev/null
    else
        echo "setup: missing ${missing[*]}; install them with (as root):" >&2
        echo "    $install" >&2
        exit 1
    fi
fi

# Builds (or finds up to date in target/boot-disk/) the boot disks of both
# architectures, so that a test run starts with them and any download error
# shows here, once.
for arch in x86_64 aarch64; do
    scripts/boot-disk.sh "$arch" >/dev/null
done
