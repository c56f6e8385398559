#!/usr/bin/env bash
# Schema-driven fuzzing of `palisade server` with schemathesis (from PyPI, in a venv inside the
# target directory): every operation of /openapi.json with generated requests, for a bounded
# number of examples; fails on any 5xx answer or a crashed server.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/schemathesis
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet schemathesis
fi
# CI passes the binary its test stage just built from the same tree (PALISADE=...): a plain
# `cargo build` would compile much of the workspace again, without the dev-dependencies' features.
palisade=${PALISADE:-}
if [ -z "$palisade" ]; then
    cargo build --quiet -p palisade-cli
    palisade=target/debug/palisade
fi
data=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
token=schemathesis-admin
printf 'fuzz admin %s\n' "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)" > "$data/tokens"
"$palisade" server --network examples/ase-egress-lockdown --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --data "$data" --token-file "$data/tokens" 2> "$data/log" &
server=$!
for _ in $(seq 50); do
    grep -q '^listening on' "$data/log" && break
    sleep 0.2
done
# The admin listener serves every operation (the data listener refuses changes).
base=$(sed -n 's/^admin API on \(http:[^ ]*\).*/\1/p' "$data/log")
[ -n "$base" ] || { cat "$data/log"; exit 1; }
# The live stream (Server-Sent Events) never ends by design, so a generated request to it would
# wait for ever; its filters are the flow-log query's, which is fuzzed, and a test drives it.
timeout 300 "$venv/bin/schemathesis" run "$base/openapi.json" -H "Authorization: Bearer $token" \
    --exclude-path /api/flowLogs/stream --request-timeout 20 \
    --checks not_a_server_error --max-examples "${EXAMPLES:-40}" --seed 1
kill -0 "$server" || { echo "the server died"; cat "$data/log"; exit 1; }
