#!/usr/bin/env bash
# Benchmark the host renderer (issue 16, item 5) against iptables-restore + ipset restore and
# against one `nft` call per rule, in one run, inside network namespaces this script creates and
# removes (the host's own ruleset is never touched). Root only.
#
# Dataset: one NSG of 10,000 inbound rules — ClassBench acl1_10k (source prefix, destination
# port range, protocol; rules whose source covers the client are left out so that the measured
# connections cross every rule) filled up with rules of fw1_10k — plus, at priority 100, a deny
# whose source is the 901,899-prefix BGP table; the last rule allows the client. NSG-3 caps
# priorities at 4096, so the network is loaded with --ignore-errors (rules evaluated as written).
#
# Measures (median of $ROUNDS):
#   full apply   the rendered transaction through one `nft -f` (text: what `host apply` sends)
#                and through one `nft -j -f` (the same as JSON); `palisade host apply` as a
#                whole command. Wall and CPU time (the machine is shared)
#   baselines    `ipset restore` + `iptables-restore` of the equivalent rules; one `nft add
#                rule` per rule, timed for $PER_RULE calls and extrapolated
#   one rule     `palisade host apply` after one rule's port changed (its incremental path),
#                and that path's transaction alone through nft: delete by handle, insert by
#                position; the apply step inside `host apply` (its report's `seconds` and
#                `cpu_seconds`: drift check, transaction, read-back; a rule change and a full
#                replace each go as one netlink batch), against that nft transaction
#   changes      $CHANGES one-rule changes in a row through `apply` (the rule_change_bench
#                example on the rendered plan, without the command's load and compile): each
#                one netlink batch; median `seconds` / `cpu_seconds` of its apply step
#   conn/s       TCP connects (new connection, close) for $SECS s from a client namespace to a
#                server namespace enforcing the table, in both layouts (`--layout listed`, one
#                chain; `classified`, split by address behind a verdict map, what apply sends by
#                default), against the same with no table, alternating; and the rules the
#                client's first packet walks in each layout (counted in the plan); also a table
#                of one `ct state` rule (the conntrack every stateful table costs: the floor), and
#                with BASE_PALISADE=path the classified table that binary renders (a branch point)
#
#   scripts/bench-host.sh            # prints a Markdown table; raw numbers in $OUT/summary.json
#   CONN_ONLY=1 scripts/bench-host.sh   # render and connections/s only
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
PER_RULE=${PER_RULE:-500}
RULES=${RULES:-10000}
PALISADE=${PALISADE:-target/debug/palisade}
RULE_BENCH=${RULE_BENCH:-target/debug/examples/rule_change_bench}
CHANGES=${CHANGES:-10}
BASE_PALISADE=${BASE_PALISADE:-}
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
# "WALL CPU" seconds of a command (CPU: user + system of it and its children). The machine is
# shared, so wall time carries other builds' load; CPU time is what the command itself cost.
timed() {
    python3 -c '
import os, resource, subprocess, sys, time
r0 = resource.getrusage(resource.RUSAGE_CHILDREN); t0 = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
t1 = time.monotonic(); r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{t1 - t0:.4f} {(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime):.4f}")
' "$@"
}
wall() { echo "${1% *}"; }
cpu() { echo "${1#* }"; }
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
open(f"{out}/tx.nft", "w").write("\n".join(plan["nft_text"]) + "\n")
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

echo "== render, listed layout" >&2
"$PALISADE" host plan --network "$OUT/net.json" --ignore-errors --subnet bench --layout listed \
    --output json >"$OUT/plan-listed.json" 2>>"$OUT/plan.err"
# Rules the client's first packet (198.18.0.1 → :5000, allowed by the last user rule) walks in
# nsg_in, verdict map included; and the nft rules of each layout.
python3 - "$OUT" <<'EOF'
import ipaddress, json, sys
out = sys.argv[1]
client = ipaddress.ip_address("198.18.0.1")
def walk(table):
    chains = {c["name"]: c["rules"] for c in table["chains"]}
    name, n = "nsg_in", 0
    while True:
        for r in chains[name]:
            n += 1
            st = [s for s in r["stmts"] if isinstance(s, dict)]
            vm = [s["vmap"] for s in st if "vmap" in s and not s["vmap"]["v6"]]
            if vm:
                name = next(e["chain"] for e in vm[0]["entries"]
                            if ipaddress.ip_address(e["first"]) <= client <= ipaddress.ip_address(e["last"]))
                break
            if any(s.get("counter") == "in_allow_client" for s in st):
                return n
        else:
            return n
counts = json.load(open(f"{out}/counts.json"))
for layout, f in [("classified", "plan.json"), ("listed", "plan-listed.json")]:
    plan = json.load(open(f"{out}/{f}"))
    counts[f"rules_per_packet_{layout}"] = walk(plan["table"])
    counts[f"nft_rules_{layout}"] = sum(len(c["rules"]) for c in plan["table"]["chains"])
    counts[f"chains_{layout}"] = len(plan["table"]["chains"])
    if layout == "listed":
        open(f"{out}/tx-listed.nft", "w").write("\n".join(plan["nft_text"]) + "\n")
json.dump(counts, open(f"{out}/counts.json", "w"))
EOF

# The floor: conntrack on, no NSG rule (NSG-7.1 makes every rendered table stateful).
printf '%s\n' 'table inet palisade_floor {' \
    '  chain input { type filter hook input priority 0; policy accept; ct state established,related accept; }' \
    '}' >"$OUT/tx-floor.nft"
if [ -n "$BASE_PALISADE" ]; then
    echo "== render, $BASE_PALISADE" >&2
    "$BASE_PALISADE" host plan --network "$OUT/net.json" --ignore-errors --subnet bench \
        --output json >"$OUT/plan-base.json" 2>>"$OUT/plan.err"
    python3 -c 'import json, sys; open(sys.argv[2], "w").write("\n".join(json.load(open(sys.argv[1]))["nft_text"]) + "\n")' \
        "$OUT/plan-base.json" "$OUT/tx-base.nft"
fi

if [ -z "${CONN_ONLY:-}" ]; then
ip netns add "$NS_T"
echo "== full apply: one nft transaction, JSON (first run) and text (what apply sends now)" >&2
tx=() tx_cpu=() txt=() txt_cpu=()
for _ in $(seq "$ROUNDS"); do
    ip netns exec "$NS_T" nft delete table inet "$TABLE" 2>/dev/null || true
    r=$(timed ip netns exec "$NS_T" nft -j -f "$OUT/tx.json")
    tx+=("$(wall "$r")") tx_cpu+=("$(cpu "$r")")
    ip netns exec "$NS_T" nft delete table inet "$TABLE"
    r=$(timed ip netns exec "$NS_T" nft -f "$OUT/tx.nft")
    txt+=("$(wall "$r")") txt_cpu+=("$(cpu "$r")")
    ip netns exec "$NS_T" nft delete table inet "$TABLE"
done

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
echo "== one rule: the incremental transaction alone (what host apply sends)" >&2
# On the listed table: its one chain holds every rule, as in the earlier runs.
ip netns exec "$NS_T" nft -f "$OUT/tx-listed.nft"
ip netns exec "$NS_T" nft -a list chain inet "$TABLE" nsg_in >"$OUT/handles.txt"
one_tx=() one_cpu=() del=() del_cpu=()
for r in $(seq "$ROUNDS"); do
    # A middle NSG rule's nft rule: deleted by handle, inserted again (port 4444) before the
    # next one, in one transaction, as incremental_commands writes it.
    python3 - "$OUT" "$TABLE" "$r" <<'PY'
import re, sys
out, table, r = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = [l for l in open(f"{out}/handles.txt") if "comment" in l and "securityRules/r" in l]
i = len(lines) // 2 + 3 * r
h = lines[i].rsplit("# handle ", 1)[1].strip()
nxt = lines[i + 1].rsplit("# handle ", 1)[1].strip()
body = lines[i].rsplit(" # handle ", 1)[0].strip()
body = re.sub(r"th dport \S+", "th dport 4444", body)
open(f"{out}/one.nft", "w").write(
    f"delete rule inet {table} nsg_in handle {h}\n"
    f"insert rule inet {table} nsg_in position {nxt} {body}\n")
open(f"{out}/del.nft", "w").write(f"delete rule inet {table} nsg_in handle {nxt}\n")
PY
    x=$(timed ip netns exec "$NS_T" nft -f "$OUT/one.nft")
    one_tx+=("$(wall "$x")") one_cpu+=("$(cpu "$x")")
    x=$(timed ip netns exec "$NS_T" nft -f "$OUT/del.nft")
    del+=("$(wall "$x")") del_cpu+=("$(cpu "$x")")
done
ip netns exec "$NS_T" nft delete table inet "$TABLE"
echo "== one rule: $CHANGES changes in a row through apply ($RULE_BENCH)" >&2
"$RULE_BENCH" "$OUT/plan.json" "$CHANGES" >"$OUT/changes.jsonl"

echo "== baseline: ipset restore + iptables-restore" >&2
ipt=() ipt_cpu=()
for _ in $(seq "$ROUNDS"); do
    ip netns exec "$NS_T" iptables -F INPUT 2>/dev/null || true
    ip netns exec "$NS_T" ipset destroy bgp 2>/dev/null || true
    x=$(timed sh -c "ip netns exec $NS_T ipset restore <$OUT/ipset.txt && ip netns exec $NS_T iptables-restore <$OUT/iptables.txt")
    ipt+=("$(wall "$x")") ipt_cpu+=("$(cpu "$x")")
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
fi

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
empty=() ruled=() listed=() floor=() base=()
ip netns exec "$NS_B" nft -f "$OUT/tx.nft"
ip netns exec "$NS_B" nft delete table inet "$TABLE"
for _ in $(seq "$ROUNDS"); do
    empty+=("$(rate)")
    ip netns exec "$NS_B" nft -f "$OUT/tx.nft"
    ruled+=("$(rate)")
    ip netns exec "$NS_B" nft delete table inet "$TABLE"
    ip netns exec "$NS_B" nft -f "$OUT/tx-floor.nft"
    floor+=("$(rate)")
    ip netns exec "$NS_B" nft delete table inet palisade_floor
    if [ -n "$BASE_PALISADE" ]; then
        ip netns exec "$NS_B" nft -f "$OUT/tx-base.nft"
        base+=("$(rate)")
        ip netns exec "$NS_B" nft delete table inet "$TABLE"
    fi
    ip netns exec "$NS_B" nft -f "$OUT/tx-listed.nft"
    listed+=("$(rate)")
    ip netns exec "$NS_B" nft delete table inet "$TABLE"
done
kill "$SERVER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true

python3 - "$OUT" "${empty[*]}" "${ruled[*]}" "${listed[*]}" "${floor[*]}" "${base[*]}" <<'EOF'
import json, statistics, sys
out = sys.argv[1]
m = lambda s: statistics.median(float(x) for x in s.split()) if s.split() else None
empty, classified, listed, floor, base = (m(s) for s in sys.argv[2:7])
c = json.load(open(f"{out}/counts.json"))
json.dump(dict(c, conn_per_s_empty=empty, conn_per_s_classified=classified,
               conn_per_s_listed=listed, conn_per_s_floor=floor, conn_per_s_base=base,
               conn_rounds={"empty": sys.argv[2], "classified": sys.argv[3], "listed": sys.argv[4],
                            "floor": sys.argv[5], "base": sys.argv[6]}),
          open(f"{out}/conn.json", "w"), indent=1)
print("| layout | nft rules (chains) | rules the client's first packet walks | connections/s | vs empty ruleset (same run) |\n|---|---|---|---|---|")
print(f"| no table | — | — | {empty:.0f} | 1.00x |")
print(f"| conntrack only (one `ct state` rule) | 1 (1) | 1 | {floor:.0f} | {floor / empty:.2f}x |")
if base is not None:
    print(f"| classified, BASE_PALISADE | — | — | {base:.0f} | {base / empty:.2f}x |")
for name, rate in [("listed", listed), ("classified", classified)]:
    print(f"| {name} | {c['nft_rules_' + name]} ({c['chains_' + name]}) | {c['rules_per_packet_' + name]} | {rate:.0f} | {rate / empty:.2f}x |")
EOF
[ -n "${CONN_ONLY:-}" ] && exit 0

python3 - "$OUT" "$RENDER_S" "$PER_CALL" "$NFT_RULES" \
    "${tx[*]}" "${full[*]}" "${one[*]}" "${one_tx[*]}" "${ipt[*]}" "${empty[*]}" "${ruled[*]}" \
    "${tx_cpu[*]}" "${txt[*]}" "${txt_cpu[*]}" "${one_cpu[*]}" "${del[*]}" "${del_cpu[*]}" "${ipt_cpu[*]}" <<'EOF'
import json, statistics, sys
out, render, per_call, nft_rules = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
m = lambda s: statistics.median(float(x) for x in s.split())
(tx, full, one, one_tx, ipt, empty, ruled, tx_cpu, txt, txt_cpu, one_cpu, dl, dl_cpu,
 ipt_cpu) = (m(s) for s in sys.argv[5:19])
counts = json.load(open(f"{out}/counts.json"))
per_rule = per_call * (nft_rules + 1)
change = json.load(open(f"{out}/change1.json"))
import glob
step = lambda kind, key: statistics.median(json.load(open(f))["table"][key] for f in glob.glob(f"{out}/{kind}[0-9]*.json"))
full_step, full_step_cpu = step("apply", "seconds"), step("apply", "cpu_seconds")
one_step, one_step_cpu = step("change", "seconds"), step("change", "cpu_seconds")
runs = [json.loads(l)["change"] for l in open(f"{out}/changes.jsonl") if '"change"' in l]
row_s = statistics.median(r["seconds"] for r in runs)
row_cpu = statistics.median(r["cpu_seconds"] for r in runs)
row_via = sorted({r["via"] for r in runs})
s = dict(counts, render_s=render, tx_json_s=tx, tx_json_cpu_s=tx_cpu, tx_text_s=txt,
         tx_text_cpu_s=txt_cpu, host_apply_s=full, one_rule_host_apply_s=one,
         one_rule_tx_s=one_tx, one_rule_tx_cpu_s=one_cpu, delete_rule_s=dl,
         delete_rule_cpu_s=dl_cpu, iptables_ipset_s=ipt, iptables_ipset_cpu_s=ipt_cpu,
         nft_per_call_s=per_call, nft_per_rule_extrapolated_s=per_rule,
         conn_per_s_empty=empty, conn_per_s_ruleset=ruled, one_rule_report=change,
         host_apply_step_s=full_step, host_apply_step_cpu_s=full_step_cpu,
         one_rule_step_s=one_step, one_rule_step_cpu_s=one_step_cpu,
         changes_in_a_row=len(runs), change_step_s=row_s, change_step_cpu_s=row_cpu)
json.dump(s, open(f"{out}/summary.json", "w"), indent=1)
print(f"| measure | wall | CPU | baseline (same run) | ratio (wall / CPU) |\n|---|---|---|---|---|")
print(f"| full apply, JSON `nft -j -f` ({nft_rules} nft rules, {counts['set_elements']} set elements) | {tx:.2f} s | {tx_cpu:.2f} s | ipset + iptables-restore {ipt:.2f} s / {ipt_cpu:.2f} s CPU | {tx / ipt:.2f}x / {tx_cpu / ipt_cpu:.2f}x |")
print(f"| full apply, text `nft -f` (what apply sends) | {txt:.2f} s | {txt_cpu:.2f} s | same | {txt / ipt:.2f}x / {txt_cpu / ipt_cpu:.2f}x |")
print(f"| full apply, text vs JSON | | | JSON {tx:.2f} s / {tx_cpu:.2f} s | {txt / tx:.2f}x / {txt_cpu / tx_cpu:.2f}x |")
print(f"| full apply, text | {txt:.2f} s | | one nft call per rule, {per_call * 1000:.1f} ms x {nft_rules + 1} = {per_rule:.0f} s (extrapolated) | {txt / per_rule:.4f}x |")
print(f"| palisade host apply, whole command (load, compile, render, apply, read back) | {full:.1f} s | | | |")
print(f"| one rule changed: palisade host apply, whole command ({change['table']['mode']}, {change['table']['commands']} commands) | {one:.1f} s | | full apply {full:.1f} s | {one / full:.2f}x |")
print(f"| one rule changed: the transaction apply sends (delete by handle, insert by position) | {one_tx * 1000:.0f} ms | {one_cpu * 1000:.0f} ms | full text transaction {txt * 1000:.0f} ms / {txt_cpu * 1000:.0f} ms | {one_tx / txt:.4f}x / {one_cpu / txt_cpu:.4f}x |")
full_via = json.load(open(f"{out}/apply1.json"))["table"].get("via")
print(f"| full apply: the apply step of `host apply` (via {full_via}: drift check, transaction, read-back; report `seconds`) | {full_step:.2f} s | {full_step_cpu:.2f} s | full text transaction {txt:.2f} s / {txt_cpu:.2f} s | {full_step / txt:.2f}x / {full_step_cpu / txt_cpu:.2f}x |")
print(f"| one rule changed: the apply step of `host apply` (via {change['table'].get('via')}, {change['table']['commands']} edits) | {one_step * 1000:.1f} ms | {one_step_cpu * 1000:.1f} ms | the same change through nft {one_tx * 1000:.0f} ms / {one_cpu * 1000:.0f} ms | {one_step / one_tx:.4f}x / {one_step_cpu / one_cpu:.4f}x |")
print(f"| one rule changed: {len(runs)} changes in a row through `apply` (via {', '.join(row_via)}), median | {row_s * 1000:.1f} ms | {row_cpu * 1000:.1f} ms | the same change through nft {one_tx * 1000:.0f} ms / {one_cpu * 1000:.0f} ms | {row_s / one_tx:.4f}x / {row_cpu / one_cpu:.4f}x |")
print(f"| one `delete rule … handle` alone (lower bound through nft) | {dl * 1000:.0f} ms | {dl_cpu * 1000:.0f} ms | | |")
print(f"| TCP connections/s through the table (classified layout; both layouts above) | {ruled:.0f} | | empty ruleset {empty:.0f} | {ruled / empty:.2f}x |")
EOF
