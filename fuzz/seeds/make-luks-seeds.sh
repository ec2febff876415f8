#!/usr/bin/env bash
# Regenerates fuzz/seeds/luks/ from raw LUKS files that qemu-img makes.
# Each seed is: one byte of passphrase length, the passphrase, then the
# start of the LUKS area. Full key material of 2 MiB per image would make
# seeds far larger than useful, so seeds keep the header and slot 0's
# material (or the header only), and PBKDF2 iterations are patched down to
# QEMU's minimum (1000) so the fuzz target's iteration limit lets it run the
# whole slot path (the patched slot no longer opens: the wrong-passphrase
# path). Needs qemu-img and python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passphrase=seed
mk() { # name keep-bytes options
    qemu-img create -q -f luks --object "secret,id=s,data=$passphrase" \
        -o "key-secret=s,iter-time=10,$3" "$work/$1.luks" 1M
    python3 - "$work/$1.luks" "$here/luks/$1" "$2" "$passphrase" <<'PY'
import struct, sys
src, dst, keep, passphrase = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
area = bytearray(open(src, 'rb').read()[:keep])
area[164:168] = struct.pack('>I', 1000)          # master key digest iterations
area[208 + 4:208 + 8] = struct.pack('>I', 1000)  # slot 0 iterations
open(dst, 'wb').write(bytes([len(passphrase)]) + passphrase + bytes(area))
PY
}
mkdir -p "$here/luks"
mk aes-128-cbc-essiv $((4096 + 64000)) cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,hash-alg=sha1
mk aes-128-ctr-plain $((4096 + 64000)) cipher-alg=aes-128,cipher-mode=ctr,ivgen-alg=plain,hash-alg=md5
mk aes-256-xts-plain64 4096 cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64
mk aes-192-xts-essiv 4096 cipher-alg=aes-192,cipher-mode=xts,ivgen-alg=essiv,hash-alg=sha512
mk aes-256-ecb-plain64 4096 cipher-alg=aes-256,cipher-mode=ecb,ivgen-alg=plain64,hash-alg=ripemd160
ls -l "$here/luks"
