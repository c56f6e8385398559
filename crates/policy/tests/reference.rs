//! Property tests: the compiled evaluation against plain reference evaluators written straight
//! from the spec — NSG first match with default rules (NSG-4, NSG-5.1, NSG-2.2), route selection
//! (RT-3.1, RT-5), application-rule FQDN matching and ordering (FW-2, FW-6.3).

use ipnet::IpNet;
use palisade_model::catalog::Catalogs;
use palisade_model::*;
use palisade_policy::{CompileOptions, Flow, Snapshot, TraceOptions, Verdict};
use proptest::prelude::*;
use std::net::IpAddr;
use std::sync::OnceLock;

fn catalogs() -> &'static Catalogs {
    static C: OnceLock<Catalogs> = OnceLock::new();
    C.get_or_init(Catalogs::embedded)
}

// ------------------------------------------------------------------------------------ strategies

/// Addresses from a small pool so that prefixes overlap and flows hit them.
fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, 0u8..4).prop_map(|(a, b)| IpAddr::from([10, 0, a, b])),
        (0u8..4).prop_map(|b| IpAddr::from([203, 0, 113, b])),
        Just(IpAddr::from([168, 63, 129, 16])),
        (0u16..4).prop_map(|b| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, b])),
        (0u16..4).prop_map(|b| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, b])),
    ]
}

fn prefix() -> impl Strategy<Value = AddressItem> {
    prop_oneof![
        1 => Just(AddressItem::Any),
        4 => (addr(), 0u8..=128).prop_map(|(a, l)| {
            let max = if a.is_ipv4() { 32 } else { 128 };
            let len = if l > max { max } else { l };
            let len = if a.is_ipv4() { [0, 8, 16, 24, 30, 32][(len as usize) % 6] } else { [0, 32, 64, 120, 128][(len as usize) % 5] };
            AddressItem::Prefix(IpNet::new(a, len).unwrap().trunc())
        }),
    ]
}

fn ports() -> impl Strategy<Value = Vec<PortRange>> {
    prop::collection::vec(
        prop_oneof![
            Just(PortRange::ANY),
            Just(PortRange::single(0)),
            Just(PortRange::single(65535)),
            (0u16..100).prop_map(PortRange::single),
            (0u16..100, 0u16..100).prop_map(|(a, b)| PortRange {
                first: a.min(b),
                last: a.max(b)
            }),
        ],
        1..3,
    )
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Icmp),
        Just(Protocol::Any),
        Just(Protocol::Esp)
    ]
}

fn rule_side() -> impl Strategy<Value = RuleSide> {
    (prop::collection::vec(prefix(), 1..3), ports()).prop_map(|(a, p)| RuleSide {
        address_prefixes: a,
        application_security_groups: vec![],
        port_ranges: p,
    })
}

fn rules() -> impl Strategy<Value = Vec<SecurityRule>> {
    prop::collection::vec(
        (
            protocol(),
            rule_side(),
            rule_side(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        0..12,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(
                |(i, (protocol, source, destination, allow, inbound, audit))| SecurityRule {
                    name: format!("r{i}"),
                    description: None,
                    protocol,
                    source,
                    destination,
                    access: if allow { Access::Allow } else { Access::Deny },
                    // Unique per direction by construction; shuffled against input order.
                    priority: 4000 - (i as u32 * 37 % 3000),
                    direction: if inbound {
                        Direction::Inbound
                    } else {
                        Direction::Outbound
                    },
                    is_default: false,
                    palisade: PalisadeSettings {
                        mode: if audit && i % 3 == 0 {
                            RuleMode::Audit
                        } else {
                            RuleMode::Enforce
                        },
                        ..Default::default()
                    },
                    origin: Origin::default(),
                },
            )
            .collect()
    })
}

fn flow() -> impl Strategy<Value = Flow> {
    // A packet's two addresses share a family (PAL-5.1).
    (
        addr(),
        addr(),
        protocol(),
        prop_oneof![Just(0u16), Just(65535u16), 0u16..100],
        prop_oneof![Just(0u16), Just(65535u16), 0u16..100],
    )
        .prop_filter("one family", |(s, d, ..)| s.is_ipv4() == d.is_ipv4())
        .prop_map(|(s, d, p, sp, dp)| Flow {
            source: s,
            source_port: sp,
            destination: d,
            destination_port: dp,
            protocol: if p == Protocol::Any { Protocol::Tcp } else { p },
            host: None,
            app_protocol: None,
        })
}

// ------------------------------------------------------------------------------------ reference

const LB: [u8; 4] = [168, 63, 129, 16];

fn is_internet(a: IpAddr) -> bool {
    let special: &[&str] = &[
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "168.63.129.16/32",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
        "ff00::/8",
    ];
    let global = a.is_ipv4() || "2000::/3".parse::<IpNet>().unwrap().contains(&a);
    global
        && !special
            .iter()
            .any(|s| s.parse::<IpNet>().unwrap().contains(&a))
}

/// NSG-8.1 without a virtual network: only the platform address.
fn is_virtual_network(a: IpAddr) -> bool {
    a == IpAddr::from(LB)
}

fn item_matches(i: &AddressItem, a: IpAddr) -> bool {
    match i {
        AddressItem::Any => true,
        AddressItem::Prefix(p) => p.contains(&a),
        AddressItem::ServiceTag(t) if t == "VirtualNetwork" => is_virtual_network(a),
        AddressItem::ServiceTag(t) if t == "Internet" => is_internet(a),
        AddressItem::ServiceTag(t) if t == "AzureLoadBalancer" => a == IpAddr::from(LB),
        _ => false,
    }
}

fn ref_matches(r: &SecurityRule, f: &Flow) -> bool {
    let proto_ok = match r.protocol {
        Protocol::Any => true,
        p => p == f.protocol,
    };
    let ports = matches!(f.protocol, Protocol::Tcp | Protocol::Udp);
    proto_ok
        && r.source
            .address_prefixes
            .iter()
            .any(|i| item_matches(i, f.source))
        && r.destination
            .address_prefixes
            .iter()
            .any(|i| item_matches(i, f.destination))
        && (!ports
            || r.source
                .port_ranges
                .iter()
                .any(|p| p.contains(f.source_port)))
        && (!ports
            || r.destination
                .port_ranges
                .iter()
                .any(|p| p.contains(f.destination_port)))
}

/// NSG-5.1 written plainly: sort, first enforcing match, defaults last.
fn reference_nsg(rules: &[SecurityRule], dir: Direction, f: &Flow) -> (String, Access) {
    let mut user: Vec<&SecurityRule> = rules.iter().filter(|r| r.direction == dir).collect();
    user.sort_by_key(|r| r.priority);
    for r in user {
        if r.palisade.mode == RuleMode::Enforce && ref_matches(r, f) {
            return (r.name.clone(), r.access);
        }
    }
    let (s, d) = (f.source, f.destination);
    match dir {
        Direction::Inbound if is_virtual_network(s) && is_virtual_network(d) => {
            ("AllowVnetInBound".into(), Access::Allow)
        }
        Direction::Inbound if s == IpAddr::from(LB) => {
            ("AllowAzureLoadBalancerInBound".into(), Access::Allow)
        }
        Direction::Inbound => ("DenyAllInBound".into(), Access::Deny),
        Direction::Outbound if is_virtual_network(s) && is_virtual_network(d) => {
            ("AllowVnetOutBound".into(), Access::Allow)
        }
        Direction::Outbound if is_internet(d) => ("AllowInternetOutBound".into(), Access::Allow),
        Direction::Outbound => ("DenyAllOutBound".into(), Access::Deny),
    }
}

proptest! {
    // Failures are kept beside this file (`reference.proptest-regressions`) and replayed first.
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// NSG-5.1, NSG-4, NSG-2.2, PAL-5.3: compiled NSG evaluation equals the plain reference.
    #[test]
    fn nsg_5_1_compiled_equals_reference(rules in rules(), flows in prop::collection::vec(flow(), 1..20), inbound in any::<bool>()) {
        let net = Network {
            network_security_groups: vec![NetworkSecurityGroup { name: "nsg".into(), security_rules: rules.clone(), ..Default::default() }],
            ..Default::default()
        };
        let snap = Snapshot::compile(&net, catalogs(), &CompileOptions::default());
        let dir = if inbound { Direction::Inbound } else { Direction::Outbound };
        for f in flows {
            // Outbound flows to platform addresses are exempt (NSG-8.4); the reference does not model it.
            if dir == Direction::Outbound && (f.destination == IpAddr::from(LB)) {
                continue;
            }
            let t = snap.trace(&f, &TraceOptions { at: Some("nsg".into()), direction: Some(dir), ..Default::default() });
            let (name, access) = reference_nsg(&rules, dir, &f);
            let got = t.decided_by.as_ref().and_then(|d| d.rule.clone());
            prop_assert_eq!(got, Some(name), "flow {:?}", f);
            let want = if access == Access::Allow { Verdict::Allow } else { Verdict::Deny };
            prop_assert_eq!(t.verdict, want);
        }
    }
}

// ----------------------------------------------------------------------------------------- routes

fn route_strategy() -> impl Strategy<Value = Vec<(IpNet, NextHopType)>> {
    prop::collection::vec(
        (
            prop_oneof![
                (0u8..4, prop_oneof![Just(8u8), Just(16), Just(24), Just(32)])
                    .prop_map(|(b, l)| IpNet::new(IpAddr::from([10, b, 0, 1]), l).unwrap().trunc()),
                (0u8..4, prop_oneof![Just(0u8), Just(8), Just(24)]).prop_map(|(b, l)| IpNet::new(
                    IpAddr::from([203, 0, 113, b]),
                    l
                )
                .unwrap()
                .trunc()),
                Just("2001:db8::/32".parse::<IpNet>().unwrap()),
                Just("::/0".parse::<IpNet>().unwrap()),
            ],
            prop_oneof![
                Just(NextHopType::Internet),
                Just(NextHopType::None),
                Just(NextHopType::VnetLocal),
                Just(NextHopType::VirtualAppliance)
            ],
        ),
        0..8,
    )
}

fn reference_route(
    user: &[(IpNet, NextHopType)],
    space: &[IpNet],
    dst: IpAddr,
) -> Option<(u8, NextHopType)> {
    // RT-3.1 system routes with the address-space interaction, then RT-5 (user wins ties).
    let mut cands: Vec<(IpNet, u8, NextHopType)> = vec![];
    for s in space {
        cands.push((*s, 1, NextHopType::VnetLocal));
    }
    cands.push(("0.0.0.0/0".parse().unwrap(), 1, NextHopType::Internet));
    cands.push(("::/0".parse().unwrap(), 1, NextHopType::Internet));
    for r in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    ] {
        let r: IpNet = r.parse().unwrap();
        if !space.iter().any(|s| s.contains(&r)) {
            cands.push((r, 1, NextHopType::None));
        }
    }
    let mut seen = vec![];
    for (p, h) in user {
        if !seen.contains(p) {
            seen.push(*p);
            cands.push((*p, 0, *h));
        }
    }
    cands
        .into_iter()
        .filter(|(p, _, _)| p.contains(&dst))
        .min_by_key(|(p, src, _)| (std::cmp::Reverse(p.prefix_len()), *src))
        .map(|(p, _, h)| (p.prefix_len(), h))
}

proptest! {
    // Failures are kept beside this file (`reference.proptest-regressions`) and replayed first.
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// RT-3.1, RT-5: the compiled subnet routes pick what the plain reference picks.
    #[test]
    fn rt_5_compiled_equals_reference(user in route_strategy(), dsts in prop::collection::vec(addr(), 1..20), big in any::<bool>()) {
        let space: Vec<IpNet> = vec![if big { "10.0.0.0/8" } else { "10.0.0.0/16" }.parse().unwrap()];
        let routes: Vec<Route> = user.iter().enumerate().map(|(i, (p, h))| Route {
            name: format!("u{i}"),
            address_prefix: RoutePrefix::Cidr(*p),
            next_hop_type: *h,
            next_hop_ip_address: (*h == NextHopType::VirtualAppliance).then(|| "10.0.9.4".parse().unwrap()),
            next_hop_unresolved: None,
            origin: Origin::default(),
        }).collect();
        let net = Network {
            virtual_networks: vec![VirtualNetwork {
                name: "v".into(),
                address_space: space.clone(),
                subnets: vec![Subnet { name: "s".into(), address_prefixes: vec!["10.0.0.0/24".parse().unwrap()], route_table: Some("rt".into()), ..Default::default() }],
                ..Default::default()
            }],
            route_tables: vec![RouteTable { name: "rt".into(), routes, ..Default::default() }],
            ..Default::default()
        };
        let snap = Snapshot::compile(&net, catalogs(), &CompileOptions::default());
        for d in dsts {
            let got = snap.subnets().next().unwrap().1.routes.lookup(d).map(|(p, r)| (p.prefix_len(), r.next_hop_type));
            prop_assert_eq!(got, reference_route(&user, &space, d), "dst {}", d);
        }
    }
}

// ------------------------------------------------------------------------------------- firewall

fn fqdn_ref(pattern: &str, name: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    if p == "*" {
        return true;
    }
    if let Some(rest) = p.strip_prefix("*.") {
        return n.len() > rest.len() + 1 && n.ends_with(&format!(".{rest}"));
    }
    if let Some(rest) = p.strip_prefix('*') {
        return n.ends_with(rest);
    }
    n == p
}

fn pattern() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just("example.com"),
        Just("a.example.com"),
        Just("b.a.example.com"),
        Just("badexample.com"),
        Just("example.org")
    ];
    (base, 0u8..4).prop_map(|(b, k)| match k {
        0 => b.to_string(),
        1 => format!("*.{b}"),
        2 => format!("*{b}"),
        _ => "*".to_string(),
    })
}

fn name() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("example.com"),
            Just("a.example.com"),
            Just("x.b.a.example.com"),
            Just("badexample.com"),
            Just("example.org"),
            Just("EXAMPLE.com.")
        ],
        any::<bool>(),
    )
        .prop_map(|(n, up)| {
            if up {
                n.to_ascii_uppercase()
            } else {
                n.to_string()
            }
        })
}

proptest! {
    // Failures are kept beside this file (`reference.proptest-regressions`) and replayed first.
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// FW-2, FW-3, FW-6.3: the firewall's application pass picks the first rule in collection
    /// order whose protocol, source and name match — as a plain scan does.
    #[test]
    fn fw_6_3_application_rules_equal_reference(
        spec in prop::collection::vec((prop::collection::vec(pattern(), 1..3), any::<bool>(), 100u32..400, any::<bool>()), 1..8),
        names in prop::collection::vec((name(), any::<bool>()), 1..10),
    ) {
        let collections: Vec<RuleCollection> = spec.iter().enumerate().map(|(i, (pats, allow, prio, http))| RuleCollection {
            name: format!("c{i}"),
            priority: *prio,
            kind: RuleCollectionKind::Application,
            action: if *allow { FirewallAction::Allow } else { FirewallAction::Deny },
            rules: vec![FirewallRule {
                source_addresses: vec![AddressItem::Any],
                protocols: vec![ApplicationProtocol { protocol_type: if *http { ApplicationProtocolType::Http } else { ApplicationProtocolType::Https }, port: if *http { 80 } else { 443 } }],
                target_fqdns: pats.clone(),
                ..FirewallRule::named(format!("r{i}"))
            }],
            palisade: PalisadeSettings::default(),
            origin: Origin::default(),
        }).collect();
        let net = Network {
            azure_firewalls: vec![AzureFirewall { name: "fw".into(), rule_collections: collections.clone(), ..Default::default() }],
            ..Default::default()
        };
        let snap = Snapshot::compile(&net, catalogs(), &CompileOptions::default());
        // Reference order: collections by (priority, name).
        let mut order: Vec<&RuleCollection> = collections.iter().collect();
        order.sort_by_key(|c| (c.priority, c.name.to_ascii_lowercase()));
        for (n, http) in names {
            let port = if http { 80 } else { 443 };
            let want = order.iter().find(|c| {
                let r = &c.rules[0];
                r.protocols[0].port == port && r.target_fqdns.iter().any(|p| fqdn_ref(p, &n))
            });
            let f = Flow { source: "10.0.0.4".parse().unwrap(), source_port: 50000, destination: "203.0.113.9".parse().unwrap(), destination_port: port, protocol: Protocol::Tcp, host: Some(n.clone()), app_protocol: None };
            let t = snap.trace(&f, &TraceOptions { at: Some("fw".into()), ..Default::default() });
            let got = t.decided_by.as_ref().and_then(|d| d.rule.clone());
            prop_assert_eq!(got, want.map(|c| format!("{}/{}", c.name, c.rules[0].name)), "name {} port {}", n, port);
            let allowed = want.is_some_and(|c| c.action == FirewallAction::Allow);
            prop_assert_eq!(t.verdict == Verdict::Allow, allowed);
        }
    }
}
