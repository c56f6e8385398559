#!/usr/bin/env bash
# Benchmark the gateway's CONNECT path against Squid, HAProxy and Tinyproxy, in one run, on
# loopback only, with the same allowlist (CONNECT to localhost:$TARGET_PORT; anything else
# denied). Bounded: each measurement runs $SECS seconds, the idle test holds $IDLE tunnels.
#
# Measures per proxy: new CONNECT tunnels per second (open, a ClientHello echoed, close; $CONC
# concurrent clients), latency p50/p99 of that at moderate load ($LAT_CONC clients) against a
# direct connection, throughput of one established tunnel, RSS growth per idle tunnel.
#
# Installs squid, haproxy and tinyproxy from the distribution (apt-get) when missing; never
# downloads anything else. The load client is crates/gateway/examples/tunnel_bench.rs (wrk, hey
# and h2load cannot open CONNECT tunnels). Not for CI: numbers depend on the machine.
#
#   scripts/bench-gateway.sh            # prints a Markdown table, raw JSON in $OUT
#   SECS=3 IDLE=500 scripts/bench-gateway.sh   # bounded; $OUT/summary.json has per proxy
#                                       # tunnels_per_s, p99_ms, added_p99_ms, idle_kib
set -euo pipefail

SECS=${SECS:-3}
CONC=${CONC:-64}
LAT_CONC=${LAT_CONC:-4}
IDLE=${IDLE:-1000} # keep 3 x IDLE under the open-file limit
TARGET_PORT=${TARGET_PORT:-18443}
OUT=${OUT:-/tmp/bench-gateway}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

need=()
command -v squid >/dev/null || [ -x /usr/sbin/squid ] || need+=(squid)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v tinyproxy >/dev/null || need+=(tinyproxy)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian packages)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
export PATH=$PATH:/usr/sbin

(cd "$ROOT" && cargo build -q --release -p palisade-cli && cargo build -q --release -p palisade-gateway --example tunnel_bench)
BIN=$CARGO_TARGET_DIR/release
TB=$BIN/examples/tunnel_bench

rm -rf "$OUT"; mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n 8192
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# The target: echo server on both loopback addresses (`localhost` may resolve to either).
"$TB" serve "127.0.0.1:$TARGET_PORT" "[::1]:$TARGET_PORT" >"$OUT/target.log" 2>&1 &
pids+=($!)
TARGET="localhost:$TARGET_PORT=127.0.0.1:$TARGET_PORT"

P_PAL=13128 P_SQUID=13129 P_HAP=13130 P_TINY=13131

# --- Palisade: an application rule for localhost on the target port.
cat >"$OUT/network.yaml" <<EOF
apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4}]
    applicationRuleCollections:
      - name: allow
        priority: 100
        action: {type: Allow}
        rules: [{name: target, sourceAddresses: ['*'], protocols: ['Https:$TARGET_PORT'], targetFqdns: [localhost]}]
EOF
"$BIN/palisade" gateway -n "$OUT/network.yaml" --listen "127.0.0.1:$P_PAL" --admin none \
  --data "$OUT/palisade-data" --resolve localhost=127.0.0.1 --no-system-resolver --no-watch \
  --max-connections 100000 >"$OUT/palisade.log" 2>&1 &
pids+=($!); PID_PAL=$!

# --- Squid: CONNECT only to localhost on the target port, no cache, no access log.
mkdir -p "$OUT/squid"
cat >"$OUT/squid.conf" <<EOF
http_port 127.0.0.1:$P_SQUID
acl target_port port $TARGET_PORT
acl target dstdomain localhost
acl CONNECT method CONNECT
http_access allow CONNECT target target_port
http_access deny all
cache deny all
cache_mem 8 MB
access_log none
cache_store_log none
cache_log $OUT/squid/cache.log
pid_filename $OUT/squid/squid.pid
coredump_dir $OUT/squid
max_filedescriptors 8192
shutdown_lifetime 0 seconds
EOF
[ "$(id -u)" = 0 ] && echo "cache_effective_user proxy" >>"$OUT/squid.conf" && chown -R proxy "$OUT/squid" 2>/dev/null || true
squid -N -f "$OUT/squid.conf" >"$OUT/squid.log" 2>&1 &
pids+=($!); PID_SQUID=$!

# --- HAProxy: HTTP mode, only CONNECT with authority localhost:port passes. HAProxy forwards a
# CONNECT to its server rather than answering it; the target answers the 200 itself.
cat >"$OUT/haproxy.cfg" <<EOF
global
  maxconn 3000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 60s
frontend fp
  bind 127.0.0.1:$P_HAP
  http-request deny unless METH_CONNECT { req.hdr(host) -i localhost:$TARGET_PORT }
  default_backend target
backend target
  server t 127.0.0.1:$TARGET_PORT
EOF
haproxy -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
pids+=($!); PID_HAP=$!

# --- Tinyproxy: default deny, a filter for localhost, CONNECT to the target port only.
echo '^localhost$' >"$OUT/tinyproxy.filter"
cat >"$OUT/tinyproxy.conf" <<EOF
Port $P_TINY
Listen 127.0.0.1
Timeout 60
MaxClients 100000
LogLevel Critical
Filter "$OUT/tinyproxy.filter"
FilterDefaultDeny Yes
FilterExtended Yes
ConnectPort $TARGET_PORT
EOF
if [ "$(id -u)" = 0 ]; then printf 'User nobody\nGroup nogroup\n' >>"$OUT/tinyproxy.conf"; fi
tinyproxy -d -c "$OUT/tinyproxy.conf" >"$OUT/tinyproxy.log" 2>&1 &
pids+=($!); PID_TINY=$!

for p in $TARGET_PORT $P_PAL $P_SQUID $P_HAP $P_TINY; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done

# The allowlist holds for each: a tunnel elsewhere is refused.
for p in $P_PAL $P_SQUID $P_HAP $P_TINY; do
  if "$TB" rate "127.0.0.1:$p" "example.test:$TARGET_PORT=127.0.0.1:$TARGET_PORT" 1 0.2 | grep -q '"ok":0,'; then
    :
  else
    echo "warning: proxy on $p let a tunnel to example.test through" >&2
  fi
done

run() { # name proxy|direct pid
  local name=$1 proxy=$2 pid=$3
  echo "== $name" >&2
  "$TB" rate "$proxy" "$TARGET" "$CONC" "$SECS" >"$OUT/$name.rate.json"
  sleep 1
  "$TB" rate "$proxy" "$TARGET" "$LAT_CONC" "$SECS" >"$OUT/$name.lat.json"
  "$TB" throughput "$proxy" "$TARGET" "$SECS" >"$OUT/$name.tput.json"
  if [ "$proxy" != direct ]; then
    "$TB" idle "$proxy" "$TARGET" "$IDLE" "$pid" >"$OUT/$name.idle.json"
  fi
  sleep 1
}
run direct direct 0
run palisade "127.0.0.1:$P_PAL" "$PID_PAL"
run squid "127.0.0.1:$P_SQUID" "$PID_SQUID"
run haproxy "127.0.0.1:$P_HAP" "$PID_HAP"
run tinyproxy "127.0.0.1:$P_TINY" "$PID_TINY"

python3 - "$OUT" "$CONC" "$LAT_CONC" "$IDLE" <<'EOF'
import json, sys, os
out, conc, lat_conc, idle = sys.argv[1:]
def j(n, k):
    p = os.path.join(out, f"{n}.{k}.json")
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else {}
d = j("direct", "lat")
pal = j("palisade", "rate").get("per_second", 0) or 1
print(f"| | tunnels/s ({conc} clients) | errors | vs Palisade | added p50 / p99 µs ({lat_conc} clients) | one tunnel MB/s | KiB per idle tunnel ({idle}) |")
print("|---|---|---|---|---|---|---|")
for n in ["direct", "palisade", "squid", "haproxy", "tinyproxy"]:
    r, l, t, i = j(n, "rate"), j(n, "lat"), j(n, "tput"), j(n, "idle")
    added = "—" if n == "direct" else f"{l.get('p50_us',0)-d.get('p50_us',0)} / {l.get('p99_us',0)-d.get('p99_us',0)}"
    if n == "direct":
        added = f"(direct: {d.get('p50_us')} / {d.get('p99_us')})"
    print(f"| {n} | {r.get('per_second','?')} | {r.get('errors','?')} | {r.get('per_second',0)/pal:.2f} | {added} | {t.get('mb_per_second','?')} | {i.get('kib_per_tunnel','—')} |")
# One run's figures per proxy, for a script to check (null where a measurement failed).
ms = lambda us: None if us is None else us / 1000
summary = {
    n: {
        "tunnels_per_s": j(n, "rate").get("per_second"),
        "errors": j(n, "rate").get("errors"),
        "p99_ms": ms(j(n, "lat").get("p99_us")),
        "added_p99_ms": ms(j(n, "lat")["p99_us"] - d["p99_us"]) if "p99_us" in j(n, "lat") and "p99_us" in d else None,
        "idle_kib": j(n, "idle").get("kib_per_tunnel"),
    }
    for n in ["palisade", "squid", "haproxy", "tinyproxy"]
}
summary_path = os.path.join(out, "summary.json")
with open(summary_path, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
EOF
echo "raw results in $OUT" >&2
