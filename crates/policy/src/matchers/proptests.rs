//! Property tests: every matcher against a plain evaluator that checks rules one by one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;

// ---------- reference evaluators, written as plainly as possible ----------

fn ref_rule_matches(r: &ClassifierRule, k: &PacketKey, ports_only_for_tcp_udp: bool) -> bool {
    let protocol_ok = match r.protocol {
        None => true,
        Some(p) => p == k.protocol,
    };
    let src_ok = r.src.iter().any(|n| n.contains(&k.src));
    let dst_ok = r.dst.iter().any(|n| n.contains(&k.dst));
    let has_src_ports = r.src_ports.iter().any(|&(lo, hi)| lo <= hi);
    let has_dst_ports = r.dst_ports.iter().any(|&(lo, hi)| lo <= hi);
    let ports_apply = !ports_only_for_tcp_udp || k.protocol == 6 || k.protocol == 17;
    let sport_ok = r
        .src_ports
        .iter()
        .any(|&(lo, hi)| lo <= k.src_port && k.src_port <= hi);
    let dport_ok = r
        .dst_ports
        .iter()
        .any(|&(lo, hi)| lo <= k.dst_port && k.dst_port <= hi);
    protocol_ok
        && src_ok
        && dst_ok
        && has_src_ports
        && has_dst_ports
        && (!ports_apply || (sport_ok && dport_ok))
}

fn ref_first(rules: &[ClassifierRule], k: &PacketKey, ports_only: bool) -> Option<u32> {
    for (i, r) in rules.iter().enumerate() {
        if ref_rule_matches(r, k, ports_only) {
            return Some(i as u32);
        }
    }
    None
}

fn ref_all(rules: &[ClassifierRule], k: &PacketKey, ports_only: bool) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if ref_rule_matches(r, k, ports_only) {
            out.push(i as u32);
        }
    }
    out
}

fn ref_lpm(entries: &[(IpNet, u32)], a: IpAddr) -> Option<(IpNet, u32)> {
    let mut best: Option<(IpNet, u32)> = None;
    for &(net, v) in entries {
        let net = net.trunc();
        if net.contains(&a) {
            let longer = match best {
                None => true,
                Some((b, _)) => net.prefix_len() > b.prefix_len(),
            };
            if longer {
                best = Some((net, v));
            }
        }
    }
    best
}

fn ref_fqdn_all(patterns: &[(FqdnPattern, u32)], name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for (p, id) in patterns {
        if p.matches(name) && !out.contains(id) {
            out.push(*id);
        }
    }
    out.sort();
    out
}

// ---------- generators ----------

/// IPv4 addresses from a few clusters, so prefixes overlap and nest.
fn v4_addr() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        (0u32..4, any::<u8>())
            .prop_map(|(c, x)| Ipv4Addr::from(0x0a00_0000 | (c << 8) | u32::from(x))),
        any::<u32>().prop_map(Ipv4Addr::from),
        Just(Ipv4Addr::new(0, 0, 0, 0)),
        Just(Ipv4Addr::new(255, 255, 255, 255)),
    ]
}

fn v6_addr() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        (0u128..4, any::<u8>())
            .prop_map(|(c, x)| Ipv6Addr::from((0x2001_0db8u128 << 96) | (c << 8) | u128::from(x))),
        any::<u128>().prop_map(Ipv6Addr::from),
        Just(Ipv6Addr::UNSPECIFIED),
        Just(Ipv6Addr::from(u128::MAX)),
        // IPv4-mapped: must not be confused with IPv4
        any::<u8>().prop_map(|x| Ipv6Addr::from(0xffff_0a00_0000u128 | u128::from(x))),
    ]
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        v4_addr().prop_map(IpAddr::V4),
        v6_addr().prop_map(IpAddr::V6)
    ]
}

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (
            v4_addr(),
            prop_oneof![Just(0u8), Just(32u8), 0u8..=32, 20u8..=32]
        )
            .prop_map(|(a, l)| IpNet::V4(ipnet::Ipv4Net::new(a, l).unwrap())),
        (
            v6_addr(),
            prop_oneof![Just(0u8), Just(128u8), 0u8..=128, 100u8..=128]
        )
            .prop_map(|(a, l)| IpNet::V6(ipnet::Ipv6Net::new(a, l).unwrap())),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(0u16),
        Just(65535u16),
        Just(80u16),
        Just(443u16),
        79u16..=81,
        any::<u16>()
    ]
}

fn port_set() -> impl Strategy<Value = Vec<(u16, u16)>> {
    prop_oneof![
        Just(vec![(0u16, 65535u16)]),
        prop::collection::vec((port(), port()), 0..4),
        prop::collection::vec(port().prop_map(|p| (p, p)), 1..3),
    ]
}

fn addr_set() -> impl Strategy<Value = Vec<IpNet>> {
    prop_oneof![
        Just(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]),
        prop::collection::vec(net(), 0..4),
        prop::collection::vec(net(), 1..2),
    ]
}

fn rule() -> impl Strategy<Value = ClassifierRule> {
    (
        prop_oneof![
            Just(None),
            Just(Some(6u8)),
            Just(Some(17u8)),
            Just(Some(1u8)),
            any::<u8>().prop_map(Some)
        ],
        addr_set(),
        addr_set(),
        port_set(),
        port_set(),
    )
        .prop_map(
            |(protocol, src, dst, src_ports, dst_ports)| ClassifierRule {
                protocol,
                src,
                dst,
                src_ports,
                dst_ports,
            },
        )
}

/// Packets: same-family most of the time, drawn near the rules' clusters.
fn packet() -> impl Strategy<Value = PacketKey> {
    let family = prop_oneof![
        4 => (v4_addr(), v4_addr()).prop_map(|(s, d)| (IpAddr::V4(s), IpAddr::V4(d))),
        4 => (v6_addr(), v6_addr()).prop_map(|(s, d)| (IpAddr::V6(s), IpAddr::V6(d))),
        1 => (addr(), addr()),
    ];
    (
        family,
        prop_oneof![Just(6u8), Just(17u8), Just(1u8), any::<u8>()],
        port(),
        port(),
    )
        .prop_map(|((src, dst), protocol, src_port, dst_port)| PacketKey {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
        })
}

/// Packets drawn inside a given rule, so that late rules get matched too.
fn packet_in(r: &ClassifierRule, salt: u64) -> Option<PacketKey> {
    let pick_net = |set: &[IpNet], s: u64| -> Option<IpAddr> {
        let n = set.get((s as usize) % set.len().max(1))?;
        Some(match n {
            IpNet::V4(n) => {
                let host = (s as u32) & !u32::from(n.netmask());
                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
            }
            IpNet::V6(n) => {
                let host = (u128::from(s) * 0x9e37_79b9_7f4a_7c15) & !u128::from(n.netmask());
                IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
            }
        })
    };
    let src = pick_net(&r.src, salt)?;
    let dst = r
        .dst
        .iter()
        .filter(|n| {
            matches!(
                (n, src),
                (IpNet::V4(_), IpAddr::V4(_)) | (IpNet::V6(_), IpAddr::V6(_))
            )
        })
        .cloned()
        .collect::<Vec<_>>();
    let dst = pick_net(&dst, salt >> 7)?;
    let pick_port = |set: &[(u16, u16)], s: u64| {
        set.iter()
            .find(|(lo, hi)| lo <= hi)
            .map(|&(lo, hi)| lo + (s % (u64::from(hi - lo) + 1)) as u16)
            .unwrap_or(0)
    };
    Some(PacketKey {
        src,
        dst,
        protocol: r.protocol.unwrap_or(6),
        src_port: pick_port(&r.src_ports, salt >> 13),
        dst_port: pick_port(&r.dst_ports, salt >> 29),
    })
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("www".to_string()),
        Just("example".to_string()),
        Just("badexample".to_string()),
        Just("com".to_string()),
        Just("xn--bcher-kva".to_string()),
        "[a-z0-9-]{1,12}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..5).prop_map(|v| v.join("."))
}

fn pattern() -> impl Strategy<Value = FqdnPattern> {
    prop_oneof![
        4 => name().prop_map(FqdnPattern::Exact),
        4 => name().prop_map(FqdnPattern::SubdomainWildcard),
        2 => (name(), any::<prop::sample::Index>()).prop_map(|(n, i)| {
            // a raw suffix: any non-empty tail of a name, possibly cutting a label
            let cut = i.index(n.len());
            let tail = n[cut..].trim_start_matches('.').to_string();
            if tail.is_empty() { FqdnPattern::SuffixWildcard(n) } else { FqdnPattern::SuffixWildcard(tail) }
        }),
        1 => Just(FqdnPattern::Any),
    ]
}

// ---------- properties ----------

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn matchers_classifier_equals_reference(
        rules in prop::collection::vec(rule(), 0..60),
        packets in prop::collection::vec(packet(), 1..40),
        salts in prop::collection::vec(any::<u64>(), 1..40),
        ports_only in any::<bool>(),
    ) {
        let opts = ClassifierOptions { ports_only_for_tcp_udp: ports_only };
        let c = Classifier::build(rules.clone(), opts);
        let mut probes = packets;
        for (i, s) in salts.iter().enumerate() {
            if let Some(r) = rules.get(i % rules.len().max(1)) {
                probes.extend(packet_in(r, *s));
            }
        }
        let mut out = Vec::new();
        for k in &probes {
            prop_assert_eq!(c.first_match(k), ref_first(&rules, k, ports_only), "packet {:?}", k);
            c.all_matches(k, &mut out);
            prop_assert_eq!(&out, &ref_all(&rules, k, ports_only), "packet {:?}", k);
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matchers_classifier_many_rules_equals_reference(
        rules in prop::collection::vec(rule(), 100..300),
        salts in prop::collection::vec(any::<u64>(), 50..100),
        packets in prop::collection::vec(packet(), 20..50),
    ) {
        let opts = ClassifierOptions::default();
        let c = Classifier::build(rules.clone(), opts);
        let mut probes = packets;
        for (i, s) in salts.iter().enumerate() {
            probes.extend(packet_in(&rules[(i * 7 + *s as usize) % rules.len()], *s));
        }
        for k in &probes {
            prop_assert_eq!(c.first_match(k), ref_first(&rules, k, true), "packet {:?}", k);
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn matchers_lpm_equals_reference(
        entries in prop::collection::vec((net(), any::<u32>()), 0..200),
        addrs in prop::collection::vec(addr(), 1..100),
    ) {
        let t = Lpm::build(entries.clone());
        // Probe inside every prefix too: its first address and its last one.
        let mut probes = addrs;
        for (n, _) in &entries {
            probes.push(n.network());
            probes.push(n.broadcast());
        }
        for a in probes {
            let got = t.lookup(a).map(|(n, v)| (n, *v));
            prop_assert_eq!(got, ref_lpm(&entries, a), "address {}", a);
        }
    }
}

proptest! {
    // Each case builds a table of ~2,300 prefixes and scans it per probe: fewer cases.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Tables of 1,024 prefixes or more of a family keep the large direct array (the small
    /// tables above get the small one): both layouts against the reference.
    #[test]
    fn matchers_lpm_large_table_equals_reference(
        v4 in prop::collection::vec((any::<u32>(), 16u8..=32, any::<u32>()), 1100..1200),
        v6 in prop::collection::vec((any::<u128>(), 16u8..=128, any::<u32>()), 1100..1200),
        addrs in prop::collection::vec(addr(), 1..50),
    ) {
        let entries: Vec<(IpNet, u32)> = v4
            .iter()
            .map(|&(a, l, v)| (IpNet::V4(ipnet::Ipv4Net::new(a.into(), l).unwrap()), v))
            .chain(v6.iter().map(|&(a, l, v)| {
                (IpNet::V6(ipnet::Ipv6Net::new(a.into(), l).unwrap()), v)
            }))
            .collect();
        let t = Lpm::build(entries.clone());
        // The large layout: at least the 2^18-word IPv4 direct array.
        prop_assume!(t.family_stats()[0].prefixes >= 1024);
        prop_assert!(t.family_stats()[0].index_bytes >= 4 << 18);
        let mut probes = addrs;
        for (n, _) in entries.iter().step_by(16) {
            probes.push(n.network());
            probes.push(n.broadcast());
        }
        for a in probes {
            let got = t.lookup(a).map(|(n, v)| (n, *v));
            prop_assert_eq!(got, ref_lpm(&entries, a), "address {}", a);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn matchers_fqdn_equals_reference(
        patterns in prop::collection::vec((pattern(), 0u32..50), 0..60),
        names in prop::collection::vec(name(), 1..40),
    ) {
        let m = FqdnMatcher::build(patterns.clone());
        // Probe the patterns' own texts and their subdomains as well.
        let mut probes = names;
        for (p, _) in &patterns {
            if let FqdnPattern::Exact(s) | FqdnPattern::SubdomainWildcard(s) | FqdnPattern::SuffixWildcard(s) = p {
                probes.push(s.clone());
                probes.push(format!("x.{s}"));
                probes.push(format!("bad{s}"));
            }
        }
        let mut out = Vec::new();
        for n in &probes {
            let expect = ref_fqdn_all(&patterns, n);
            prop_assert_eq!(m.best(n), expect.first().copied(), "name {}", n);
            m.all(n, &mut out);
            prop_assert_eq!(&out, &expect, "name {}", n);
        }
    }

    #[test]
    fn matchers_fqdn_normal_form_is_case_dot_and_idn_blind(
        n in name(),
        upper in prop::collection::vec(any::<bool>(), 64),
        dot in any::<bool>(),
    ) {
        let mut variant: String = n
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
            .collect();
        if dot {
            variant.push('.');
        }
        prop_assert_eq!(normalize_name(&variant), normalize_name(&n));
        let unicode = n.replace("xn--bcher-kva", "bücher");
        prop_assert_eq!(normalize_name(&unicode), normalize_name(&n));
        if let Some(norm) = normalize_name(&n) {
            let m = FqdnMatcher::build(vec![(FqdnPattern::parse(&variant).unwrap(), 1)]);
            prop_assert_eq!(m.best(&norm), Some(1));
        }
    }
}
