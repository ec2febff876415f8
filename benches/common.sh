# Sourced by the benchmarks: their shared preamble.
#   ROOT          the repository
#   log MESSAGE   to stderr
#   QCOW          the qcow under test: $QCOW if set, else built here (release)
#   need HINT TOOL...   stops naming HINT when a tool is missing
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '%s\n' "$*" >&2; }

need() {
    local hint=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { log "missing $tool ($hint)"; exit 1; }
    done
}

if [[ -z ${QCOW:-} ]]; then
    log "building qcow (release)"
    cargo build --quiet --release -p qcow2-cli --manifest-path "$ROOT/Cargo.toml"
    QCOW=$ROOT/target/release/qcow
fi
