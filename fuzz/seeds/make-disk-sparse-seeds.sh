#!/usr/bin/env bash
# Regenerates the seeds of the `disk_sparse` target: disks of terabytes made
# by the real tools (sfdisk on a sparse file, mkfs.ext4 -d, mkfs.vfat, debugfs
# -w), written as the target's description (8-byte size, then (offset,
# length, bytes) patches of the non-zero 512-byte runs). Needs fdisk,
# dosfstools, e2fsprogs and python3. The seeds are checked in; this is their
# generator. Fuzzing findings are kept beside them (named finding-*).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
out=$here/disk_sparse
mkdir -p "$out"
rm -f "$out"/seed-*
mkdir -p tree/dir
echo hello >tree/hello.txt
echo inner >tree/dir/inner.txt
ln -s /hello.txt tree/link
ln -s ../link tree/dir/up

# describe DISK SEED: the sparse DISK as the target's input.
describe() {
    python3 - "$1" "$2" <<'PY'
import os, struct, sys
disk, seed = sys.argv[1], sys.argv[2]
size = os.path.getsize(disk)
out = bytearray(struct.pack("<Q", size))
with open(disk, "rb") as f:
    fd = f.fileno()
    pos = 0
    while pos < size:
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, pos, os.SEEK_HOLE)
        f.seek(pos)
        data = f.read(end - pos)
        # Non-zero 512-byte sectors, runs merged, at most 65535 bytes a patch.
        run_start = None
        for i in range(0, len(data) + 512, 512):
            sector = data[i:i + 512]
            if sector and any(sector):
                if run_start is None:
                    run_start = i
                if i + 512 - run_start < 65024:
                    continue
            if run_start is not None:
                piece = data[run_start:i + 512 if sector and any(sector) else i]
                out += struct.pack("<QH", pos + run_start, len(piece)) + piece
                run_start = None
        pos = end
open(seed, "wb").write(out)
PY
}

# A 4 TiB GPT disk whose one partition spans it, holding an ext4 of 1 KiB
# blocks (no metadata_csum: the patched fields need no new checksum).
# FEATURES (mkfs.ext4 -O) defaults to no journal (one needs the 2 MiB).
gpt_ext4() { # NAME [DEBUGFS REQUEST] [SUPERBLOCK PATCH as offset=u32 ...]
    local name=$1 request=${2:-}
    shift 2 || shift $#
    rm -f disk.raw ext4.fs
    truncate -s 4T disk.raw
    printf 'label: gpt\nstart=2048, type=linux\n' | sfdisk -q disk.raw
    mkfs.ext4 -q -F -b 1024 -N 32 -O "${FEATURES:-^metadata_csum,^has_journal}" -d tree ext4.fs 2M >/dev/null
    # REQUEST: debugfs lines, separated by \n.
    [ -n "$request" ] && printf '%b\n' "$request" | debugfs -w -f - ext4.fs >/dev/null 2>&1
    for patch in "$@"; do
        python3 -c "import struct,sys; f=open('ext4.fs','r+b'); f.seek(1024+int('${patch%=*}',0)); f.write(struct.pack('<I', int('${patch#*=}',0)))"
    done
    dd if=ext4.fs of=disk.raw bs=512 seek=2048 conv=notrunc status=none
    describe disk.raw "$out/seed-$name"
}

# The issue's superblock, one block per group, with 2^32 - 2^20 blocks (the
# partition starts 1 MiB in, so 2^32 - 1 blocks would not fit it).
gpt_ext4 ext4-hostile-block-counts "" 0x04=0xfff00000 0x20=1
# A sound volume with a symlink claiming 1 TiB.
gpt_ext4 ext4-terabyte-symlink "sif /link size 0x10000000000"
# A sound volume with a directory claiming 1 TiB.
gpt_ext4 ext4-terabyte-directory "sif /dir size 0x10000000000"
# A sound volume: what the mutations start from.
gpt_ext4 ext4-sound
# A volume that needs recovery, whose journal inode claims 1 TiB.
FEATURES=^metadata_csum,has_journal gpt_ext4 ext4-terabyte-journal \
    "feature needs_recovery\nsif <8> size 0x10000000000"

# A 2 TiB MBR disk (less 1 GiB: MBR's limit) whose one partition spans it,
# with a FAT32 whose boot sector claims the whole partition.
rm -f disk.raw fat.fs
truncate -s 2047G disk.raw
printf 'label: dos\nstart=2048, type=c\n' | sfdisk -q disk.raw
truncate -s 64M fat.fs
mkfs.vfat -F 32 -n SPARSE fat.fs >/dev/null
# 32 KiB clusters and a FAT long enough for all of them (sparse: zeros
# after the first sector), so the volume opens with an empty root.
python3 -c "
import struct
f = open('fat.fs', 'r+b')
total = (2047 << 30) // 512 - 2048
reserved = struct.unpack('<H', f.read(0x10)[0x0e:0x10])[0]
fat = (total // 64 + 2) * 4 // 512 + 1
f.seek(0x0d); f.write(bytes([64]))
f.seek(0x20); f.write(struct.pack('<II', total, fat))
"
dd if=fat.fs of=disk.raw bs=512 seek=2048 conv=notrunc status=none
describe disk.raw "$out/seed-fat32-claims-two-terabytes"
ls -la "$out"
