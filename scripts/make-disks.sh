#!/usr/bin/env bash
# Makes the disks that the file tests read, with the real tools: a tree of
# files, file systems made from it (mkfs.ext4 -d, mkfs.ext2 -d, mkfs.vfat +
# mcopy), partition tables (sfdisk: GPT; MBR with logical partitions), the
# disks turned into compressed QCOW2 images, then changed (debugfs -w,
# mcopy/mdel/mmd) and stored as overlays made with `qemu-img convert -B`,
# so that changed files live in the overlay and the rest in the base.
#
# Usage: scripts/make-disks.sh OUT_DIR. Writes OUT_DIR/manifest, one line
# per file system: IMAGE PARTITION TREE_DIR KIND (PARTITION "-" = no table).
# Cached: nothing is made again while OUT_DIR/stamp matches this script.
set -euo pipefail
out=${1:?usage: make-disks.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
stamp=$(sha256sum "$script" | cut -d' ' -f1)

exec 9>"$out/.lock"
flock 9
if [[ -f $out/stamp && $(cat "$out/stamp") == "$stamp" ]]; then
    exit 0
fi

missing=()
for tool in sfdisk mkfs.ext4 mkfs.ext2 debugfs mkfs.vfat mcopy mmd mdel qemu-img; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "make-disks: missing ${missing[*]}; install with (as root):" >&2
    echo "    apt-get install -y fdisk e2fsprogs dosfstools mtools qemu-utils" >&2
    exit 1
fi

work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
rm -rf "$out"/tree-* "$out"/*.qcow2 "$out/manifest" "$out/stamp"
export MTOOLS_SKIP_CHECK=1 TZ=UTC

# The tree: text, empty, large random and sparse files, long and non-ASCII
# names, a directory of 300 entries (several FAT clusters, ext4 blocks),
# nesting, and (ext only) symlinks: relative, absolute, to a directory,
# through "..", and a loop.
tree=$work/tree
mkdir -p "$tree"/dir/sub/deeper "$tree/many" "$tree/Mixed Case Dir"
echo "hello from the disk" >"$tree/hello.txt"
: >"$tree/empty"
head -c 3145739 /dev/urandom >"$tree/big.bin"
head -c 70000 /dev/urandom >"$tree/dir/sub/deeper/odd-size.bin"
printf 'small\n' >"$tree/dir/small.txt"
printf 'config=1\n' >"$tree/dir/A file with a long name.conf"
printf 'accents\n' >"$tree/dir/café-naïve.txt"
printf 'mixed\n' >"$tree/Mixed Case Dir/ReadMe.TXT"
for i in $(seq -w 1 300); do printf 'entry %s\n' "$i" >"$tree/many/entry-number-$i.txt"; done
chmod 600 "$tree/dir/small.txt"
chmod 755 "$tree/dir/sub"
touch -d '2021-06-15 12:34:56' "$tree/hello.txt"
cp -a "$tree" "$work/fat-tree"
truncate -s 5M "$tree/sparse.bin"
printf 'end of sparse\n' >>"$tree/sparse.bin"
ln -s dir/small.txt "$tree/link-relative"
ln -s /dir/sub/deeper/odd-size.bin "$tree/link-absolute"
ln -s dir/sub "$tree/link-dir"
ln -s ../hello.txt "$tree/dir/link-up"
ln -s loop-b "$tree/loop-a"
ln -s loop-a "$tree/loop-b"

# The changes made to the disks after the base image was taken.
head -c 200000 /dev/urandom >"$work/added.bin"
head -c 1048583 /dev/urandom >"$work/replaced.bin"
printf 'inner\n' >"$work/inner.txt"
change_tree() { # TREE: the same changes as debugfs/mtools make, on a copy
    cp "$work/added.bin" "$1/added.bin"
    rm "$1/dir/small.txt"
    mkdir "$1/newdir"
    cp "$work/inner.txt" "$1/newdir/inner.txt"
    cp "$work/replaced.bin" "$1/big.bin"
}
change_ext() { # IMAGE
    debugfs -w "$1" -f - >/dev/null 2>&1 <<DEBUGFS
write $work/added.bin /added.bin
rm /dir/small.txt
mkdir /newdir
write $work/inner.txt /newdir/inner.txt
rm /big.bin
write $work/replaced.bin /big.bin
symlink /link-added /added.bin
DEBUGFS
    # Check that debugfs did it: the new file must be there.
    debugfs -R "stat /newdir/inner.txt" "$1" 2>/dev/null | grep -q "Size: 6" ||
        { echo "make-disks: debugfs did not change $1" >&2; exit 1; }
}
change_fat() { # IMAGE
    mcopy -o -i "$1" "$work/added.bin" ::/added.bin
    mdel -i "$1" ::/dir/small.txt
    mmd -i "$1" ::/newdir
    mcopy -o -i "$1" "$work/inner.txt" ::/newdir/inner.txt
    mcopy -o -i "$1" "$work/replaced.bin" ::/big.bin
}
for kind in ext fat; do
    source_tree=$tree
    [[ $kind == fat ]] && source_tree=$work/fat-tree
    cp -a "$source_tree" "$out/tree-$kind-v1"
    cp -a "$source_tree" "$out/tree-$kind-v2"
    change_tree "$out/tree-$kind-v2"
done
ln -s /added.bin "$out/tree-ext-v2/link-added"

make_fat() { # IMAGE SIZE_MIB FAT_BITS LABEL EXTRA_MKFS_ARGS...
    local image=$1 size=$2 bits=$3 label=$4
    shift 4
    truncate -s "${size}M" "$image"
    mkfs.vfat -F "$bits" -n "$label" "$@" "$image" >/dev/null
    mcopy -s -m -i "$image" "$work/fat-tree"/* ::/
}
make_ext() { # IMAGE SIZE_MIB LABEL MKFS EXTRA_MKFS_ARGS...
    local image=$1 size=$2 label=$3 mkfs=$4
    shift 4
    truncate -s "${size}M" "$image"
    "$mkfs" -q -F -L "$label" -d "$tree" "$@" "$image"
}

# start SECTOR of partition N in a disk, from sfdisk's dump
start_of() { sfdisk -d "$1" | awk -v node="$1$2" '$1 == node { sub(",", "", $4); print $4 }'; }
place() { # DISK N FS_IMAGE
    dd if="$3" of="$1" bs=512 seek="$(start_of "$1" "$2")" conv=notrunc status=none
}
take() { # DISK N FS_IMAGE: copy a partition out
    local start size
    start=$(start_of "$1" "$2")
    size=$(sfdisk -d "$1" | awk -v node="$1$2" '$1 == node { sub(",", "", $6); print $6 }')
    dd if="$1" of="$3" bs=512 skip="$start" count="$size" status=none
}

# GPT: 1 = FAT32 (EFI System), 2 = ext4 (Linux filesystem).
truncate -s 100M gpt.raw
printf 'label: gpt\nsize=40MiB, type=uefi, name="EFI system"\ntype=linux, name=root\n' | sfdisk -q gpt.raw
make_fat gpt1.fs 40 32 EFI -s 1 -S 512
make_ext gpt2.fs 58 rootfs mkfs.ext4
place gpt.raw 1 gpt1.fs
place gpt.raw 2 gpt2.fs

# MBR: 1 = FAT16, 2 = extended with 5 = ext4 (1 KiB blocks), 6 = FAT12.
truncate -s 64M mbr.raw
printf 'label: dos\nsize=16MiB, type=6\ntype=5\nsize=30MiB, type=83\nsize=4MiB, type=1\n' | sfdisk -q mbr.raw
make_fat mbr1.fs 16 16 DOSPART
make_ext mbr5.fs 30 logical mkfs.ext4 -b 1024
make_fat mbr6.fs 4 12 SMALL
place mbr.raw 1 mbr1.fs
place mbr.raw 5 mbr5.fs
place mbr.raw 6 mbr6.fs

# No table: ext2 over the whole disk.
make_ext whole.raw 24 whole mkfs.ext2

# Base images compressed (deflate; the MBR one zstd), an uncompressed one too.
qemu-img convert -c -O qcow2 gpt.raw "$out/gpt-base.qcow2"
qemu-img convert -c -O qcow2 -o compression_type=zstd mbr.raw "$out/mbr-base.qcow2"
qemu-img convert -O qcow2 whole.raw "$out/whole.qcow2"

# Changes, then overlays holding only what changed.
for disk in gpt mbr; do
    case $disk in
        gpt) ext_parts=(2) fat_parts=(1) ;;
        mbr) ext_parts=(5) fat_parts=(1 6) ;;
    esac
    for n in "${ext_parts[@]}"; do
        take $disk.raw "$n" part.fs
        change_ext part.fs
        place $disk.raw "$n" part.fs
    done
    for n in "${fat_parts[@]}"; do
        take $disk.raw "$n" part.fs
        change_fat part.fs
        place $disk.raw "$n" part.fs
    done
    qemu-img convert -O qcow2 -B "$out/$disk-base.qcow2" -F qcow2 $disk.raw "$out/$disk-overlay.qcow2"
done

cat >"$out/manifest" <<MANIFEST
gpt-base.qcow2 1 tree-fat-v1 fat
gpt-base.qcow2 2 tree-ext-v1 ext
gpt-overlay.qcow2 1 tree-fat-v2 fat
gpt-overlay.qcow2 2 tree-ext-v2 ext
mbr-base.qcow2 1 tree-fat-v1 fat
mbr-base.qcow2 5 tree-ext-v1 ext
mbr-base.qcow2 6 tree-fat-v1 fat
mbr-overlay.qcow2 1 tree-fat-v2 fat
mbr-overlay.qcow2 5 tree-ext-v2 ext
mbr-overlay.qcow2 6 tree-fat-v2 fat
whole.qcow2 - tree-ext-v1 ext
MANIFEST
echo "$stamp" >"$out/stamp"
