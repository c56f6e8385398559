#!/usr/bin/env bash
# Benchmark the host renderer (issue 16, item 5) against iptables-restore + ipset restore and
# against one `nft` call per rule, in one run, inside network namespaces this script creates and
# removes (the host's own ruleset is never touched). Root only.
#
# Dataset: one NSG of 10,000 inbound rules — ClassBench acl1_10k (source prefix, destination
# port range, protocol; rules whose source covers the client are left out so that the measured
# connections cross every rule) filled up with rules of fw1_10k — plus, at priority 100, a deny
# whose source is the 1,062,046-prefix BGP table; the last rule allows the client. NSG-3 caps
# priorities at 4096, so the network is loaded with --ignore-errors (rules evaluated as written).
#
# Measures (median of $ROUNDS):
#   full apply   the rendered transaction (`host plan --output json`: what `host apply` sends)
#                through one `nft -j -f`; and `palisade host apply` as a whole command
#   baselines    `ipset restore` + `iptables-restore` of the equivalent rules; one `nft add
#                rule` per rule, timed for $PER_RULE calls and extrapolated
#   one rule     `palisade host apply` after one rule's port changed (its incremental path)
#   conn/s       TCP connects (new connection, close) for $SECS s from a client namespace to a
#                server namespace enforcing the table, against the same with no table
#
#   scripts/bench-host.sh            # prints a Markdown table; raw numbers in $OUT/summary.json
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
PER_RULE=${PER_RULE:-500}
RULES=${RULES:-10000}
PALISADE=${PALISADE:-target/debug/palisade}
DATA=${DATA:-../shared/data}
OUT=${OUT:-$(mktemp -d)}
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-host: needs root (namespaces, nft)" >&2; exit 1; }
for t in nft ip iptables-restore ipset python3; do
    command -v $t >/dev/null || { echo "bench-host: $t missing (apt-get install nftables iptables ipset)" >&2; exit 1; }
done

TAG="pb$$"
NS_A="${TAG}a" NS_B="${TAG}b" NS_T="${TAG}t"
cleanup() {
    for ns in "$NS_A" "$NS_B" "$NS_T"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.4f}')" "$1" "$2"; }
median() { python3 -c "import sys, statistics; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }

echo "== data ($OUT)" >&2
python3 - "$DATA" "$RULES" "$OUT" <<'EOF'
import gzip, ipaddress, json, sys
data, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = ipaddress.ip_address("198.18.0.1")
rules = []
for name in ["acl1_10k", "fw1_10k", "acl2_10k"]:
    for line in open(f"{data}/classbench/filters/{name}"):
        f = line.rstrip("\t\n").split("\t")
        src = ipaddress.ip_network(f[0][1:], strict=False)
        if client in src:
            continue
        lo, hi = [int(x) for x in f[3].split(":")]
        proto = {"0x06/0xFF": "Tcp", "0x11/0xFF": "Udp", "0x01/0xFF": "Icmp"}.get(f[4], "*")
        rules.append((str(src), "*" if (lo, hi) == (0, 65535) else (str(lo) if lo == hi else f"{lo}-{hi}"), proto))
        if len(rules) == n - 2:
            break
    if len(rules) == n - 2:
        break
bgp = [l.strip() for l in gzip.open(f"{data}/bgp-prefixes/tier1-prefixes-2024.txt.gz", "rt") if l.strip()]
bgp = [p for p in bgp if ":" not in p and client not in ipaddress.ip_network(p, strict=False)]
def nsg(changed):
    sec = [{"name": "deny-bgp", "priority": 100, "direction": "Inbound", "access": "Deny", "protocol": "*",
            "sourceAddressPrefixes": bgp, "destinationAddressPrefix": "*", "destinationPortRange": "*"}]
    for i, (src, ports, proto) in enumerate(rules):
        if changed and i == len(rules) // 2:
            ports = "4444"
        sec.append({"name": f"r{i}", "priority": 101 + i, "direction": "Inbound",
                    "access": "Deny" if i % 2 else "Allow", "protocol": proto,
                    "sourceAddressPrefix": src, "destinationAddressPrefix": "*",
                    "destinationPortRange": ports if proto in ("Tcp", "Udp") else "*"})
    sec.append({"name": "allow-client", "priority": 101 + len(rules), "direction": "Inbound",
                "access": "Allow", "protocol": "Tcp", "sourceAddressPrefix": str(client),
                "destinationAddressPrefix": "*", "destinationPortRange": "5000"})
    return {"apiVersion": "palisade/v1",
            "virtualNetworks": [{"name": "bench", "addressSpace": ["10.200.0.0/16"],
                                 "subnets": [{"name": "bench", "addressPrefix": "10.200.1.0/24",
                                              "networkSecurityGroup": "bench-nsg"}]}],
            "networkSecurityGroups": [{"name": "bench-nsg", "securityRules": sec}]}
json.dump(nsg(False), open(f"{out}/net.json", "w"))
json.dump(nsg(True), open(f"{out}/net-changed.json", "w"))
# Baselines: the same rules for iptables (inbound = INPUT) and the prefix table for ipset.
with open(f"{out}/ipset.txt", "w") as f:
    f.write(f"create bgp hash:net family inet hashsize 1048576 maxelem {len(bgp) * 2}\n")
    f.writelines(f"add bgp {p}\n" for p in bgp)
with open(f"{out}/iptables.txt", "w") as f:
    f.write("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n")
    f.write("-A INPUT -m set --match-set bgp src -j DROP\n")
    for i, (src, ports, proto) in enumerate(rules):
        m = f"-s {src}"
        if proto != "*":
            m += f" -p {proto.lower()}"
            if proto in ("Tcp", "Udp") and ports != "*":
                m += f" --dport {ports.replace('-', ':')}"
        f.write(f"-A INPUT {m} -j {'DROP' if i % 2 else 'ACCEPT'}\n")
    f.write("-A INPUT -s 198.18.0.1 -p tcp --dport 5000 -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n")
with open(f"{out}/counts.json", "w") as f:
    json.dump({"nsg_rules": len(rules) + 2, "bgp_prefixes": len(bgp)}, f)
EOF

echo "== render" >&2
t0=$(now)
"$PALISADE" host plan --network "$OUT/net.json" --ignore-errors --subnet bench --output json \
    >"$OUT/plan.json" 2>"$OUT/plan.err"
t1=$(now)
RENDER_S=$(elapsed "$t0" "$t1")
python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
plan = json.load(open(f"{out}/plan.json"))
json.dump(plan["nft"], open(f"{out}/tx.json", "w"))
cmds = plan["nft"]["nftables"]
rules = [c["add"]["rule"] for c in cmds if "add" in c and "rule" in c["add"]]
elements = sum(len(c["add"]["set"].get("elem", [])) for c in cmds if "add" in c and "set" in c["add"])
table = plan["table"]["table"]
# One `nft add rule` per rule for the per-call baseline: the same rules as nft text.
counts = json.load(open(f"{out}/counts.json"))
counts.update(nft_rules=len(rules), set_elements=elements, table=table)
json.dump(counts, open(f"{out}/counts.json", "w"))
EOF
TABLE=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['table'])" "$OUT/counts.json")
NFT_RULES=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['nft_rules'])" "$OUT/counts.json")

ip netns add "$NS_T"
echo "== full apply: one nft transaction" >&2
tx=()
for _ in $(seq "$ROUNDS"); do
    ip netns exec "$NS_T" nft delete table inet "$TABLE" 2>/dev/null || true
    t0=$(now); ip netns exec "$NS_T" nft -j -f "$OUT/tx.json"; t1=$(now)
    tx+=("$(elapsed "$t0" "$t1")")
done
ip netns exec "$NS_T" nft delete table inet "$TABLE"

echo "== full apply: palisade host apply, then one rule changed" >&2
full=() one=()
for r in $(seq "$ROUNDS"); do
    st="$OUT/state$r"
    t0=$(now)
    "$PALISADE" host apply --network "$OUT/net.json" --ignore-errors --subnet bench --no-routes \
        --netns "$NS_T" --state "$st" --output json >"$OUT/apply$r.json" 2>>"$OUT/apply.err"
    t1=$(now)
    "$PALISADE" host apply --network "$OUT/net-changed.json" --ignore-errors --subnet bench --no-routes \
        --netns "$NS_T" --state "$st" --output json >"$OUT/change$r.json" 2>>"$OUT/apply.err"
    t2=$(now)
    full+=("$(elapsed "$t0" "$t1")") one+=("$(elapsed "$t1" "$t2")")
    "$PALISADE" host remove --netns "$NS_T" --state "$st" >/dev/null
done
echo "== one rule: the incremental transaction alone" >&2
ip netns exec "$NS_T" nft -j -f "$OUT/tx.json"
# The handle of the chain's first NSG rule (read to the end: no SIGPIPE under pipefail).
H=$(ip netns exec "$NS_T" nft -a list chain inet "$TABLE" nsg_in | awk '/comment/ && !h { h = $NF } END { print h }')
one_tx=()
for _ in $(seq "$ROUNDS"); do
    t0=$(now)
    ip netns exec "$NS_T" nft replace rule inet "$TABLE" nsg_in handle "$H" ip saddr 192.0.2.0/24 tcp dport 4444 drop
    t1=$(now)
    one_tx+=("$(elapsed "$t0" "$t1")")
done
ip netns exec "$NS_T" nft delete table inet "$TABLE"

echo "== baseline: ipset restore + iptables-restore" >&2
ipt=()
for _ in $(seq "$ROUNDS"); do
    ip netns exec "$NS_T" iptables -F INPUT 2>/dev/null || true
    ip netns exec "$NS_T" ipset destroy bgp 2>/dev/null || true
    t0=$(now)
    ip netns exec "$NS_T" ipset restore <"$OUT/ipset.txt"
    ip netns exec "$NS_T" iptables-restore <"$OUT/iptables.txt"
    t1=$(now)
    ipt+=("$(elapsed "$t0" "$t1")")
done
ip netns exec "$NS_T" iptables -F INPUT
ip netns exec "$NS_T" ipset destroy bgp

echo "== baseline: one nft call per rule ($PER_RULE calls, extrapolated)" >&2
ip netns exec "$NS_T" nft add table inet per_rule
ip netns exec "$NS_T" nft add chain inet per_rule c '{ type filter hook input priority 0; }'
t0=$(now)
for i in $(seq "$PER_RULE"); do
    ip netns exec "$NS_T" nft add rule inet per_rule c ip saddr "10.$((i / 250)).$((i % 250)).0/24" tcp dport "$((1000 + i))" accept
done
t1=$(now)
PER_CALL=$(python3 -c "import sys; print(float(sys.argv[1]) / int(sys.argv[2]))" "$(elapsed "$t0" "$t1")" "$PER_RULE")
ip netns del "$NS_T"

echo "== connections/s: empty vs rendered ruleset" >&2
ip netns add "$NS_A"; ip netns add "$NS_B"
ip link add "${TAG}x" netns "$NS_A" type veth peer name "${TAG}y" netns "$NS_B"
ip -n "$NS_A" addr add 198.18.0.1/24 dev "${TAG}x"; ip -n "$NS_A" link set "${TAG}x" up
ip -n "$NS_B" addr add 10.200.1.4/24 dev "${TAG}y"; ip -n "$NS_B" link set "${TAG}y" up
ip -n "$NS_A" route add 10.200.1.0/24 dev "${TAG}x"
ip -n "$NS_B" route add 198.18.0.0/24 dev "${TAG}y"
ip -n "$NS_A" link set lo up; ip -n "$NS_B" link set lo up
ip netns exec "$NS_B" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.200.1.4", 5000)); s.listen(1024)
while True:
    c, _ = s.accept(); c.close()
' &
SERVER=$!
sleep 0.5
rate() {
    ip netns exec "$NS_A" python3 -c '
import socket, sys, time
end = time.monotonic() + float(sys.argv[1]); n = 0
while time.monotonic() < end:
    c = socket.create_connection(("10.200.1.4", 5000), timeout=2)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    c.close(); n += 1
print(n / float(sys.argv[1]))
' "$SECS"
}
empty=() ruled=()
ip netns exec "$NS_B" nft -j -f "$OUT/tx.json"
ip netns exec "$NS_B" nft delete table inet "$TABLE"
for _ in $(seq "$ROUNDS"); do
    empty+=("$(rate)")
    ip netns exec "$NS_B" nft -j -f "$OUT/tx.json"
    ruled+=("$(rate)")
    ip netns exec "$NS_B" nft delete table inet "$TABLE"
done
kill "$SERVER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true

python3 - "$OUT" "$RENDER_S" "$PER_CALL" "$NFT_RULES" \
    "${tx[*]}" "${full[*]}" "${one[*]}" "${one_tx[*]}" "${ipt[*]}" "${empty[*]}" "${ruled[*]}" <<'EOF'
import json, statistics, sys
out, render, per_call, nft_rules = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
m = lambda s: statistics.median(float(x) for x in s.split())
tx, full, one, one_tx, ipt, empty, ruled = (m(s) for s in sys.argv[5:12])
counts = json.load(open(f"{out}/counts.json"))
per_rule = per_call * (nft_rules + 1)
s = dict(counts, render_s=render, tx_s=tx, host_apply_s=full, one_rule_host_apply_s=one,
         one_rule_nft_replace_s=one_tx, iptables_ipset_s=ipt, nft_per_call_s=per_call,
         nft_per_rule_extrapolated_s=per_rule, conn_per_s_empty=empty, conn_per_s_ruleset=ruled,
         one_rule_report=json.load(open(f"{out}/change1.json")))
json.dump(s, open(f"{out}/summary.json", "w"), indent=1)
print(f"| measure | result | baseline | ratio |\n|---|---|---|---|")
print(f"| full apply, one nft transaction ({nft_rules} nft rules, {counts['set_elements']} set elements) | {tx:.3f} s | iptables-restore + ipset restore {ipt:.3f} s | {tx / ipt:.2f}x |")
print(f"| full apply, one nft transaction | {tx:.3f} s | one nft call per rule, {per_call * 1000:.1f} ms x {nft_rules + 1} = {per_rule:.0f} s (extrapolated) | {tx / per_rule:.4f}x |")
print(f"| palisade host apply, whole command (load, compile, render, apply, read back) | {full:.2f} s | — | — |")
print(f"| one rule changed: palisade host apply, whole command | {one:.2f} s | full apply {full:.2f} s | {one / full:.2f}x |")
print(f"| one rule changed: one nft replace-by-handle call | {one_tx * 1000:.1f} ms | full transaction {tx * 1000:.0f} ms | {one_tx / tx:.4f}x |")
print(f"| TCP connections/s through the table | {ruled:.0f} | empty ruleset {empty:.0f} | {ruled / empty:.2f}x |")
EOF
