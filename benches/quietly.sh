# Sourced by the benchmark scripts: `quietly WHAT COMMAND...` runs a preparation step (a build,
# an export) without its output, and where it fails prints its last lines and which step it was,
# rather than ending the script without a word under `set -e`.
quietly() {  # quietly WHAT COMMAND...
    local what=$1 log
    shift
    log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "$0: $what failed (its last lines above): $*" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
}
