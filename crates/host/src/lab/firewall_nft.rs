//! The firewall's judgement of what the gateway does not relay, as nftables rules in the
//! firewall's namespace: ICMP and every other protocol that is neither TCP nor UDP.
//!
//! The gateway relays TCP and UDP and decides them with the compiled firewall; any other
//! protocol is forwarded by the kernel, so the kernel must decide it the same way. For such a
//! packet only the network rules (FW-5) can match — DNAT matches TCP and UDP only (FW-4; the
//! compiled DNAT pass holds TCP and UDP entries alone), the application rules TCP only — and
//! then the default deny. This renders the network pass, in the compiled firewall's own
//! evaluation order (base policies, rule collection groups and collections by priority, rules
//! in order), from the same classifier entries `trace` evaluates, so the kernel's first match
//! is `trace`'s. Each decision is logged to NFLOG
//! ([`FIREWALL_LOG_GROUP`]) with a prefix naming the rule, which `nflog.rs` reads into a flow
//! record. Pure: text out, no I/O.

use crate::render::nflog_prefix as log_prefix;
use ipnet::IpNet;
use palisade_policy::firewall::{CompiledFirewall, PassView};
use palisade_policy::intervals::{prefix_set, to_prefixes, Family};
use palisade_policy::matchers::classifier::ClassifierRule;

/// The NFLOG group a firewall namespace logs its kernel-judged decisions to.
pub const FIREWALL_LOG_GROUP: u16 = 101;

/// Protocol numbers the gateway judges; the chain leaves them to it.
const TCP: u8 = 6;
const UDP: u8 = 17;

/// The chain (to be placed inside an `inet` table) that judges new non-TCP/UDP flows passing
/// through firewall `fw`. Packets of flows already judged (`ct state established,related`:
/// the echo reply, an ICMP error about a judged flow) pass.
pub fn network_rules_chain(fw: &CompiledFirewall) -> String {
    let mut out = String::from(
        "  chain network_rules {\n    type filter hook forward priority 0; policy accept;\n",
    );
    out.push_str("    meta l4proto { tcp, udp } accept comment \"judged by the gateway\"\n");
    out.push_str("    ct state != new accept\n");
    // FW-3 step 1 (DNAT) has nothing here: its entries are TCP and UDP (FW-4), the gateway's.
    // FW-3 step 2 (FW-5): network rules, the first match decides.
    let network = fw.network_pass();
    for (entry, rule) in entries(&network) {
        let (kind, verdict) = match rule.action {
            palisade_model::FirewallAction::Allow => ("fw-allow", "accept"),
            _ => ("fw-deny", "drop"),
        };
        let prefix = log_prefix(kind, &format!("{}/{}", rule.resource, rule.path()));
        for m in matches(entry) {
            out.push_str(&format!(
                "    {m} log prefix \"{prefix}\" group {FIREWALL_LOG_GROUP} {verdict}\n"
            ));
        }
    }
    // FW-3 step 5: default deny, named by the firewall alone (as `trace` names it).
    out.push_str(&format!(
        "    log prefix \"{}\" group {FIREWALL_LOG_GROUP} drop\n  }}\n",
        log_prefix("fw-deny", &fw.name)
    ));
    out
}

/// The entries of a pass that can match a protocol other than TCP and UDP, in evaluation
/// order, with their rule. Audit-mode rules are passed over (PAL-5.3), as the firewall does.
fn entries<'a>(
    pass: &'a PassView<'a>,
) -> impl Iterator<Item = (&'a ClassifierRule, &'a palisade_policy::firewall::RuleRef)> {
    pass.entries
        .iter()
        .zip(pass.entry_rule)
        .map(|(e, &r)| (e, &*pass.rules[r as usize]))
        .filter(|(e, r)| {
            !r.audit
                && !matches!(e.protocol, Some(TCP | UDP))
                // An empty port set matches nothing, whatever the protocol.
                && [&e.src_ports, &e.dst_ports]
                    .iter()
                    .all(|ports| ports.iter().any(|&(lo, hi)| lo <= hi))
        })
}

/// The nft matches of one classifier entry, one per address family it can match (a rule's
/// addresses of one family only meet packets of that family, PAL-5.1). Ports are not matched:
/// they restrict TCP and UDP only (NSG-2.2, as the classifier does).
fn matches(e: &ClassifierRule) -> Vec<String> {
    let mut out = vec![];
    for (family, nfproto, ip, icmp) in [
        (Family::V4, "ipv4", "ip", (1u8, "icmp")),
        (Family::V6, "ipv6", "ip6", (58, "ipv6-icmp")),
    ] {
        let protocol = match e.protocol {
            None => String::new(),
            Some(p) if p == icmp.0 => format!(" meta l4proto {}", icmp.1),
            // The other family's ICMP never meets this family's packets.
            Some(1 | 58) => continue,
            Some(p) => format!(" meta l4proto {p}"),
        };
        let (src, dst) = (prefix_set(&e.src, family), prefix_set(&e.dst, family));
        if src.is_empty() || dst.is_empty() {
            continue;
        }
        let mut m = format!("meta nfproto {nfproto}{protocol}");
        for (field, set) in [("saddr", src), ("daddr", dst)] {
            if set.covers(0, family.max()) {
                continue;
            }
            let items: Vec<String> = to_prefixes(&set, family)
                .iter()
                .map(|n: &IpNet| match n.prefix_len() == n.max_prefix_len() {
                    true => n.addr().to_string(),
                    false => n.to_string(),
                })
                .collect();
            m.push_str(&format!(" {ip} {field} {{ {} }}", items.join(", ")));
        }
        out.push(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::import::import_text;
    use palisade_policy::Snapshot;

    fn firewall(yaml: &str) -> Snapshot {
        let file = import_text("f.yaml", yaml, &Default::default(), None);
        Snapshot::compile(
            &file.network,
            &palisade_model::catalog::Catalogs::embedded(),
            &Default::default(),
        )
    }

    const NET: &str = r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: hub
    addressSpace: [10.0.0.0/16, "fd00::/48"]
    subnets:
      - {name: AzureFirewallSubnet, addressPrefix: 10.0.1.0/26}
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4}]
    networkRuleCollections:
      - name: late
        priority: 300
        action: {type: Allow}
        rules:
          - {name: any-icmp, protocols: [ICMP], sourceAddresses: ['*'], destinationAddresses: ['*']}
      - name: early
        priority: 100
        action: {type: Deny}
        rules:
          - {name: no-ping-db, protocols: [ICMP], sourceAddresses: ['*'], destinationAddresses: [10.9.0.0/24, 10.9.1.0/24]}
          - {name: web, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['443']}
          - {name: anything, protocols: [Any], sourceAddresses: [10.0.2.0/24], destinationAddresses: [203.0.113.9]}
"#;

    // spec FW-3, FW-5: collections by priority, rules in order, TCP/UDP left to the gateway,
    // then the default deny; each decision names its rule as `trace` does.
    #[test]
    fn network_rules_render_in_evaluation_order_then_default_deny() {
        let snap = firewall(NET);
        let fw = snap.firewall(snap.firewall_by_name("fw").unwrap());
        let text = network_rules_chain(fw);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in\n{text}"))
        };
        let tcp_udp = at("meta l4proto { tcp, udp } accept");
        let deny = at("palisade fw-deny fw/early/no-ping-db: ");
        let any = at("palisade fw-deny fw/early/anything: ");
        let allow = at("palisade fw-allow fw/late/any-icmp: ");
        let default = at("log prefix \"palisade fw-deny fw: \"");
        assert!(
            tcp_udp < deny && deny < any && any < allow && allow < default,
            "{text}"
        );
        assert_eq!(default, lines.len() - 2, "{text}");
        // The TCP rule is the gateway's: not rendered.
        assert!(!text.contains("early/web"), "{text}");
        // Adjacent prefixes are merged; ICMP is ICMPv4 for IPv4 and ICMPv6 for IPv6.
        assert!(
            lines[deny].starts_with("meta nfproto ipv4 meta l4proto icmp ip daddr { 10.9.0.0/23 }"),
            "{}",
            lines[deny]
        );
        assert!(lines[deny].ends_with("group 101 drop"));
        assert!(text.contains("meta nfproto ipv6 meta l4proto ipv6-icmp log prefix \"palisade fw-allow fw/late/any-icmp: \""), "{text}");
        // `Any` from an IPv4 source only: IPv4 only, every protocol, one address.
        assert!(
            lines[any].starts_with(
                "meta nfproto ipv4 ip saddr { 10.0.2.0/24 } ip daddr { 203.0.113.9 } log"
            ),
            "{}",
            lines[any]
        );
        assert!(!text.contains("ipv6 ip6 saddr { 10.0.2.0/24 }"));
    }

    // spec FW-4: DNAT matches TCP and UDP only, so a DNAT rule with `Any` (or naming ICMP)
    // adds nothing to the chain: ICMP to its frontend meets the network rules, then the default
    // deny, as `trace` decides it.
    #[test]
    fn dnat_rules_leave_icmp_to_the_network_rules() {
        let yaml = NET.replace(
            "    networkRuleCollections:",
            "    natRuleCollections:
      - name: inbound
        priority: 100
        action: {type: Dnat}
        rules:
          - {name: all, protocols: [Any], sourceAddresses: ['*'], destinationAddresses: [10.0.1.4], destinationPorts: ['8080'], translatedAddress: 10.0.2.4, translatedPort: '80'}
          - {name: ping, protocols: [ICMP], sourceAddresses: ['*'], destinationAddresses: ['*'], translatedAddress: 10.0.2.5}
    networkRuleCollections:",
        );
        let snap = firewall(&yaml);
        let fw = snap.firewall(snap.firewall_by_name("fw").unwrap());
        let dnat = fw.dnat_pass();
        assert_eq!(dnat.rules.len(), 2);
        assert!(
            dnat.entries
                .iter()
                .all(|e| matches!(e.protocol, Some(TCP | UDP))),
            "{:?}",
            dnat.entries
        );
        let text = network_rules_chain(fw);
        assert!(!text.contains("inbound"), "{text}");
        // The chain is the one without DNAT rules: the network rules and the default deny.
        let plain = firewall(NET);
        let without = network_rules_chain(plain.firewall(plain.firewall_by_name("fw").unwrap()));
        assert_eq!(text, without);
    }

    #[test]
    fn log_prefixes_fit_the_kernel_and_never_end_the_string() {
        let p = log_prefix("fw-allow", &format!("fw/{}/r\"x", "c".repeat(200)));
        assert!(p.len() <= 127, "{}", p.len());
        assert!(p.ends_with("..: ") && !p.contains('"'), "{p}");
        let short = log_prefix("fw-deny", "fw/c/r\"x");
        assert_eq!(short, "palisade fw-deny fw/c/r'x: ");
    }
}
