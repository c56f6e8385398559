#!/usr/bin/env bash
# Benchmark the gateway's CONNECT path against Squid, HAProxy and Tinyproxy, in one run, on
# loopback only, with the same allowlist (CONNECT to localhost:$TARGET_PORT; anything else
# denied). Bounded: each measurement runs $SECS seconds, the idle test holds $IDLE tunnels.
#
# Measures per proxy: new CONNECT tunnels per second (open, a ClientHello echoed, close; $CONC
# concurrent clients) and the proxy's own CPU time per tunnel, latency p50/p99 of that at
# moderate load ($LAT_CONC clients, interleaved with the direct connection, $LAT_ROUNDS rounds of
# $LAT_SECS s) minus the direct connection's, throughput of one established tunnel, RSS growth
# per idle tunnel. The rate is measured $ROUNDS times, the proxies taking
# turns in each round (so a noisy minute hurts them alike); the median round counts.
#
# BASELINE_BIN=path/to/palisade adds "palisade-base", another Palisade build (e.g. before a
# change) run the same way, so a change is judged against its baseline within one run.
# NO_BUILD=1 runs the release binaries already in the target directory (no cargo build).
# PALISADE_ARGS="..." adds gateway flags to this build's instances (not the baseline's), e.g.
# `--flow-log-sync always`.
# "palisade" runs this build's defaults (flow log `--flow-log-sync interval`, 100 ms, since the
# seventh step: records acknowledged after their write, fdatasync at most every 100 ms).
# SYNC_INTERVAL_MS=N adds "palisade-interval", this build with `--flow-log-sync interval
# --flow-log-sync-ms N`; SYNC_ALWAYS=1 adds "palisade-always", this build with
# `--flow-log-sync always` (records acknowledged after their batch's fdatasync).
# PROFILE=1 samples Palisade under the rate load with `perf record` (software clock, call
# graphs) and writes $OUT/palisade.profile.txt (and palisade-base.profile.txt).
#
# NETNS=0 runs on the host's loopback and its ephemeral port range; by default (as root) the
# run has a network namespace of its own with the range widened (see below why).
# PROXY_CPUS=LIST and LOAD_CPUS=LIST (taskset lists, e.g. 2,3 and 0,1) pin every proxy and the
# load (client and target) to their own CPUs, on a machine with cores to spare: then Squid's
# single thread and a multi-threaded proxy each meet the same load, undivided. TB_THREADS=N
# gives the client and the target N threads each (default 1).
#
# Installs squid, haproxy and tinyproxy from the distribution (apt-get) when missing; never
# downloads anything else. The load client is crates/gateway/examples/tunnel_bench.rs (wrk, hey
# and h2load cannot open CONNECT tunnels). Not for CI: numbers depend on the machine.
#
#   scripts/bench-gateway.sh            # prints a Markdown table, raw JSON in $OUT
#   SECS=3 IDLE=500 scripts/bench-gateway.sh   # bounded; $OUT/summary.json has per proxy
#                                       # tunnels_per_s, cpu_us_per_tunnel, added_p50_us,
#                                       # added_p99_us (and per round), idle_kib, and the
#                                       # round-by-round ratios to Squid and HAProxy
#                                       # (vs_*_by_round: median, min, max); the script
#                                       # prints whether each target of issue 14 item 5 holds,
#                                       # direct/squid, each proxy's CPU capacity against
#                                       # Squid's, and the CPU budget of a 2x-Squid rate here
#                                       # (the load generator's CPU per tunnel is measured too)
set -euo pipefail

SECS=${SECS:-3}
CONC=${CONC:-64}
LAT_CONC=${LAT_CONC:-4}
LAT_SECS=${LAT_SECS:-4}
LAT_ROUNDS=${LAT_ROUNDS:-5}
IDLE=${IDLE:-1000} # keep 3 x IDLE under the open-file limit
ROUNDS=${ROUNDS:-3}
BASELINE_BIN=${BASELINE_BIN:-}
SYNC_INTERVAL_MS=${SYNC_INTERVAL_MS:-}
SYNC_ALWAYS=${SYNC_ALWAYS:-}
read -r -a PAL_ARGS <<<"${PALISADE_ARGS:-}"
PROFILE=${PROFILE:-0}
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

if [ "${NO_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build -q --release -p palisade-cli && cargo build -q --release -p palisade-gateway --example tunnel_bench)
fi

# Every proxy makes its upstream connections to one address and port here, so at these rates
# the default ephemeral port range (28k ports, each held 60 s in TIME_WAIT by the side that
# closes first) is always full, and each connect(2) searches it: that search was up to a
# quarter of a proxy's CPU per tunnel, a cost of the loopback set-up, not of the proxy (with
# many upstream addresses a port is reused at once). As root the run goes into a network
# namespace of its own, with the range widened as high-rate proxies are deployed (1024-65535);
# the host's settings are left alone. NETNS=0 runs on the host's loopback instead.
if [ "${NETNS:-1}" != 0 ] && [ -z "${BENCH_NETNS:-}" ] && [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  ns=palisade-bench-$$
  ip netns add "$ns"
  trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" sysctl -q -w net.ipv4.ip_local_port_range="1024 65535"
  rc=0
  ip netns exec "$ns" env BENCH_NETNS="$ns" NO_BUILD=1 "$ROOT/scripts/bench-gateway.sh" "$@" || rc=$?
  exit "$rc"
fi
BIN=$CARGO_TARGET_DIR/release
TB=$BIN/examples/tunnel_bench
PROXY_CPUS=${PROXY_CPUS:-}
LOAD_CPUS=${LOAD_CPUS:-}
pin_proxy=() pin_load=()
[ -n "$PROXY_CPUS" ] && pin_proxy=(taskset -c "$PROXY_CPUS")
[ -n "$LOAD_CPUS" ] && pin_load=(taskset -c "$LOAD_CPUS")
# The CPUs a proxy runs on: its own when the proxies and the load are pinned apart, else all,
# shared with the load.
SHARED=1 CORES=$(nproc)
if [ -n "$PROXY_CPUS" ] && [ -n "$LOAD_CPUS" ]; then SHARED=0 CORES=$("${pin_proxy[@]}" nproc); fi

rm -rf "$OUT"; mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n 8192
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# The target: echo server on both loopback addresses (`localhost` may resolve to either).
"${pin_load[@]}" "$TB" serve "127.0.0.1:$TARGET_PORT" "[::1]:$TARGET_PORT" >"$OUT/target.log" 2>&1 &
pids+=($!)
PID_TARGET=$!
TARGET="localhost:$TARGET_PORT=127.0.0.1:$TARGET_PORT"

P_SQUID=13129 P_HAP=13130 P_TINY=13131

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
# start_palisade NAME PORT BINARY [GATEWAY FLAGS…]: one Palisade instance with its own data
# directory and log; its pid goes into PID[NAME], its address into PROXY[NAME], and NAME
# into PALISADES (the instances measured and profiled, in start order).
declare -A PID=([direct]=0) PROXY=([direct]=direct)
PALISADES=()
start_palisade() {
  local name=$1 port=$2 bin=$3
  shift 3
  "${pin_proxy[@]}" "$bin" gateway -n "$OUT/network.yaml" --listen "127.0.0.1:$port" --admin none \
    --data "$OUT/$name-data" --resolve localhost=127.0.0.1 --no-system-resolver --no-watch \
    --max-connections 100000 "$@" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  PID[$name]=$!
  PROXY[$name]=127.0.0.1:$port
  PALISADES+=("$name")
}
start_palisade palisade 13128 "$BIN/palisade" "${PAL_ARGS[@]}"
if [ -n "$SYNC_INTERVAL_MS" ]; then
  start_palisade palisade-interval 13133 "$BIN/palisade" \
    --flow-log-sync interval --flow-log-sync-ms "$SYNC_INTERVAL_MS" "${PAL_ARGS[@]}"
fi
if [ -n "$SYNC_ALWAYS" ]; then
  start_palisade palisade-always 13134 "$BIN/palisade" --flow-log-sync always "${PAL_ARGS[@]}"
fi
# The baseline runs its own defaults: PALISADE_ARGS may name flags it does not know.
[ -n "$BASELINE_BIN" ] && start_palisade palisade-base 13132 "$BASELINE_BIN"

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
"${pin_proxy[@]}" squid -N -f "$OUT/squid.conf" >"$OUT/squid.log" 2>&1 &
pids+=($!); PID[squid]=$!; PROXY[squid]=127.0.0.1:$P_SQUID

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
"${pin_proxy[@]}" haproxy -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
pids+=($!); PID[haproxy]=$!; PROXY[haproxy]=127.0.0.1:$P_HAP

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
"${pin_proxy[@]}" tinyproxy -d -c "$OUT/tinyproxy.conf" >"$OUT/tinyproxy.log" 2>&1 &
pids+=($!); PID[tinyproxy]=$!; PROXY[tinyproxy]=127.0.0.1:$P_TINY

# Every proxy measured, Palisade's instances first.
NAMES=(direct "${PALISADES[@]}" squid haproxy tinyproxy)
for name in "${NAMES[@]}"; do
  [ "$name" = direct ] && addr=127.0.0.1:$TARGET_PORT || addr=${PROXY[$name]}
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && break; sleep 0.1; done
done

# The allowlist holds for each: a tunnel elsewhere is refused.
for name in "${NAMES[@]}"; do
  [ "$name" = direct ] && continue
  if "${pin_load[@]}" "$TB" rate "${PROXY[$name]}" "example.test:$TARGET_PORT=127.0.0.1:$TARGET_PORT" 1 0.2 | grep -q '"ok":0,'; then
    :
  else
    echo "warning: $name let a tunnel to example.test through" >&2
  fi
done

# Idle memory first, on processes that have served only the warm-up: after the rate load an
# allocator holds freed memory that idle tunnels would reuse unseen.
for name in "${NAMES[@]}"; do
  [ "$name" = direct ] && continue
  echo "== idle: $name" >&2
  "${pin_load[@]}" "$TB" idle "${PROXY[$name]}" "$TARGET" "$IDLE" "${PID[$name]}" >"$OUT/$name.idle.json"
  sleep 1
done

# Tunnel rate: the proxies take turns, $ROUNDS times, each round starting one further along
# the list, so that no proxy always runs after the same neighbour (whose connections are
# still in TIME_WAIT, whose memory was just freed).
for round in $(seq "$ROUNDS"); do
  for k in "${!NAMES[@]}"; do
    name=${NAMES[$(((k + round - 1) % ${#NAMES[@]}))]}
    echo "== rate round $round: $name" >&2
    # The proxy's pid (0: none, for direct) and the target's: CPU per tunnel of each.
    "${pin_load[@]}" "$TB" rate "${PROXY[$name]}" "$TARGET" "$CONC" "$SECS" "${PID[$name]}" "$PID_TARGET" \
      >"$OUT/$name.rate.$round.json"
    sleep 1
  done
done

# Where Palisade's time goes under the same load (perf's software clock: no hardware counters
# needed; DWARF call graphs, so inlined async frames keep their names).
if [ "$PROFILE" = 1 ]; then
  for name in "${PALISADES[@]}"; do
    pid=${PID[$name]}
    echo "== profile: $name" >&2
    perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pid" -o "$OUT/$name.perf.data" -- sleep "$SECS" 2>/dev/null &
    perf_pid=$!
    "${pin_load[@]}" "$TB" rate "${PROXY[$name]}" "$TARGET" "$CONC" "$SECS" >/dev/null
    wait "$perf_pid" || true
    perf report -q -i "$OUT/$name.perf.data" --children --sort symbol --stdio -g none --percent-limit 0.5 \
      >"$OUT/$name.profile.txt" 2>/dev/null || true
  done
fi

# Added latency at moderate load ($LAT_CONC clients): direct and every proxy interleaved (each
# client opens one tunnel through each in turn), $LAT_ROUNDS rounds of $LAT_SECS seconds, so
# all see the same noise; per proxy p50/p99 minus direct's, pooled and per round.
echo "== latency (interleaved)" >&2
via=()
for name in "${NAMES[@]}"; do via+=("$name=${PROXY[$name]}"); done
"${pin_load[@]}" "$TB" latency "$TARGET" "$LAT_CONC" "$LAT_SECS" "$LAT_ROUNDS" "${via[@]}" >"$OUT/latency.json"

for name in "${NAMES[@]}"; do
  echo "== throughput: $name" >&2
  "${pin_load[@]}" "$TB" throughput "${PROXY[$name]}" "$TARGET" "$SECS" >"$OUT/$name.tput.json"
  sleep 1
done

python3 - "$OUT" "$CONC" "$LAT_CONC" "$IDLE" "$ROUNDS" "$CORES" "$SHARED" "${NAMES[@]}" <<'EOF'
import json, sys, os
out, conc, lat_conc, idle, rounds, cores, shared, *names = sys.argv[1:]
cores, shared = int(cores), shared == "1"
def j(n, k):
    p = os.path.join(out, f"{n}.{k}.json")
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else {}
def rate(n):
    """The median round by tunnels/s, with every round's tunnels/s."""
    rs = [r for r in (j(n, f"rate.{i}") for i in range(1, int(rounds) + 1)) if "per_second" in r]
    if not rs:
        return {}
    rs.sort(key=lambda r: r["per_second"])
    m = dict(rs[(len(rs) - 1) // 2])
    m["rounds"] = [r["per_second"] for r in rs]
    return m
lat = json.load(open(os.path.join(out, "latency.json"))) if os.path.exists(os.path.join(out, "latency.json")) else {}
spread = lambda xs: f"{min(xs)}…{max(xs)}" if xs else "—"
pal = rate("palisade").get("per_second", 0) or 1
print(f"| | tunnels/s ({conc} clients, median of {rounds}) | rounds | errors | vs Palisade | proxy CPU µs per tunnel (user / system) | load CPU µs per tunnel (client + target) | latency p50 / p99 µs ({lat_conc} clients, samples) | added p50 / p99 µs (rounds' range) | one tunnel MB/s | KiB per idle tunnel ({idle}) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for n in names:
    r, l, t, i = rate(n), lat.get(n, {}), j(n, "tput"), j(n, "idle")
    added = "—" if n == "direct" else (
        f"{l.get('added_p50_us','?')} / {l.get('added_p99_us','?')} "
        f"({spread(l.get('added_p50_rounds', []))} / {spread(l.get('added_p99_rounds', []))})")
    rounds_text = ", ".join(str(x) for x in r.get("rounds", []))
    print(f"| {n} | {r.get('per_second','?')} | {rounds_text} | {r.get('errors','?')} | {r.get('per_second',0)/pal:.2f} | {r.get('cpu_us_per_tunnel','—')} ({r.get('cpu_user_us_per_tunnel','—')} / {r.get('cpu_system_us_per_tunnel','—')}) | {r.get('load_cpu_us_per_tunnel','—')} | {l.get('p50_us','?')} / {l.get('p99_us','?')} ({l.get('samples','?')}) | {added} | {t.get('mb_per_second','?')} | {i.get('kib_per_tunnel','—')} |")
# One run's figures per proxy, for a script to check (null where a measurement failed).
summary = {
    n: {
        "tunnels_per_s": rate(n).get("per_second"),
        "rounds": rate(n).get("rounds"),
        "cpu_us_per_tunnel": rate(n).get("cpu_us_per_tunnel"),
        "cpu_user_us_per_tunnel": rate(n).get("cpu_user_us_per_tunnel"),
        "cpu_system_us_per_tunnel": rate(n).get("cpu_system_us_per_tunnel"),
        # The load generator's CPU per tunnel through this proxy: client and target.
        "client_cpu_us_per_tunnel": rate(n).get("client_cpu_us_per_tunnel"),
        "target_cpu_us_per_tunnel": rate(n).get("target_cpu_us_per_tunnel"),
        "load_cpu_us_per_tunnel": rate(n).get("load_cpu_us_per_tunnel"),
        "errors": rate(n).get("errors"),
        "latency_samples": lat.get(n, {}).get("samples"),
        "p50_us": lat.get(n, {}).get("p50_us"),
        "p99_us": lat.get(n, {}).get("p99_us"),
        "added_p50_us": lat.get(n, {}).get("added_p50_us"),
        "added_p99_us": lat.get(n, {}).get("added_p99_us"),
        "added_p50_rounds": lat.get(n, {}).get("added_p50_rounds"),
        "added_p99_rounds": lat.get(n, {}).get("added_p99_rounds"),
        "idle_kib": j(n, "idle").get("kib_per_tunnel"),
    }
    for n in names if n != "direct"
}
# Round by round: each proxy's round against Squid's and HAProxy's of the same round, seconds
# apart. The machine's speed drifts between rounds more than within one, so the median of
# these pairs is the steadier estimate of a ratio; the verdicts below stay on the medians of
# the rates. A round a proxy served none in counts (0).
def by_round(n, other):
    pairs = [(j(n, f"rate.{i}").get("per_second"), j(other, f"rate.{i}").get("per_second"))
             for i in range(1, int(rounds) + 1)]
    ratios = sorted(round(a / b, 3) for a, b in pairs if a is not None and b)
    if not ratios:
        return None
    return {"median": ratios[(len(ratios) - 1) // 2], "min": ratios[0], "max": ratios[-1],
            "pairs": len(ratios)}
for n, v in summary.items():
    v["vs_squid_by_round"] = by_round(n, "squid") if n != "squid" else None
    v["vs_haproxy_by_round"] = by_round(n, "haproxy") if n != "haproxy" else None
# How many tunnels a proxy could carry on Squid's CPU for one: Squid's CPU per tunnel over its.
sq_cpu = summary.get("squid", {}).get("cpu_us_per_tunnel")
for n, v in summary.items():
    c = v["cpu_us_per_tunnel"]
    v["capacity_vs_squid"] = round(sq_cpu / c, 3) if sq_cpu and c else None
direct = rate("direct").get("per_second")
sq_rate = summary.get("squid", {}).get("tunnels_per_s")
summary["direct"] = {
    "tunnels_per_s": direct,
    "rounds": rate("direct").get("rounds"),
    "load_cpu_us_per_tunnel": rate("direct").get("load_cpu_us_per_tunnel"),
    # The load generator alone against Squid: where it shares the cores with the proxy, about
    # the most any proxy could reach.
    "vs_squid": round(direct / sq_rate, 3) if direct and sq_rate else None,
}
c = summary["direct"]["vs_squid"]
print(f"direct / squid = {c if c is not None else '?'}x (the load generator alone)")
for n in names:
    if n != "direct":
        v = summary[n]
        print(f"cpu per tunnel: {n} {v['cpu_us_per_tunnel']} us, capacity vs squid {v['capacity_vs_squid']}x")
p, sq, hp = summary.get("palisade", {}), summary.get("squid", {}), summary.get("haproxy", {})
# What a tunnel costs the machine in all: the proxy's CPU and the load generator's.
for n, v in summary.items():
    if v.get("cpu_us_per_tunnel") and v.get("load_cpu_us_per_tunnel"):
        v["machine_us_per_tunnel"] = round(v["cpu_us_per_tunnel"] + v["load_cpu_us_per_tunnel"], 1)
# The CPU budget of a 2x-Squid rate: a tunnel may cost the CPUs the proxy runs on at most
# cores / (2 x Squid's rate). Where the load generator shares them (client + target), what it
# spends of that is gone before the proxy starts; pinned apart, the proxy has it all.
try:
    budget = cores * 1e6 / (2 * sq["tunnels_per_s"])
    load = p["load_cpu_us_per_tunnel"]
    proxy_budget = budget - load if shared else budget
    summary["budget_2x_squid"] = {
        "cores": cores,
        "shared_with_load": shared,
        "cpu_us_per_tunnel": round(budget, 1),
        "load_us_per_tunnel": load,
        "proxy_us_per_tunnel": round(proxy_budget, 1),
    }
    where = (f"{cores} cores shared with the load generator ({load} us of the "
             f"{budget:.1f} us a tunnel may cost them)" if shared else f"the proxy's {cores} core(s)")
    print(f"2x squid = {2 * sq['tunnels_per_s']:.0f} tunnels/s on {where}: the proxy may spend "
          f"{proxy_budget:.1f} us per tunnel; system time alone: palisade "
          f"{p['cpu_system_us_per_tunnel']} us, haproxy {hp['cpu_system_us_per_tunnel']} us")
except (KeyError, TypeError, ZeroDivisionError):
    pass
# Where the run took place: its own network namespace or the host's, and the port range.
summary["setup"] = {
    "netns": bool(os.environ.get("BENCH_NETNS")),
    "ip_local_port_range": open("/proc/sys/net/ipv4/ip_local_port_range").read().split(),
    "cores": cores,
    "proxies_pinned_apart": not shared,
}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
# Issue 14, item 5: does each target hold in this run?
def check(what, ok, text):
    print(f"target {what}: {'met' if ok else 'MISSED'} ({text})")
try:
    check("tunnels/s >= 2x Squid", p["tunnels_per_s"] >= 2 * sq["tunnels_per_s"],
          f"{p['tunnels_per_s'] / sq['tunnels_per_s']:.2f}x: {p['tunnels_per_s']:.0f} vs {sq['tunnels_per_s']:.0f}")
    check("CPU capacity >= 2x Squid's", p["capacity_vs_squid"] >= 2,
          f"{p['capacity_vs_squid']}x: {p['cpu_us_per_tunnel']} vs {sq['cpu_us_per_tunnel']} us per tunnel")
    check("tunnels/s >= 1.0x HAProxy", p["tunnels_per_s"] >= hp["tunnels_per_s"],
          f"{p['tunnels_per_s'] / hp['tunnels_per_s']:.2f}x: {p['tunnels_per_s']:.0f} vs {hp['tunnels_per_s']:.0f}")
    check("added p99 <= HAProxy's", p["added_p99_us"] <= hp["added_p99_us"],
          f"{p['added_p99_us']} vs {hp['added_p99_us']} us")
    check("idle tunnel <= 8 KiB", p["idle_kib"] <= 8, f"{p['idle_kib']} KiB")
except (KeyError, TypeError, ZeroDivisionError) as e:
    print(f"targets not judged: a measurement is missing ({e})")
for n in (n for n in names if n.startswith("palisade")):
    sr, hr = summary[n].get("vs_squid_by_round"), summary[n].get("vs_haproxy_by_round")
    if sr and hr:
        print(f"{n} round by round (median, range): {sr['median']}x Squid ({sr['min']}-{sr['max']}), "
              f"{hr['median']}x HAProxy ({hr['min']}-{hr['max']})")
# Every other Palisade instance of the run, against the same targets.
what = {"palisade-interval": " (flow log synced every interval)",
        "palisade-always": " (flow log synced before each acknowledgement)",
        "palisade-base": " (baseline build)"}
for other in (n for n in names if n.startswith("palisade-")):
    pi = summary.get(other, {})
    if pi.get("tunnels_per_s") and sq.get("tunnels_per_s") and hp.get("tunnels_per_s"):
        print(f"{other}{what.get(other, '')}: "
              f"{pi['tunnels_per_s'] / sq['tunnels_per_s']:.2f}x Squid, "
              f"{pi['tunnels_per_s'] / hp['tunnels_per_s']:.2f}x HAProxy tunnels/s, "
              f"capacity vs squid {pi['capacity_vs_squid']}x")
EOF
echo "raw results in $OUT" >&2
