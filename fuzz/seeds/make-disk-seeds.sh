#!/usr/bin/env bash
# Regenerates the seeds of the `disk` target: tiny raw disks made by the real
# tools (sfdisk, mkfs.vfat + mcopy, mkfs.ext2/ext4 -d). Needs fdisk,
# dosfstools, mtools and e2fsprogs. The seeds are checked in; this is their generator.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export MTOOLS_SKIP_CHECK=1
out=$here/disk
rm -rf "$out"
mkdir -p "$out" tree/dir
echo hello >tree/hello.txt
echo nested >"tree/dir/A long name.txt"
ln -s ../hello.txt tree/dir/up

start_of() { sfdisk -d "$1" | awk -v node="$1$2" '$1 == node { sub(",", "", $4); print $4 }'; }
place() { dd if="$3" of="$1" bs=512 seek="$(start_of "$1" "$2")" conv=notrunc status=none; }

# GPT with one FAT12 partition.
truncate -s 256K gpt.raw
printf 'label: gpt\nfirst-lba: 34\nstart=34, size=400, type=uefi\n' | sfdisk -q gpt.raw
truncate -s 200K fat.fs
mkfs.vfat -F 12 -n SEED fat.fs >/dev/null
mcopy -s -i fat.fs tree/hello.txt tree/dir ::/ 2>/dev/null || true
place gpt.raw 1 fat.fs
cp gpt.raw "$out/gpt-fat12"

# MBR: a FAT12 primary and an ext2 logical partition.
truncate -s 512K mbr.raw
printf 'label: dos\nstart=8, size=128, type=1\nstart=136, size=800, type=5\nstart=144, size=512, type=83\n' | sfdisk -q mbr.raw
truncate -s 64K small.fs
mkfs.vfat -F 12 small.fs >/dev/null
mcopy -i small.fs tree/hello.txt ::/
place mbr.raw 1 small.fs
truncate -s 256K ext2.fs
mkfs.ext2 -q -F -b 1024 -N 16 -d tree ext2.fs
place mbr.raw 5 ext2.fs
cp mbr.raw "$out/mbr-logical-ext2"

# No table: ext4 on the whole disk.
truncate -s 512K "$out/whole-ext4"
mkfs.ext4 -q -F -b 1024 -N 16 -O ^has_journal -d tree "$out/whole-ext4"
