#!/usr/bin/env python3
"""Writes seeds/decode/libdeflate-*: deflate streams built bit by bit that
upstream libdeflate decodes into the whole cluster and zlib (QEMU) refuses,
and one that zlib accepts and the vendored libdeflate refuses (see
deflate-nostd/README.md). The decode target must give miniz_oxide's result
for each. Layout: codec 0 (deflate), cluster bits, split = whole stream."""
import os
import struct
class Bits:
    def __init__(s): s.b=bytearray(); s.n=0
    def field(s,v,c):
        for i in range(c):
            if s.n%8==0: s.b.append(0)
            s.b[-1] |= ((v>>i)&1) << (s.n%8); s.n+=1
        return s
    def code(s,code,ln):
        r=int(format(code,'0%db'%ln)[::-1],2); return s.field(r,ln)
    def fixed(s,sym):
        if sym<=143: return s.code(0x30+sym,8)
        if sym<=255: return s.code(0x190+sym-144,9)
        if sym<=279: return s.code(sym-256,7)
        return s.code(0xc0+sym-280,8)
def dynamic(litlen, offset):
    ORDER=[16,17,18,0,8,7,9,6,10,5,11,4,12,3,13,2,14,1,15]
    b=Bits(); b.field(1,1).field(2,2).field(len(litlen)-257,5).field(len(offset)-1,5).field(14,4)
    for sym in ORDER[:18]:
        b.field({8:1,0:2,1:2}.get(sym,0),3)
    for l in list(litlen)+list(offset):
        if l==8: b.code(0,1)
        elif l==0: b.code(2,2)
        else: b.code(3,2)
    return b
def seed(name, stream, v):
    data=bytes([0, v])+struct.pack('>H', len(stream))+bytes(stream)
    open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'decode', name), 'wb').write(data)
# (a) static litlen 286, 512-byte cluster
b=Bits(); b.field(1,1).field(1,2).fixed(ord('a'))
b.fixed(286).code(0,5); b.fixed(284).field(26,5).code(0,5); b.fixed(256)
seed('libdeflate-static-litlen-286', b.b, 0)
# (b) static offset 30, 32 KiB cluster
b=Bits(); b.field(1,1).field(1,2).fixed(ord('a'))
for _ in range(96): b.fixed(285).code(0,5)
b.fixed(257).code(30,5).field(0,13)
for _ in range(30): b.fixed(285).code(0,5)
b.fixed(284).field(29,5).code(0,5); b.fixed(256)
seed('libdeflate-static-offset-30', b.b, 6)
litlen=[8]*258; litlen[254]=0; litlen[255]=0
# litlen codes: syms 0..253 -> code=sym, 256 -> 254, 257 -> 255
# (c) 31 offset symbols
off=[0]*31; off[0]=1; off[1]=1
b=dynamic(litlen, off); b.code(ord('a'),8).code(ord('a'),8)
for _ in range(170): b.code(255,8).code(0,1)
b.code(254,8)
seed('libdeflate-31-offset-symbols', b.b, 0)
# (d), (e) one offset codeword, used as '1' (zlib refuses) and '0' (zlib accepts)
for bit,name in [(1,'libdeflate-incomplete-code-unused-codeword'),(0,'libdeflate-incomplete-code-valid')]:
    b=dynamic(litlen,[1]); b.code(ord('a'),8).code(ord('a'),8)
    for _ in range(170): b.code(255,8).code(bit,1)
    b.code(254,8)
    seed(name, b.b, 0)
