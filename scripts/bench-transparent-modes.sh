#!/usr/bin/env bash
# New TCP connections per second from a client namespace to a server namespace through a gateway
# namespace: plainly forwarded (the baseline), then through `palisade gateway` in transparent
# mode with nftables `redirect`, then with `tproxy`; all in one run. wrk's requests each get a
# `connection: close` answer, so every request is a new connection judged by the gateway.
# Root, nft and wrk needed; everything it creates is removed on exit.
#   PAL=target/debug/palisade DUR=5 scripts/bench-transparent-modes.sh   # prints one JSON line
# PERF=DIR also records each gateway's CPU profile while it is measured (perf record -e cpu-clock
# -g), as DIR/redirect.data and DIR/tproxy.data.
set -euo pipefail
PAL=$(realpath "${PAL:-target/debug/palisade}")
DUR=${DUR:-5}
C=pbc$$ G=pbg$$ S=pbs$$
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in $C $G $S; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

for n in $C $G $S; do ip netns add $n; ip -n $n link set lo up; done
ip -n $G link add vg type veth peer name vc netns $C
ip -n $G link add vs type veth peer name vx netns $S
ip -n $G addr add 10.77.0.1/24 dev vg; ip -n $G addr add 10.78.0.1/24 dev vs
ip -n $C addr add 10.77.0.2/24 dev vc; ip -n $S addr add 10.78.0.10/24 dev vx
ip -n $G link set vg up; ip -n $G link set vs up; ip -n $C link set vc up; ip -n $S link set vx up
ip -n $C route add default via 10.77.0.1; ip -n $S route add default via 10.78.0.1
ip netns exec $G sysctl -qw net.ipv4.ip_forward=1
ip -n $G rule add fwmark 1 lookup 100
ip -n $G route add local 0.0.0.0/0 dev lo table 100

ip netns exec $S "$PAL" lab serve --address 10.78.0.10 --ports 80 &
PIDS+=($!)
cat > "$WORK/network.yaml" <<'YAML'
apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.77.0.1}]
    networkRuleCollections:
      - name: l4
        priority: 100
        action: {type: Allow}
        rules: [{name: web, protocols: [TCP], sourceAddresses: ['10.77.0.0/24'], destinationAddresses: ['10.78.0.10'], destinationPorts: ['80']}]
YAML

rate() {
  ip netns exec $C wrk -t1 -c8 -d"${DUR}s" http://10.78.0.10/ | awk '/Requests\/sec/ {print $2}'
}

# The rate through the gateway last started, profiled when PERF is set.
gateway_rate() {
  if [ -n "${PERF:-}" ]; then
    mkdir -p "$PERF"
    perf record -q -e cpu-clock -g -p "${PIDS[-1]}" -o "$PERF/$1.data" -- sleep "$DUR" 2>/dev/null &
    local perf_pid=$!
    rate
    wait $perf_pid || true
  else
    rate
  fi
}

gateway() {
  ip netns exec $G "$PAL" gateway --network "$WORK/network.yaml" --listen none --admin none \
    --transparent 0.0.0.0:15001 --transparent-mode "$1" --data "$WORK/flows-$1" --no-watch \
    --grace-period 0 2>"$WORK/gateway-$1.log" &
  PIDS+=($!)
  for _ in $(seq 100); do
    ip netns exec $G ss -ltnH 'sport = :15001' | grep -q . && return 0
    sleep 0.1
  done
  cat "$WORK/gateway-$1.log" >&2
  return 1
}

sleep 0.5
forwarded=$(rate)

printf 'table ip bench {\n chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  iifname "vg" meta l4proto tcp redirect to :15001\n }\n}\n' | ip netns exec $G nft -f -
gateway redirect
redirect=$(gateway_rate redirect)
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
ip netns exec $G nft delete table ip bench

printf 'table ip bench {\n chain prerouting {\n  type filter hook prerouting priority mangle; policy accept;\n  iifname "vg" tcp flags & (syn | ack) != syn socket transparent 1 meta mark set 1 accept\n  iifname "vg" meta l4proto tcp tproxy to :15001 meta mark set 1 accept\n }\n}\n' | ip netns exec $G nft -f -
sleep 1
gateway tproxy
tproxy=$(gateway_rate tproxy)

python3 -c "
import json
f, r, t = $forwarded, $redirect, $tproxy
print(json.dumps({'forwarded_per_s': f, 'redirect_per_s': r, 'tproxy_per_s': t,
                  'redirect_vs_forwarded': round(r / f, 3), 'tproxy_vs_forwarded': round(t / f, 3),
                  'tproxy_vs_redirect': round(t / r, 3)}))"
