#!/usr/bin/env bash
# Regenerates the seed corpora from images that qemu-img and qemu-io make.
# Small on purpose: tiny virtual sizes and 512-byte clusters (16 KiB, the
# smallest allowed, for extended L2). Run from anywhere; needs qemu-img,
# qemu-io and python3. The seeds are checked in; this is their generator.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

mk() { # name options size
    qemu-img create -q -f qcow2 -o "$2" "$1.qcow2" "$3"
}
io() { # image commands...
    local image=$1
    shift
    local args=()
    for command in "$@"; do args+=(-c "$command"); done
    qemu-io "${args[@]}" "$image.qcow2" >/dev/null
}

mk v2 compat=0.10,cluster_size=512 64K
io v2 "write -P 0x11 0 1k" "write -P 0x22 5k 512"

mk v3 cluster_size=512 64K
io v3 "write -P 0x11 0 1k" "write -P 0x22 4k 512" "write -z 8k 1k"

mk v3-4k cluster_size=4k 64K
io v3-4k "write -P 0x33 4k 4k" "write -z 16k 4k" "write -P 0x34 40k 8k"

mk extl2 cluster_size=16k,extended_l2=on 64K
io extl2 "write -P 0x44 2k 2k" "write -z 8k 1k" "write -P 0x45 20k 512"

mk deflate cluster_size=512 64K
io deflate "write -c -P 0x55 0 512" "write -c -P 0x56 1k 512" "write -P 0x57 2k 512"

mk deflate-4k cluster_size=4k 32K
io deflate-4k "write -c -P 0x58 0 4k" "write -c -P 0x59 8k 4k"

mk zstd cluster_size=512,compression_type=zstd 64K
io zstd "write -c -P 0x66 0 512" "write -c -P 0x67 1k 512" "write -P 0x68 2k 512"

mk zstd-4k cluster_size=4k,compression_type=zstd 32K
io zstd-4k "write -c -P 0x69 0 4k" "write -c -P 0x6a 8k 4k"

mk base cluster_size=512 64K
io base "write -P 0x77 0 8k"
qemu-img create -q -f qcow2 -o cluster_size=512,backing_file=base.qcow2,backing_fmt=qcow2 overlay.qcow2 64K
io overlay "write -P 0x78 1k 1k" "write -z 4k 512"

qemu-img create -q -f raw base.raw 16K
qemu-io -f raw -c "write -P 0x79 0 8k" base.raw >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=512,backing_file=base.raw,backing_fmt=raw overlay-raw.qcow2 64K
io overlay-raw "write -P 0x7a 512 512"

mk snapshot cluster_size=512 64K
io snapshot "write -P 0x81 0 1k"
qemu-img snapshot -c first snapshot.qcow2
io snapshot "write -P 0x82 512 1k"
qemu-img snapshot -c second snapshot.qcow2
io snapshot "write -z 0 512"

images=(v2 v3 v3-4k extl2 deflate deflate-4k zstd zstd-4k base overlay overlay-raw snapshot)

# open and structured-less targets take the image file as is.
rm -rf "$here/open" "$here/read" "$here/decode"
mkdir -p "$here/open" "$here/read" "$here/decode"
for image in "${images[@]}"; do cp "$image.qcow2" "$here/open/$image.qcow2"; done

# read: a 64-byte prefix (configuration, backing mode and length, four
# reads), then the backing bytes, then the image (see fuzz_targets/read.rs).
python3 - "$here/read" <<'PY'
import struct, sys
out = sys.argv[1]
def seed(name, image, backing=b"", mode=0, config=0x15):
    image = open(image + ".qcow2", "rb").read()
    reads = [(0, 4096), (512, 700), (4096 - 3, 9), (60 << 10, 4 << 10)]
    prefix = bytes([config, mode]) + struct.pack(">I", len(backing))
    for offset, length in reads:
        prefix += struct.pack(">QI", offset, length)
    prefix = prefix.ljust(64, b"\0")
    open(f"{out}/{name}", "wb").write(prefix + backing + image)
for image in ["v2", "v3", "v3-4k", "extl2", "deflate", "deflate-4k", "zstd", "zstd-4k", "snapshot"]:
    seed(image, image)
seed("overlay-qcow2", "overlay", open("base.qcow2", "rb").read(), mode=2)
seed("overlay-raw", "overlay-raw", open("base.raw", "rb").read(), mode=1, config=0x20)
seed("overlay-ignored", "overlay", mode=3, config=0x2f)
PY

# decode: byte 0 codec, byte 1 cluster bits - 9, bytes 2..4 split, payloads:
# the compressed streams qemu-img wrote, cut out of the images.
python3 - "$here/decode" <<'PY'
import struct, sys
out = sys.argv[1]
def streams(name):
    b = open(name + ".qcow2", "rb").read()
    cb = struct.unpack(">I", b[20:24])[0]
    l1 = struct.unpack(">Q", b[40:48])[0]
    l2 = struct.unpack(">Q", b[l1:l1 + 8])[0] & 0x00FFFFFFFFFFFE00
    x = 70 - cb
    found = []
    for i in range((1 << cb) // 8):
        e = struct.unpack(">Q", b[l2 + 8 * i:l2 + 8 * i + 8])[0]
        if e & (1 << 62):
            host = e & ((1 << x) - 1)
            sectors = ((e >> x) & ((1 << (cb - 8)) - 1)) + 1
            length = sectors * 512 - (host & 511)
            found.append(b[host:host + length])
    return cb, found
for name, codec in [("deflate", 0), ("deflate-4k", 0), ("zstd", 1), ("zstd-4k", 1)]:
    cb, found = streams(name)
    first, second = found[0], found[1]
    data = bytes([codec, cb - 9]) + struct.pack(">H", len(first)) + first + second
    open(f"{out}/{name}", "wb").write(data)
PY
ls -l "$here"/open "$here"/read "$here"/decode
