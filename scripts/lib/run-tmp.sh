# Sourced by scripts/test and scripts/soak: one directory for everything a run starts
# (the private podman, caddy and pebble instances live under it, as TMPDIR), and on exit
# anything a crashed test left there is removed, stopped and unmounted.
# shellcheck shell=bash

# RUN_TMP_BASE: where the directory goes (scripts/soak: /tmp, even inside a run of
# scripts/test, since podman refuses a run root path over 50 characters).
run_tmp=$(mktemp -d "${RUN_TMP_BASE:-${TMPDIR:-/tmp}}/${RUN_TMP_PREFIX:-mcp-ci}-XXXXXX")
export TMPDIR="$run_tmp"

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    # Containers of private podmans whose test could not clean up (killed, aborted).
    local d
    for d in "$run_tmp"/mcp-test-*/; do
        [ -f "$d/containers.conf" ] || continue
        echo "cleanup: removing containers left in $d"
        CONTAINERS_CONF="$d/containers.conf" timeout 60 \
            podman --root "$d/root" --runroot "$d/runroot" rm -af -t 0 >/dev/null 2>&1
    done
    # Processes whose command line names this run's directory: podman services,
    # conmon, caddy, pebble started by tests of this run and left behind.
    local p pid cmd pids=()
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" = "$$" ] && continue
        cmd=$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
        if [[ "$cmd" == *"$run_tmp"* ]]; then
            pids+=("$pid")
            echo "cleanup: leftover process $pid: ${cmd:0:300}"
        fi
    done
    if [ "${#pids[@]}" -gt 0 ]; then
        echo "cleanup: stopping leftover processes ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null
        local i
        for i in $(seq 50); do
            local alive=()
            for pid in "${pids[@]}"; do
                kill -0 "$pid" 2>/dev/null && alive+=("$pid")
            done
            [ "${#alive[@]}" -eq 0 ] && break
            sleep 0.1
        done
        [ "${#alive[@]}" -gt 0 ] && kill -KILL "${alive[@]}" 2>/dev/null
    fi
    # Mounts left under the directory, deepest first.
    local m
    awk -v dir="$run_tmp" '$2 == dir || index($2, dir "/") == 1 { print $2 }' /proc/self/mounts |
        awk '{ print gsub("/", "/"), $0 }' | sort -rn | cut -d' ' -f2- |
        while read -r m; do
            m=$(printf '%b' "${m//\\/\\0}")
            echo "cleanup: unmounting $m"
            umount "$m" 2>/dev/null || umount -l "$m"
        done
    rm -rf "$run_tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

