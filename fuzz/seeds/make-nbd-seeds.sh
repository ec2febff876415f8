#!/usr/bin/env bash
# Seeds of the `nbd` target: byte 0 (limits, export name, failing offset, TLS mode),
# byte 1 (export layout), then what a client sends after the greeting, as
# qemu-img and nbdinfo send it: fixed newstyle flags, options, requests.
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)/nbd
mkdir -p "$out"

# hex HEX...: the bytes written in hex.
hex() { printf "$(echo "$*" | tr -d ' ' | sed 's/../\\x&/g')"; }
# option CODE PAYLOAD_HEX: IHAVEOPT, the option, its length, its payload.
option() {
    local payload
    payload=$(echo "${2:-}" | tr -d ' ')
    hex 49484156454f5054 "$(printf %08x "$1")" "$(printf %08x $((${#payload} / 2)))" "$payload"
}
# request COMMAND FLAGS OFFSET LEN: a request header (cookie 1).
request() {
    hex 25609513 "$(printf %04x%04x "$2" "$1")" 0000000000000001 "$(printf %016x%08x "$3" "$4")"
}
ascii() { printf %s "$1" | od -An -tx1 | tr -d ' \n'; }
query=$(ascii base:allocation)
meta="00000000 00000001 $(printf %08x 15) $query"
go="00000000 0001 0003"

{
    hex 01 00 00000001
    option 8
    option 10 "$meta"
    option 7 "$go"
    request 0 0 0 65536
    request 7 0 0 262144
    request 7 8 4096 65536
    request 1 0 0 4
    printf data
    request 5 0 0 4096
    request 0 0 262000 1000
    request 2 0 0 0
} >"$out/structured"

{
    hex 12 05 00000001
    option 7 "$go"
    request 0 0 1000 65536
    request 4 0 0 4096
    request 2 0 0 0
} >"$out/simple"

{
    hex 00 03 00000003
    option 1
    request 0 0 0 4096
    request 2 0 0 0
} >"$out/export-name"

{
    hex 0c 00 00000001
    option 3
    option 6 "00000004$(ascii disk)00010001"
    option 9 "00000000 00000001 00000005 $(ascii base:)"
    option 5
    option 42 "0102"
    option 8
    option 10 "00000004$(ascii disk)00000000"
    option 2
} >"$out/options"

# TLS required (byte 0 bits 5-6 = 2): a listing refused with
# NBD_REP_ERR_TLS_REQD, STARTTLS, then the structured session "over TLS".
{
    hex 41 00 00000001
    option 3
    option 5
    option 8
    option 10 "$meta"
    option 7 "$go"
    request 0 0 0 65536
    request 7 0 0 262144
    request 2 0 0 0
} >"$out/starttls"
