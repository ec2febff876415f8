#!/usr/bin/env bash
# Converting a compressed QCOW2 image read straight from a web server:
# `qcow convert URL out.raw` against `qemu-img convert` through QEMU's
# curl driver (`qemu-img convert -O raw http://...`) and against `curl -o`
# of the raw disk from the same server, all from one nginx (nginx-light)
# on a local port. By default over loopback (no network latency: this
# measures the clients' own costs, not the round trips a real network
# adds); with DELAY_MS > 0 the three clients talk to nginx through
# `latency-proxy` (qcow2-testkit), which holds every chunk DELAY_MS in
# each direction (a round trip of 2 x DELAY_MS; this kernel has no netem),
# with RATE_MBIT also caps each direction at that rate, and with
# HANDSHAKE=1 makes each new connection wait the round trip TCP's
# handshake costs on a real link (the proxy itself accepts at once).
#
#   benches/http.sh                 # builds target/release/qcow first
#   REPS=3 SIZE_MIB=512 BENCH_DIR=/dev/shm/x QCOW=path/to/qcow benches/http.sh
#   DELAY_MS=10 STALL=60 benches/http.sh   # 20 ms round trips; builds the proxy
#                                          # unless PROXY=path/to/latency-proxy
#
# The disk is SIZE_MIB of the machine's own binaries (tar of /usr/lib and
# /usr/bin, padded with zeros), compressed with zlib and with zstd. Every
# output is compared with the disk. Prints medians of REPS alternating runs
# and the bytes the server sent per run, as a markdown table.
set -euo pipefail

REPS=${REPS:-3}
SIZE_MIB=${SIZE_MIB:-512}
BENCH_DIR=${BENCH_DIR:-/dev/shm/qcow-bench-http}
DELAY_MS=${DELAY_MS:-0}
RATE_MBIT=${RATE_MBIT:-}
HANDSHAKE=${HANDSHAKE:-0}
source "$(dirname "$0")/common.sh"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || { log "missing nginx (apt-get install nginx-light)"; exit 1; }
need "run scripts/setup.sh" qemu-img curl python3

mkdir -p "$BENCH_DIR/www" "$BENCH_DIR/nginx"
cd "$BENCH_DIR"
if [[ ! -f www/disk.raw ]]; then
    log "making images in $BENCH_DIR"
    { tar cf - /usr/lib /usr/bin 2>/dev/null || true; } | head -c $((SIZE_MIB << 20)) >disk.tmp
    truncate -s $((SIZE_MIB << 20)) disk.tmp
    qemu-img convert -c -O qcow2 -o compression_type=zlib disk.tmp www/zlib.qcow2
    qemu-img convert -c -O qcow2 -o compression_type=zstd disk.tmp www/zstd.qcow2
    mv disk.tmp www/disk.raw
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >nginx/nginx.conf <<EOF
daemon off;
master_process off;
pid $BENCH_DIR/nginx/nginx.pid;
error_log $BENCH_DIR/nginx/error.log;
events {}
http {
    log_format sent '\$body_bytes_sent';
    access_log $BENCH_DIR/nginx/access.log sent;
    client_body_temp_path $BENCH_DIR/nginx/body;
    proxy_temp_path $BENCH_DIR/nginx/proxy;
    fastcgi_temp_path $BENCH_DIR/nginx/fastcgi;
    uwsgi_temp_path $BENCH_DIR/nginx/uwsgi;
    scgi_temp_path $BENCH_DIR/nginx/scgi;
    server { listen 127.0.0.1:$port; root $BENCH_DIR/www; }
}
EOF
"$NGINX" -p "$BENCH_DIR/nginx" -c "$BENCH_DIR/nginx/nginx.conf" &
nginx_pid=$!
proxy_pid=
trap 'kill $nginx_pid $proxy_pid 2>/dev/null; rm -f "$BENCH_DIR"/out.raw' EXIT
for _ in $(seq 100); do
    curl -sf -o /dev/null -I "http://127.0.0.1:$port/disk.raw" && break
    sleep 0.1
done

# The clients' address: nginx's, or the proxy's in front of it. The proxy
# prints the port it picked on its first line.
url=http://127.0.0.1:$port
where="loopback, no added delay"
if ((DELAY_MS > 0)); then
    if [[ -z ${PROXY:-} ]]; then
        log "building latency-proxy (release)"
        cargo build --quiet --release -p qcow2-testkit --bin latency-proxy --manifest-path "$ROOT/Cargo.toml"
        PROXY=$ROOT/target/release/latency-proxy
    fi
    # An arithmetic test fails when false: as a command substitution in
    # an assignment it would stop the script (set -e).
    handshake=() handshake_note=
    if ((HANDSHAKE)); then
        handshake=(--handshake) handshake_note=", a round trip per new connection"
    fi
    : >proxy.port
    "$PROXY" --listen 127.0.0.1:0 --to "127.0.0.1:$port" --delay-ms "$DELAY_MS" \
        ${RATE_MBIT:+--rate-mbit "$RATE_MBIT"} "${handshake[@]}" >proxy.port &
    proxy_pid=$!
    for _ in $(seq 100); do
        [[ -s proxy.port ]] && break
        sleep 0.1
    done
    [[ -s proxy.port ]] || { log "latency-proxy did not start"; exit 1; }
    url=http://127.0.0.1:$(head -n 1 proxy.port)
    where="$DELAY_MS ms each way, $((2 * DELAY_MS)) ms round trip${RATE_MBIT:+, $RATE_MBIT Mbit/s each way}$handshake_note, through latency-proxy"
fi
log "load: $(uptime)"

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Seconds for one run of "$@", at most STALL seconds (the access log is
# emptied first); "stalled" when it took longer. QEMU 7.2's curl driver
# here stalls now and then (no request for minutes) and is stopped then.
STALL=${STALL:-120}
timed() {
    : >nginx/access.log
    local start end
    start=$(date +%s.%N)
    if ! timeout "$STALL" "$@" >/dev/null 2>&1; then
        echo stalled
        return
    fi
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

# The median of the times on standard input, and how many runs stalled.
summary() {
    local times
    times=$(grep -v stalled || true)
    local stalled=$((REPS - $(printf '%s' "$times" | grep -c . || true)))
    if [[ -n $times ]]; then
        printf '%.2f s' "$(printf '%s\n' "$times" | median)"
    else
        printf 'none finished'
    fi
    ((stalled == 0)) || printf ' (%d of %d runs stalled, stopped at %d s)' "$stalled" "$REPS" "$STALL"
}

# Bytes the server sent since the last `timed`.
sent() { awk '{ s += $1 } END { print s + 0 }' nginx/access.log; }

echo "| image ($where) | qcow convert | qemu-img convert (curl driver) | qcow/QEMU | curl -o of the raw disk | qcow/curl | MiB sent to qcow | to QEMU | file MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
for image in zlib zstd; do
    qcow_times=() qemu_times=() curl_times=() qemu_sent=
    for _ in $(seq "$REPS"); do
        qcow_times+=("$(timed "$QCOW" convert "$url/$image.qcow2" out.raw)")
        qcow_sent=$(sent)
        [[ ${qcow_times[-1]} == stalled ]] || cmp -s out.raw www/disk.raw ||
            { log "qcow convert of $image differs"; exit 1; }
        qemu_times+=("$(timed qemu-img convert -O raw "$url/$image.qcow2" out.raw)")
        [[ ${qemu_times[-1]} == stalled ]] || qemu_sent=$(sent)
        [[ ${qemu_times[-1]} == stalled ]] || cmp -s out.raw www/disk.raw ||
            { log "qemu-img convert of $image differs"; exit 1; }
        curl_times+=("$(timed curl -sf -o out.raw "$url/disk.raw")")
    done
    q=$(printf '%s\n' "${qcow_times[@]}" | summary)
    e=$(printf '%s\n' "${qemu_times[@]}" | summary)
    c=$(printf '%s\n' "${curl_times[@]}" | summary)
    ratio() { awk -v a="${1%% s*}" -v b="${2%% s*}" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2fx", a / b; else printf "-" }'; }
    size=$(stat -c %s "www/$image.qcow2")
    printf '| %s, %s MiB disk | %s | %s | %s | %s | %s | %s | %s | %d |\n' \
        "$image" "$SIZE_MIB" "$q" "$e" "$(ratio "$q" "$e")" "$c" "$(ratio "$q" "$c")" \
        "$((qcow_sent >> 20))" "${qemu_sent:+$((qemu_sent >> 20))}" $((size >> 20))
done
log "load: $(uptime)"
