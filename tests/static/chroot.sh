#!/usr/bin/env bash
# The static binary in an empty chroot: nothing in it but the binary, its config and a Flow
# (no libc, no /etc, no /proc, no CA store). It must start, accept a message, and deliver the
# output to a webhook outside the chroot. Run by `make test-static` (after `make static`).
set -euo pipefail

bin=${1:-target/x86_64-unknown-linux-gnu/release/hookflow}
[ -x "$bin" ] || { echo "chroot test: $bin is missing; run 'make static' first" >&2; exit 1; }
file "$bin" 2>/dev/null | grep -q "static" || ldd "$bin" 2>&1 | grep -q "not a dynamic\|statically" \
    || { echo "chroot test: $bin is not statically linked" >&2; exit 1; }

work=$(mktemp -d)
root="$work/root"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
sink_port=$(free_port)

mkdir -p "$root"
cp "$bin" "$root/hookflow"
cat > "$root/flow.json" <<'FLOW'
{ "nodes": [ { "type": "say", "text": "chroot says: {{input.text}}", "data": { "n": "{{input.text.length}}" } } ] }
FLOW
cat > "$root/hookflow.json" <<CONF
{ "listen": "127.0.0.1:$port", "dataDir": "/data",
  "endpoints": [ { "name": "jail", "urlToken": "chroot-token-12345", "flow": "flow.json",
                   "webhook": { "url": "http://127.0.0.1:$sink_port/hook" } } ] }
CONF

# The sink runs outside the chroot (same binary, `hookflow sink`).
"$bin" sink --listen "127.0.0.1:$sink_port" > "$work/sink.log" 2>&1 &
pids+=($!)

# chroot needs root; without it, a user namespace gives us a root of our own.
run_as_root=()
[ "$(id -u)" = 0 ] || run_as_root=(unshare -r)
"${run_as_root[@]}" chroot "$root" /hookflow serve --config /hookflow.json > "$work/server.log" 2>&1 &
pids+=($!)

wait_for() { # $1 = description, $2... = command that must succeed within 10 s
    local what=$1; shift
    for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "chroot test: timed out waiting for $what" >&2
    echo "--- server log"; cat "$work/server.log"; echo "--- sink log"; cat "$work/sink.log"
    exit 1
}
wait_for "the server in the chroot to answer /healthz" curl -sf "http://127.0.0.1:$port/healthz"
wait_for "the sink" curl -s -o /dev/null "http://127.0.0.1:$sink_port/"

answer=$(curl -s -X POST "http://127.0.0.1:$port/chroot-token-12345" -H 'Content-Type: application/json' \
    -d '{"userId":"u","sessionId":"s","text":"hello jail"}')
echo "$answer" | grep -q "\"status\":\"accepted\"" || { echo "chroot test: not accepted: $answer" >&2; cat "$work/server.log"; exit 1; }
wait_for "the output at the sink" grep -q 'chroot says: hello jail' "$work/sink.log"
grep -q '"n":10' "$work/sink.log" || { echo "chroot test: data not rendered" >&2; cat "$work/sink.log"; exit 1; }
[ -f "$root/data/hookflow.sqlite3" ] || { echo "chroot test: no store in /data" >&2; exit 1; }
echo "chroot test: ok (static binary served and delivered from an empty chroot)"
