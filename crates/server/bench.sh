#!/usr/bin/env bash
# `ipFlowVerify` throughput and latency of `palisade server` on a 10k-rule network, against a
# baseline measured in the same run on the same server: `GET /healthz` (the HTTP stack, routing
# and JSON with no policy work). Load: wrk (Debian package), $CONN connections, $SECS s each.
# The server runs on core $SERVER_CPU and wrk on core $LOAD_CPU (taskset), so the load generator
# does not compete with the handler for a core. Not for CI: numbers depend on the machine.
#
# wrk is closed-loop: at saturation its p99 is queueing. The open-loop rows send at a fixed
# $RATE req/s (`examples/rate_probe.rs`, on $LOAD_CPU, $PROBE_CONN connections) and time each
# request from when it was due, so the p99 is the latency at that stated load.
#
#   crates/server/bench.sh        # prints a Markdown table
set -euo pipefail
SECS=${SECS:-10}
CONN=${CONN:-8}
THREADS=${THREADS:-1}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
# PROFILE=dev checks the script quickly on a debug build (numbers meaningless).
PROFILE=${PROFILE:-release}
RATE=${RATE:-5000}
PROBE_CONN=${PROBE_CONN:-32}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
(cd "$ROOT" && cargo build -q --profile "$PROFILE" -p palisade-cli && cargo build -q --profile "$PROFILE" -p palisade-server --example rate_probe)
bin="$ROOT/target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

# The network: 10,000 rules — nine subnets, each with an NSG of 500 inbound and 500 outbound
# rules (NSG-10 allows 1,000 per NSG), and a NIC NSG of the same size in the first subnet. No
# rule but the last inbound one (`Allow-HTTPS`, priority 4000) matches the measured flow, so both
# NSGs on its path are searched to their end.
python3 - "$work/network.json" <<'PY'
import json, random, sys
random.seed(7)
ID = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Network"
def rules(n, direction):
    out = []
    for i in range(n):
        a, b = random.randrange(64, 128), random.randrange(256)
        lo = random.randrange(1, 60000)
        out.append({"name": f"{direction[:2]}-{i}", "properties": {
            "protocol": random.choice(["Tcp", "Udp", "*"]), "sourcePortRange": "*",
            "destinationPortRange": f"{lo}-{lo + random.randrange(0, 500)}",
            "sourceAddressPrefix": f"100.{a}.{b}.0/24", "destinationAddressPrefix": "*",
            "access": random.choice(["Allow", "Deny"]), "priority": 100 + i, "direction": direction}})
    return out
def nsg(name):
    # The last inbound rule admits HTTPS, so the flow passes the subnet NSG into the NIC's.
    https = {"name": "Allow-HTTPS", "properties": {"protocol": "Tcp", "sourcePortRange": "*",
             "destinationPortRange": "443", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
             "access": "Allow", "priority": 4000, "direction": "Inbound"}}
    return {"type": "Microsoft.Network/networkSecurityGroups", "name": name,
            "properties": {"securityRules": rules(499, "Inbound") + [https] + rules(500, "Outbound")}}
subnets = [{"name": f"s{i}", "properties": {"addressPrefix": f"10.0.{i}.0/24",
            "networkSecurityGroup": {"id": f"{ID}/networkSecurityGroups/nsg-{i}"}}} for i in range(9)]
net = [nsg(f"nsg-{i}") for i in range(9)] + [nsg("nic-nsg"),
    {"type": "Microsoft.Network/virtualNetworks", "name": "vnet", "properties": {
        "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}, "subnets": subnets}},
    {"type": "Microsoft.Network/networkInterfaces", "name": "app-nic", "properties": {
        "networkSecurityGroup": {"id": f"{ID}/networkSecurityGroups/nic-nsg"},
        "ipConfigurations": [{"name": "ip", "properties": {"privateIPAddress": "10.0.0.4",
            "subnet": {"id": f"{ID}/virtualNetworks/vnet/subnets/s0"}}}]}},
]
json.dump(net, open(sys.argv[1], "w"))
PY

token=bench-token
printf 'bench reader %s\n' "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)" > "$work/tokens"
taskset -c "$SERVER_CPU" "$bin/palisade" server --network "$work/network.json" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --data "$work/data" --token-file "$work/tokens" 2> "$work/log" &
server=$!
for _ in $(seq 100); do grep -q '^listening on' "$work/log" && break; sleep 0.2; done
base=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$work/log")
[ -n "$base" ] || { cat "$work/log"; exit 1; }

question='{"direction":"Inbound","protocol":"TCP","localIPAddress":"10.0.0.4","localPort":"443","remoteIPAddress":"203.0.113.7","remotePort":"50000"}'
printf '%s' "$question" > "$work/verify.json"
cat > "$work/verify.lua" <<LUA
wrk.method = "POST"
wrk.body = '$question'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
LUA
answer=$(curl -s -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "$question" \
    "$base/api/diagnostics/ipFlowVerify")
echo "answer: $answer" >&2

run() { taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONN" -d"${SECS}s" --latency "$@"; }
rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p'; }
p99() { sed -n 's/^ *99% *\([0-9.]*[a-z]*\).*/\1/p'; }
p50() { sed -n 's/^ *50% *\([0-9.]*[a-z]*\).*/\1/p'; }
healthz=$(run "$base/healthz")
verify=$(run -s "$work/verify.lua" "$base/api/diagnostics/ipFlowVerify")
h_rps=$(echo "$healthz" | rps); v_rps=$(echo "$verify" | rps)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $CONN connections, $THREADS wrk thread(s), server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU" >&2
echo "| request | requests/s | p50 | p99 | ratio to baseline |"
echo "|---|---|---|---|---|"
echo "| GET /healthz (baseline) | $h_rps | $(echo "$healthz" | p50) | $(echo "$healthz" | p99) | 1.00 |"
echo "| POST ipFlowVerify, 10k rules | $v_rps | $(echo "$verify" | p50) | $(echo "$verify" | p99) | $(python3 -c "print(f'{$v_rps / $h_rps:.2f}')") |"

# Open loop at $RATE req/s: latency at a stated load, baseline first.
probe() { taskset -c "$LOAD_CPU" "$bin/examples/rate_probe" "$@"; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
h_open=$(probe "$base/healthz" "$RATE" "$SECS" "$PROBE_CONN")
v_open=$(probe "$base/api/diagnostics/ipFlowVerify" "$RATE" "$SECS" "$PROBE_CONN" "$work/verify.json" "$token")
echo "open loop, healthz: $h_open" >&2
echo "open loop, ipFlowVerify: $v_open" >&2
echo
echo "| open loop at $RATE req/s ($PROBE_CONN connections) | sent/s | p50 | p99 | p99.9 | errors | p99 ratio to baseline |"
echo "|---|---|---|---|---|---|---|"
echo "| GET /healthz (baseline) | $(echo "$h_open" | field rate) | $(echo "$h_open" | field p50) ms | $(echo "$h_open" | field p99) ms | $(echo "$h_open" | field p999) ms | $(echo "$h_open" | field errors) | 1.00 |"
echo "| POST ipFlowVerify, 10k rules | $(echo "$v_open" | field rate) | $(echo "$v_open" | field p50) ms | $(echo "$v_open" | field p99) ms | $(echo "$v_open" | field p999) ms | $(echo "$v_open" | field errors) | $(python3 -c "print(f'{$(echo "$v_open" | field p99) / max($(echo "$h_open" | field p99), 0.001):.2f}')") |"
