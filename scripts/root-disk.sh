#!/usr/bin/env bash
# Builds the boot test's Debian disk for issue 22 and prints its path:
# a GPT disk whose root is a minimal Debian bookworm with systemd and this
# project's package installed (so its initramfs serves its root from a
# QCOW2 file), converted to a zstd-compressed QCOW2.
#
#     scripts/root-disk.sh PACKAGE.deb STICK_LABEL IMAGE_NAME
#
# Stdout: one line, the path of target/root-disk/x86_64/IMAGE_NAME; the
# kernel command line inside says qcow2root=LABEL=STICK_LABEL:/IMAGE_NAME,
# so the image must be copied to the root of a file system with that label;
# with STICK_LABEL `efi` it says qcow2root=efi (the image found through
# qcow2.efi's EFI variable, wherever it is).
# Rebuilt only when the package, this script or the arguments change (one
# cached disk per IMAGE_NAME).
#
#   partition 1  ESP (FAT16), GRUB (grub-mkimage, grub.cfg in a memdisk)
#                loading /vmlinuz and /initrd.img from the root
#   partition 2  ext4, label qcow2-debian: `mmdebstrap --variant=minbase`
#                bookworm with systemd-sysv, linux-image-cloud-amd64,
#                initramfs-tools, udev, kmod, zstd, the package installed
#                with apt-get, and a unit that prints
#                `QCOW2-BOOT-MARKER: reached init on x86_64 (multi-user.target ...)`
#                once multi-user.target is reached, then powers off.
#
# Needs root (mmdebstrap's chroot mode), mmdebstrap, the Debian mirror of
# the host's apt sources, grub-efi-amd64-bin, dosfstools, mtools, fdisk,
# e2fsprogs and qemu-img.
set -euo pipefail
shopt -s inherit_errexit
PATH=$PATH:/usr/sbin:/sbin
umask 022

log() { echo "root-disk: $*" >&2; }
die() {
    echo "root-disk: error: $*" >&2
    exit 1
}

[[ $# == 3 ]] || die "usage: $0 PACKAGE.deb STICK_LABEL IMAGE_NAME"
deb=$(realpath "$1")
stick_label=$2
image_name=$3
[[ -f $deb ]] || die "no package $deb"
for tool in mmdebstrap grub-mkimage mkfs.vfat mcopy sfdisk mkfs.ext4 qemu-img; do
    command -v "$tool" >/dev/null ||
        die "missing $tool; apt-get install -y mmdebstrap grub-efi-amd64-bin dosfstools mtools fdisk e2fsprogs qemu-utils"
done
[[ $(id -u) == 0 ]] || die "mmdebstrap's chroot mode needs root"

repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/target/root-disk/x86_64
image=$out/$image_name
mkdir -p "$out"
exec 9>"$out/lock"
flock 9

key=$({
    sha256sum <"$deb"
    sha256sum <"$0"
    echo "$stick_label $image_name"
} | sha256sum | cut -d' ' -f1)
if [[ -f $image && -f $image.key && $(cat "$image.key") == "$key" ]]; then
    log "up to date: $image"
    echo "$image"
    exit 0
fi
rm -f "$image.key"

readonly root_label=qcow2-debian
readonly esp_mib=8
readonly marker="QCOW2-BOOT-MARKER: reached init on x86_64"
qcow2root="LABEL=$stick_label:/$image_name"
# STICK_LABEL `efi`: the image found through qcow2.efi's EFI variable.
[[ $stick_label != efi ]] || qcow2root=efi
readonly cmdline="root=LABEL=$root_label ro console=ttyS0 panic=-1 qcow2root=$qcow2root"

tmp=$(mktemp -d "$out/build.XXXXXX")
[[ -d $tmp ]] || die "no build directory"
trap 'rm -rf "$tmp"' EXIT
mirror=$(apt-get indextargets --format '$(ORIGIN) $(REPO_URI)' 'Identifier: Packages' 2>/dev/null |
    awk '$1 == "Debian" && $2 !~ /security/ { print $2; exit }')
[[ -n $mirror ]] || mirror=http://deb.debian.org/debian/

cat >"$tmp/qcow2-marker.service" <<UNIT
[Unit]
Description=Boot test marker: multi-user.target reached, then power off
After=multi-user.target

[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/bin/sh -c 'echo "$marker (multi-user.target, / is \$(findmnt -no FSTYPE /), nbd0 \$(cat /sys/block/nbd0/size) sectors)"'
ExecStart=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
UNIT

log "mmdebstrap bookworm from $mirror"
mmdebstrap --variant=minbase --mode=root \
    --include=systemd-sysv,linux-image-cloud-amd64,initramfs-tools,udev,kmod,zstd \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="copy-in $deb /tmp" \
    --customize-hook="chroot \"\$1\" apt-get install -y /tmp/$(basename "$deb")" \
    --customize-hook="rm -f \"\$1\"/tmp/$(basename "$deb")" \
    --customize-hook="copy-in $tmp/qcow2-marker.service /etc/systemd/system" \
    --customize-hook='chroot "$1" systemctl enable qcow2-marker.service' \
    --customize-hook='echo qcow2-debian >"$1/etc/hostname"' \
    --customize-hook='printf "LABEL=qcow2-debian / ext4 ro 0 0\n" >"$1/etc/fstab"' \
    bookworm "$tmp/root" "$mirror" >&2
[[ -e $tmp/root/vmlinuz && -e $tmp/root/initrd.img ]] || die "no /vmlinuz or /initrd.img in the root"

log "GRUB and the ESP"
mkdir -p "$tmp/grub/boot/grub"
cat >"$tmp/grub/boot/grub/grub.cfg" <<GRUB
set timeout=0
if ! search --no-floppy --label --set=root $root_label; then
    echo "QCOW2-BOOT-ERROR: no file system labelled $root_label"
    halt
fi
linux /vmlinuz $cmdline
initrd /initrd.img
boot
GRUB
tar -C "$tmp/grub" --create --format=ustar -f "$tmp/memdisk.tar" boot
grub-mkimage --directory=/usr/lib/grub/x86_64-efi --format=x86_64-efi \
    --output="$tmp/BOOTX64.EFI" --prefix='(memdisk)/boot/grub' --memdisk="$tmp/memdisk.tar" \
    memdisk tar part_gpt fat ext2 normal linux boot search search_label test echo halt
mkfs.vfat -C -F 16 -s 1 -n ESP "$tmp/esp.img" $((esp_mib * 1024)) >/dev/null
mmd -i "$tmp/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$tmp/esp.img" "$tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

log "the ext4 root"
root_kib=$(du -sk "$tmp/root" | cut -f1)
root_mib=$((root_kib * 5 / 4 / 1024 + 64))
mkfs.ext4 -q -F -L "$root_label" -d "$tmp/root" "$tmp/root.img" "${root_mib}M" >&2
root_start=$((1 + esp_mib))
total_mib=$((root_start + root_mib + 1))
truncate -s "${total_mib}M" "$tmp/disk.raw"
sfdisk --quiet --no-reread --no-tell-kernel "$tmp/disk.raw" >&2 <<TABLE
label: gpt
unit: sectors
start=2048, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System Partition"
start=$((root_start * 2048)), size=$((root_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="$root_label"
TABLE
dd if="$tmp/esp.img" of="$tmp/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$tmp/root.img" of="$tmp/disk.raw" bs=1M seek="$root_start" conv=notrunc,sparse status=none

log "converting to a zstd-compressed QCOW2"
qemu-img convert -f raw -O qcow2 -c -o compression_type=zstd "$tmp/disk.raw" "$tmp/image.qcow2"
mv "$tmp/image.qcow2" "$image"
echo "$key" >"$image.key"
log "built $image ($(du -h --apparent-size "$image" | cut -f1); raw ${total_mib} MiB)"
echo "$image"
