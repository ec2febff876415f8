#!/usr/bin/env bash
# Builds the Debian package `qcow2` with dpkg-deb (cargo-deb would need its
# own build from crates.io; what it would do is this page): /usr/bin/qcow,
# the initramfs-tools hook and boot scripts of root on a QCOW2 file, and the
# UEFI driver of the architecture under /usr/lib/qcow2/. Its postinst
# refreshes the initramfs, as packages with initramfs hooks do. Prints the
# package's path as its last line.
#
#   scripts/package.sh [--arch amd64|arm64] [OUT_DIR]
#                      (default: the host's architecture, target/package)
#
# For the host's architecture, qcow links the system's libzstd (feature
# `zstd-c`, as QEMU does) and dpkg-shlibdeps finds its dependencies.
#
# arm64 on an amd64 host is a cross build: qcow for aarch64-unknown-linux-gnu
# (the rustup target, added here if missing; Debian's gcc-aarch64-linux-gnu
# and libc6-dev-arm64-cross link it, and the error names them if missing)
# with the crate's vendored libzstd decoder (feature `zstd-c-nostd`) instead
# of the system's, so that no arm64 libzstd-dev is needed. Its Depends come
# from dpkg-shlibdeps over the cross toolchain's libraries
# (/usr/aarch64-linux-gnu/lib): they are built from the same Debian sources
# and versions as the arm64 libraries, and their shlibs and symbols files
# name the cross packages (`libc6:arm64`, `libgcc-s1-arm64-cross`), which
# are mapped back to the arm64 package names (`libc6`, `libgcc-s1`). That is
# dpkg's own reading of the binary's DT_NEEDED and symbol versions, with no
# arm64 architecture added to dpkg.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

host_arch=$(dpkg --print-architecture)
arch=$host_arch
if [[ ${1:-} == --arch ]]; then
    [[ -n ${2:-} ]] || { echo "package: --arch needs amd64 or arm64" >&2; exit 1; }
    arch=$2
    shift 2
fi
out=${1:-$root/target/package}

case "$arch" in
amd64) rust_target=x86_64-unknown-linux-gnu uefi_target=x86_64-unknown-uefi gnu=x86_64-linux-gnu ;;
arm64) rust_target=aarch64-unknown-linux-gnu uefi_target=aarch64-unknown-uefi gnu=aarch64-linux-gnu ;;
*)
    echo "package: no UEFI target for Debian architecture $arch (amd64 and arm64 are built)" >&2
    exit 1
    ;;
esac
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' cli/Cargo.toml | head -n 1)
[[ -n $version ]] || { echo "package: no version in cli/Cargo.toml" >&2; exit 1; }

strip=strip
shlibdeps_args=()
if [[ $arch == "$host_arch" ]]; then
    echo "package: building qcow (release)" >&2
    cargo build --quiet --release -p qcow2-cli
    qcow=target/release/qcow
else
    [[ $host_arch == amd64 && $arch == arm64 ]] || {
        echo "package: cross builds are amd64 to arm64 only (host $host_arch, asked $arch)" >&2
        exit 1
    }
    # The C library comes with the compiler only as a recommendation.
    [[ -x $(command -v "$gnu-gcc") && -e /usr/$gnu/lib/libc.so.6 ]] || {
        echo "package: no $gnu-gcc or no $arch C library to link qcow for $arch;" \
            "run: apt-get install -y gcc-$gnu libc6-dev-$arch-cross" >&2
        exit 1
    }
    rustup target list --installed | grep -qx "$rust_target" || rustup target add "$rust_target" >&2
    echo "package: cross-building qcow for $rust_target (release, vendored libzstd)" >&2
    target_env=${rust_target//-/_}
    env "CARGO_TARGET_${target_env^^}_LINKER=$gnu-gcc" \
        cargo build --quiet --release -p qcow2-cli --target "$rust_target" \
        --no-default-features --features zstd-c-nostd
    qcow=target/$rust_target/release/qcow
    strip=$gnu-strip
    shlibdeps_args=("-l/usr/$gnu/lib")
fi
echo "package: building the UEFI driver for $uefi_target (release)" >&2
(cd uefi && cargo build --quiet --release --target "$uefi_target")

name=qcow2_${version}_${arch}
stage=$(mktemp -d "${TMPDIR:-/tmp}/qcow2-package.XXXXXX")
trap 'rm -rf "$stage"' EXIT
tree=$stage/$name
install -D -m 0755 "$qcow" "$tree/usr/bin/qcow"
"$strip" --strip-unneeded "$tree/usr/bin/qcow"
install -D -m 0644 "uefi/target/$uefi_target/release/qcow2.efi" "$tree/usr/lib/qcow2/qcow2.efi"
initramfs=usr/share/initramfs-tools
install -D -m 0755 packaging/initramfs-tools/hooks/qcow2root "$tree/$initramfs/hooks/qcow2root"
for stage_dir in local-top local-bottom; do
    install -D -m 0755 "packaging/initramfs-tools/scripts/$stage_dir/qcow2root" \
        "$tree/$initramfs/scripts/$stage_dir/qcow2root"
done
install -D -m 0644 LICENSE-MIT "$tree/usr/share/doc/qcow2/copyright"
cat LICENSE-APACHE >>"$tree/usr/share/doc/qcow2/copyright"

# The shared libraries qcow links, as dpkg-shlibdeps finds their packages
# (it wants a debian/control to exist: a minimal one in the stage). A cross
# build's libraries are the cross toolchain's: their packages' names are
# mapped back to the arm64 ones (the header says why).
mkdir -p "$stage/debian"
printf 'Source: qcow2\n\nPackage: qcow2\nArchitecture: any\n' >"$stage/debian/control"
shlibs=$(cd "$stage" && dpkg-shlibdeps "${shlibdeps_args[@]}" -O "$name/usr/bin/qcow" 2>/dev/null |
    sed -n -e "s/:$arch//g" -e "s/-$arch-cross//g" -e 's/^shlibs:Depends=//p')
[[ -n $shlibs ]] || { echo "package: dpkg-shlibdeps found no dependencies of qcow" >&2; exit 1; }

mkdir -p "$tree/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$tree" | cut -f1)
cat >"$tree/DEBIAN/control" <<CONTROL
Package: qcow2
Version: $version
Architecture: $arch
Maintainer: qcow2-reader developers <qcow2-reader@invalid>
Installed-Size: $size
Depends: $shlibs, coreutils
Recommends: initramfs-tools
Section: admin
Priority: optional
Description: QCOW2 images without QEMU: inspect, convert, serve, boot from
 qcow reads QCOW2 images (compressed, encrypted, backing chains) without
 QEMU: info, map, check, convert, and a read-only NBD server that also sets
 up the kernel's /dev/nbdN itself (serve --connect).
 .
 The initramfs-tools hook and scripts boot a root file system from a QCOW2
 file on a FAT, exFAT or ext4 partition: qcow2root=DEVICE:/PATH on the
 kernel command line, the root read-only under a tmpfs overlay.
 .
 /usr/lib/qcow2/qcow2.efi is the UEFI driver that lets firmware boot from
 such an image.
CONTROL
cat >"$tree/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
# The hook takes effect in the next initramfs: build it now, as packages
# shipping initramfs hooks do.
set -e
if [ "$1" = configure ] && command -v update-initramfs >/dev/null 2>&1; then
	update-initramfs -u
fi
POSTINST
cat >"$tree/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
# The hook is gone: rebuild the initramfs without it.
set -e
if [ "$1" = remove ] && command -v update-initramfs >/dev/null 2>&1; then
	update-initramfs -u
fi
POSTRM
chmod 0755 "$tree/DEBIAN/postinst" "$tree/DEBIAN/postrm"

# Reproducible: the same files give the same package bytes (the boot
# test's disk is rebuilt only when the package changes).
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 1704067200)
find "$tree" -exec touch -h -d "@$epoch" {} +
mkdir -p "$out"
SOURCE_DATE_EPOCH=$epoch dpkg-deb --root-owner-group --build "$tree" "$out/$name.deb" >&2
echo "$out/$name.deb"
