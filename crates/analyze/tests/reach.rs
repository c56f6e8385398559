//! Reachability and diff over header spaces against brute force: every flow of a small address
//! and port space is traced one by one (DIAG-7) and must get the verdict — and, when stopped,
//! the stopping control — that the exact sets give (issue 6: "a test compares it with
//! brute-force enumeration over a small address space").

use palisade_analyze::diff;
use palisade_analyze::gen::HubSpoke;
use palisade_analyze::headerspace::Family;
use palisade_analyze::reach::{self, Engine, Reach};
use palisade_model::catalog::Catalogs;
use palisade_model::{Access, Direction, ImportOptions, Network, Protocol};
use palisade_policy::{CompileOptions, Flow, Snapshot, TraceOptions, Verdict};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

fn compile(net: &Network) -> Snapshot {
    Snapshot::compile(net, &Catalogs::embedded(), &CompileOptions::default())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const PROTOCOLS: [Protocol; 4] = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp, Protocol::Esp];

/// Trace every (source, destination, protocol, ports) and compare with the engine.
fn compare(
    snap: &Snapshot,
    engine: &Engine,
    addrs: &[IpAddr],
    sports: &[u16],
    dports: &[u16],
) -> usize {
    let mut checked = 0;
    for &s in addrs {
        for &d in addrs {
            if s.is_ipv4() != d.is_ipv4() {
                continue;
            }
            for p in PROTOCOLS {
                let ports: Vec<(u16, u16)> = if p.has_ports() {
                    sports
                        .iter()
                        .flat_map(|a| dports.iter().map(move |b| (*a, *b)))
                        .collect()
                } else {
                    vec![(0, 0)]
                };
                for (sp, dp) in ports {
                    let flow = Flow {
                        source: s,
                        source_port: sp,
                        destination: d,
                        destination_port: dp,
                        protocol: p,
                        host: None,
                        app_protocol: None,
                    };
                    let t = snap.trace(&flow, &TraceOptions::default());
                    let k = flow.key();
                    let got = engine.lookup(k.protocol, s, d, k.src_port, k.dst_port);
                    let Some(o) = got else {
                        // Neither end in the network: trace's lone-resource mode, not reachability.
                        let outside = snap.locate(s).subnet.is_none()
                            && snap.locate(d).subnet.is_none()
                            && snap.firewall_frontend(d).is_none();
                        assert!(
                            outside,
                            "{flow:?}: not in the matrix but trace says {:?}",
                            t.verdict
                        );
                        continue;
                    };
                    let want = match o.verdict {
                        Reach::Allow => Verdict::Allow,
                        Reach::Deny | Reach::ByName => Verdict::Deny,
                        Reach::Drop => Verdict::Drop,
                        Reach::Unknown => Verdict::Unknown,
                    };
                    assert_eq!(
                        t.verdict, want,
                        "{flow:?}\nsets: {o:?}\ntrace: {:?}",
                        t.decided_by
                    );
                    if matches!(o.verdict, Reach::Deny | Reach::Drop) {
                        if let Some(db) = &t.decided_by {
                            let last = o
                                .chain
                                .last()
                                .unwrap_or_else(|| panic!("{flow:?}: no control"));
                            assert_eq!(
                                (last.layer, last.resource.as_str(), last.rule.as_deref()),
                                (db.layer, db.resource.as_str(), db.rule.as_deref()),
                                "{flow:?}: deciding control"
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    checked
}

fn as_trace(r: Reach) -> Verdict {
    match r {
        Reach::Allow => Verdict::Allow,
        Reach::Deny | Reach::ByName => Verdict::Deny,
        Reach::Drop => Verdict::Drop,
        Reach::Unknown => Verdict::Unknown,
    }
}

fn small_addresses(g: &HubSpoke) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = vec![];
    let mut nets = vec![g.hub()];
    nets.extend((0..g.spokes).map(|i| g.spoke(i)));
    for n in nets {
        addrs.extend(n.hosts().chain([n.network(), n.broadcast()]));
    }
    for a in [
        "8.8.8.8",
        "52.0.0.10",
        "168.63.129.16",
        "169.254.169.254",
        "203.0.113.3",
        "203.0.113.9",
        "198.51.100.1",
        "13.64.38.225",
        "13.64.1.1",
        "192.0.2.9",
        "10.9.9.9",
        "52.1.2.3",
        "10.1.1.0",
    ] {
        addrs.push(ip(a));
    }
    let set: BTreeSet<IpAddr> = addrs.into_iter().collect();
    set.into_iter().collect()
}

const SPORTS: [u16; 2] = [1023, 50000];
const DPORTS: [u16; 10] = [0, 22, 80, 443, 999, 1500, 2222, 3389, 8080, 65535];

#[test]
fn diag_7_reachability_equals_trace_enumeration_small_hub_spoke() {
    let mut total = 0;
    for seed in 1..=4 {
        let g = HubSpoke::small(seed);
        let snap = compile(&g.build());
        let engine = Engine::new(&snap);
        total += compare(&snap, &engine, &small_addresses(&g), &SPORTS, &DPORTS);
    }
    assert!(total > 100_000, "{total} flows compared");
}

#[derive(Deserialize)]
struct Flows {
    flows: Vec<FlowSpec>,
}

#[derive(Deserialize)]
struct FlowSpec {
    source: String,
    destination: String,
    #[serde(default)]
    source_port: Option<u16>,
    #[serde(default)]
    destination_port: Option<u16>,
}

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/scenarios")
}

#[test]
fn diag_7_reachability_equals_trace_on_the_scenarios() {
    for dir in [
        "layered-nsg",
        "asymmetric-routing",
        "ase-egress-lockdown",
        "adx-dependencies",
    ] {
        let imported = palisade_model::load(
            &[shared().join(dir).join("network.json")],
            &ImportOptions::default(),
        );
        let snap = compile(&imported.network);
        let engine = Engine::new(&snap);
        let flows: Flows = serde_saphyr::from_str(
            &std::fs::read_to_string(shared().join(dir).join("flows.yaml")).unwrap(),
        )
        .unwrap();
        let mut addrs: BTreeSet<IpAddr> = BTreeSet::new();
        let mut dports: BTreeSet<u16> = [22u16, 80, 443].into_iter().collect();
        for f in &flows.flows {
            for a in [&f.source, &f.destination] {
                if let Ok(x) = a.parse::<IpAddr>() {
                    addrs.insert(x);
                }
            }
            dports.extend(f.destination_port);
            dports.extend(f.source_port.map(|_| 50000));
        }
        for (_, n) in snap.nics() {
            addrs.extend(n.addresses.iter().copied());
        }
        let addrs: Vec<IpAddr> = addrs.into_iter().collect();
        let dports: Vec<u16> = dports.into_iter().collect();
        let n = compare(&snap, &engine, &addrs, &[50000], &dports);
        assert!(n > 0, "{dir}");
    }
}

/// An app subnet routed to a firewall whose own subnet drops a range and a second subnet by
/// user routes; a DNAT rule translates to the dropped range.
const FIREWALL_SUBNET_ROUTES: &str = r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: hub
    addressSpace: [10.0.0.0/16]
    subnets:
      - {name: AzureFirewallSubnet, addressPrefix: 10.0.1.0/26, routeTable: rt-fw}
      - {name: app, addressPrefix: 10.0.2.0/24, routeTable: rt-app}
      - {name: db, addressPrefix: 10.0.3.0/24, routeTable: rt-app}
routeTables:
  - name: rt-app
    routes:
      - {name: to-fw, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.1.4}
      - {name: vnet-to-fw, addressPrefix: 10.0.0.0/16, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.1.4}
      - {name: private-to-fw, addressPrefix: 10.0.0.0/8, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.1.4}
  - name: rt-fw
    routes:
      - {name: blackhole, addressPrefix: 192.0.2.0/24, nextHopType: None}
      - {name: no-db, addressPrefix: 10.0.3.0/25, nextHopType: None}
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4, publicIPAddress: fw-pip}]
    networkRuleCollections:
      - name: all
        priority: 200
        action: {type: Allow}
        rules: [{name: any, protocols: [TCP, UDP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['1-9000']}]
    natRuleCollections:
      - name: in
        priority: 100
        action: {type: Dnat}
        rules:
          - {name: to-blackhole, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [52.0.0.10], destinationPorts: ['2222'], translatedAddress: 192.0.2.7, translatedPort: '22'}
          - {name: to-db, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [52.0.0.10], destinationPorts: ['8080'], translatedAddress: 10.0.3.200, translatedPort: '80'}
publicIPAddresses:
  - {name: fw-pip, ipAddress: 52.0.0.10}
"#;

// spec DIAG-7: the firewall subnet's routes carry what the firewall lets through; the engine
// drops what a route to None there drops, named by that route, exactly as trace does.
#[test]
fn diag_7_firewall_subnet_routes_after_the_firewall_equal_trace() {
    let file = palisade_model::import::import_text(
        "fixture.yaml",
        FIREWALL_SUBNET_ROUTES,
        &ImportOptions::default(),
        None,
    );
    assert!(!file.diagnostics.has_errors(), "{}", file.diagnostics);
    let snap = compile(&file.network);
    let engine = Engine::new(&snap);
    let addrs: Vec<IpAddr> = [
        "10.0.1.4",
        "10.0.2.4",
        "10.0.3.4",
        "10.0.3.200",
        "192.0.2.7",
        "10.57.121.238",
        "203.0.113.9",
        "52.0.0.10",
        "198.51.100.1",
    ]
    .iter()
    .map(|a| ip(a))
    .collect();
    let n = compare(
        &snap,
        &engine,
        &addrs,
        &[50000],
        &[22, 80, 2000, 2222, 8080, 9999],
    );
    assert!(n > 0);
    let verdict = |s: &str, d: &str, port: u16| {
        let o = engine.lookup(6, ip(s), ip(d), 50000, port).unwrap();
        let last = o.chain.last().map(|c| c.resource.clone());
        (o.verdict, last)
    };
    let rt_fw = Some("rt-fw".to_string());
    assert_eq!(
        verdict("10.0.2.4", "192.0.2.7", 2000),
        (Reach::Drop, rt_fw.clone())
    );
    assert_eq!(
        verdict("10.0.2.4", "10.0.3.4", 2000),
        (Reach::Drop, rt_fw.clone())
    );
    assert_eq!(
        verdict("198.51.100.1", "52.0.0.10", 2222),
        (Reach::Drop, rt_fw)
    );
    // RT-3: the firewall subnet's system route 10.0.0.0/8 → None.
    let system = Some("System Route".to_string());
    assert_eq!(
        verdict("10.0.2.4", "10.57.121.238", 2000),
        (Reach::Drop, system)
    );
    assert_eq!(verdict("10.0.2.4", "203.0.113.9", 2000).0, Reach::Allow);
    assert_eq!(verdict("198.51.100.1", "52.0.0.10", 8080).0, Reach::Allow);
}

/// FW-4: a DNAT rule matches TCP and UDP only. The generated networks' DNAT rule is made `Any`
/// (TCP and UDP, not ICMP), a `[UDP, Any]` rule and an ICMP-only rule (it matches nothing) are
/// added on the frontend, and a network rule allows ICMP to the frontend from one range: ICMP
/// to the frontend is then decided by the network rules (allowed from that range, denied by
/// default elsewhere), never translated, and the engine answers as `trace` flow by flow.
#[test]
fn fw_4_dnat_with_any_matches_tcp_and_udp_only_reachability_equals_trace() {
    use palisade_analyze::gen::FRONTEND_IP;
    use palisade_model::{
        AddressItem, FirewallAction, FirewallRule, NetworkProtocol, PortRange, RuleCollection,
        RuleCollectionKind,
    };
    let frontend = || AddressItem::Prefix(ip(FRONTEND_IP).into());
    let mut total = 0;
    for seed in 1..=2 {
        let g = HubSpoke::small(seed);
        let mut net = g.build();
        let fw = &mut net.azure_firewalls[0];
        let nat = fw
            .rule_collections
            .iter()
            .position(|c| c.kind == RuleCollectionKind::Nat && !c.rules.is_empty())
            .expect("the generated network has a DNAT rule");
        let first = fw.rule_collections[nat].rules[0].clone();
        fw.rule_collections[nat].rules[0].ip_protocols = vec![NetworkProtocol::Any];
        let mut both = first.clone();
        both.name = "udp-and-any".into();
        both.ip_protocols = vec![NetworkProtocol::Udp, NetworkProtocol::Any];
        both.destination_ports = vec![PortRange::single(8080)];
        both.translated_port = Some(80);
        let mut icmp = first.clone();
        icmp.name = "icmp-only".into();
        icmp.ip_protocols = vec![NetworkProtocol::Icmp];
        icmp.destination_ports = vec![];
        icmp.translated_port = None;
        fw.rule_collections[nat].rules.extend([both, icmp]);
        let mut ping = FirewallRule::named("ping-frontend");
        ping.ip_protocols = vec![NetworkProtocol::Icmp];
        ping.source_addresses = vec![AddressItem::Prefix("203.0.113.0/24".parse().unwrap())];
        ping.destination_addresses = vec![frontend()];
        fw.rule_collections.push(RuleCollection::new(
            "pings",
            90,
            RuleCollectionKind::Network,
            FirewallAction::Allow,
            vec![ping],
        ));
        let snap = compile(&net);
        let engine = Engine::new(&snap);
        total += compare(&snap, &engine, &small_addresses(&g), &SPORTS, &DPORTS);
        let trace = |p: Protocol, s: &str, port: u16| {
            snap.trace(
                &Flow {
                    source: ip(s),
                    source_port: 50000,
                    destination: ip(FRONTEND_IP),
                    destination_port: port,
                    protocol: p,
                    host: None,
                    app_protocol: None,
                },
                &TraceOptions::default(),
            )
        };
        for (p, port) in [
            (Protocol::Tcp, 2222),
            (Protocol::Udp, 2222),
            (Protocol::Udp, 8080),
        ] {
            let t = trace(p, "198.51.100.1", port);
            assert_eq!(t.hops[0].layer, "FirewallDnat", "{p:?}:{port} {t:?}");
        }
        let t = trace(Protocol::Icmp, "203.0.113.9", 0);
        assert_eq!(t.verdict, Verdict::Allow, "{t:?}");
        assert_eq!(t.hops[0].layer, "FirewallNetwork", "{t:?}");
        let t = trace(Protocol::Icmp, "198.51.100.1", 0);
        assert_eq!(t.hops[0].layer, "FirewallDefault", "{t:?}");
        let o = engine
            .lookup(1, ip("198.51.100.1"), ip(FRONTEND_IP), 0, 0)
            .expect("the frontend is in the matrix");
        assert_eq!(as_trace(o.verdict), Verdict::Deny, "{o:?}");
    }
    assert!(total > 10_000, "{total} flows compared");
}

/// PAL-5.3: an audit rule is passed over; NSG-5.1: the first match decides.
#[test]
fn pal_5_3_audit_rules_are_passed_over_and_nsg_5_1_first_match_decides() {
    let g = HubSpoke::small(7);
    let mut net = g.build();
    // Spoke 1's NSG: an audit deny of everything inbound first, then a deny of :22 and an allow
    // of all TCP from the firewall-routed spokes.
    let nsg = net
        .network_security_groups
        .iter_mut()
        .find(|n| n.name == "nsg-1")
        .unwrap();
    nsg.security_rules.clear();
    let rule = |name: &str, prio: u32, access: Access, port: &str, audit: bool| {
        palisade_model::SecurityRule {
            name: name.into(),
            description: None,
            protocol: Protocol::Tcp,
            source: palisade_model::RuleSide {
                address_prefixes: vec![palisade_model::AddressItem::Any],
                application_security_groups: vec![],
                port_ranges: vec![palisade_model::PortRange::ANY],
            },
            destination: palisade_model::RuleSide {
                address_prefixes: vec![palisade_model::AddressItem::Any],
                application_security_groups: vec![],
                port_ranges: vec![palisade_model::address::parse_port_range(port).unwrap()],
            },
            access,
            priority: prio,
            direction: Direction::Inbound,
            is_default: false,
            palisade: palisade_model::PalisadeSettings {
                mode: if audit {
                    palisade_model::RuleMode::Audit
                } else {
                    palisade_model::RuleMode::Enforce
                },
                ..Default::default()
            },
            origin: Default::default(),
        }
    };
    nsg.security_rules
        .push(rule("audit-deny-all", 100, Access::Deny, "*", true));
    nsg.security_rules
        .push(rule("deny-ssh", 110, Access::Deny, "22", false));
    nsg.security_rules
        .push(rule("allow-tcp", 120, Access::Allow, "*", false));
    let snap = compile(&net);
    let engine = Engine::new(&snap);
    let dst = ip("10.1.0.13"); // spoke 1, no NIC
    let report = reach::report(
        &engine,
        &reach::everything(),
        &reach::parse_scope(&snap, &dst.to_string()).unwrap(),
        false,
        &[Reach::Deny],
    );
    let denied_by_ssh = report.entries.iter().any(|e| {
        e.decided_by.last().and_then(|c| c.rule.as_deref()) == Some("deny-ssh")
            && e.flows
                .iter()
                .any(|f| f.services.iter().any(|s| s == "Tcp :22"))
    });
    assert!(denied_by_ssh, "{report:#?}");
    assert!(!report.entries.iter().any(|e| e
        .decided_by
        .iter()
        .any(|c| c.rule.as_deref() == Some("audit-deny-all"))));
}

fn same_answers(a: &Engine, b: &Engine) {
    assert_eq!(a.atoms(), b.atoms());
    // An atom pair's answers are a function of its decision id in each engine: each pair of
    // ids is compared once (most atom pairs share them; spelling out every pair's answers made
    // the re-check property test take minutes in a debug build).
    let mut seen = std::collections::HashSet::new();
    for f in [Family::V4, Family::V6] {
        let n = if f == Family::V4 {
            a.atoms().0
        } else {
            a.atoms().1
        };
        for sa in 0..n {
            for da in 0..n {
                if !seen.insert((a.decision(f, sa, da), b.decision(f, sa, da))) {
                    continue;
                }
                let (x, y) = (a.answers(f, sa, da), b.answers(f, sa, da));
                assert_eq!(x.len(), y.len(), "atoms {sa} {da}");
                for (l4, o) in &x {
                    let (l4b, _) = y
                        .iter()
                        .find(|(_, ob)| ob == o)
                        .unwrap_or_else(|| panic!("atoms {sa} {da}: {o:?} missing"));
                    assert!(
                        l4.subtract(l4b).is_empty() && l4b.subtract(l4).is_empty(),
                        "atoms {sa} {da}"
                    );
                }
            }
        }
    }
}

/// Issue 15, item 2: the matrix built on every thread equals the serial one — the same decision
/// id for every atom pair (the interners fill in the serial order) and the same answers — on
/// generated networks small and larger (spec DIAG-7: both are the matrix `trace` is checked
/// against).
#[test]
fn parallel_matrix_equals_serial() {
    let mut nets: Vec<HubSpoke> = (1..=3).map(HubSpoke::small).collect();
    let mut mid = HubSpoke::target();
    (mid.spokes, mid.nsg_rules, mid.firewall_rules, mid.seed) = (24, 12, 120, 5);
    nets.push(mid);
    for g in nets {
        let snap = compile(&g.build());
        let (serial, parallel) = (Engine::new(&snap), Engine::parallel(&snap));
        assert_eq!(serial.stats(), parallel.stats(), "{} spokes", g.spokes);
        for (f, n) in [
            (Family::V4, serial.atoms().0),
            (Family::V6, serial.atoms().1),
        ] {
            for sa in 0..n {
                for da in 0..n {
                    assert_eq!(
                        serial.decision(f, sa, da),
                        parallel.decision(f, sa, da),
                        "{} spokes, atoms {sa} {da}",
                        g.spokes
                    );
                }
            }
        }
        same_answers(&serial, &parallel);
    }
}

/// The parallel build with more ranges than this machine's cores (each worker's tables merged
/// in turn) gives the serial ids, and re-checking an engine built that way gives the answers
/// of a fresh one (DIAG-7: the matrix `trace` is checked against).
#[test]
fn parallel_matrix_on_three_threads_equals_serial_and_rechecks() {
    let mut g = HubSpoke::target();
    (g.spokes, g.nsg_rules, g.firewall_rules, g.seed) = (30, 12, 150, 7);
    let net = g.build();
    let snap = compile(&net);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let mut parallel = pool.install(|| Engine::parallel(&snap));
    let serial = Engine::new(&snap);
    assert_eq!(serial.stats(), parallel.stats());
    let (n4, n6) = serial.atoms();
    for (f, n) in [(Family::V4, n4), (Family::V6, n6)] {
        for sa in 0..n {
            for da in 0..n {
                assert_eq!(serial.decision(f, sa, da), parallel.decision(f, sa, da));
            }
        }
    }
    // NSG change on a spoke: flip the access of its first rule.
    let mut changed = net.clone();
    let n = &mut changed.network_security_groups[1];
    n.security_rules[0].access = match n.security_rules[0].access {
        Access::Allow => Access::Deny,
        Access::Deny => Access::Allow,
    };
    let name = n.name.clone();
    let snap2 = compile(&changed);
    let (idx, _) = snap.nsgs().find(|(_, x)| x.name == name).unwrap();
    for dir in [Direction::Inbound, Direction::Outbound] {
        parallel
            .update_nsg(idx, dir, snap2.nsg(idx).direction(dir))
            .unwrap();
    }
    same_answers(&parallel, &Engine::new(&snap2));
    // FW-3: the last network rule collection moved first. The move re-checks through the
    // cells the merge copied from the workers, which must be dropped like the engine's own.
    let grid = reach::cuts(&snap2);
    let fw = &mut changed.azure_firewalls[0];
    let network = |c: &&mut palisade_model::RuleCollection| {
        c.kind == palisade_model::RuleCollectionKind::Network
    };
    let first = fw
        .rule_collections
        .iter_mut()
        .filter(network)
        .map(|c| c.priority)
        .min();
    let last = fw
        .rule_collections
        .iter_mut()
        .filter(network)
        .max_by_key(|c| c.priority);
    let (Some(first), Some(last)) = (first, last) else {
        panic!("the generated network has network rule collections");
    };
    last.priority = first - 1;
    let snap3 = compile(&changed);
    let (fw0, compiled) = snap3.firewalls().next().unwrap();
    parallel
        .update_firewall(fw0, compiled)
        .expect("no new boundary");
    same_answers(&parallel, &Engine::with_cuts(&snap3, &grid));
}

/// The incremental re-check after a one-rule change gives the answers of a fresh computation.
#[test]
fn reachability_recheck_equals_full_recomputation() {
    let g = HubSpoke::small(3);
    let net = g.build();
    let snap = compile(&net);
    // NSG change: flip the access of a rule, widen another's ports.
    let mut changed = net.clone();
    let n = changed
        .network_security_groups
        .iter_mut()
        .find(|n| n.name == "nsg-0")
        .unwrap();
    n.security_rules[1].access = match n.security_rules[1].access {
        Access::Allow => Access::Deny,
        Access::Deny => Access::Allow,
    };
    n.security_rules[2].destination.port_ranges = vec![palisade_model::PortRange::ANY];
    let snap2 = compile(&changed);
    let mut engine = Engine::new(&snap);
    let idx = snap
        .subnet(snap.subnet_by_name("spoke0/workload").unwrap())
        .nsg
        .unwrap();
    for dir in [Direction::Inbound, Direction::Outbound] {
        let rules = snap2.nsg(idx).direction(dir);
        engine.update_nsg(idx, dir, rules).unwrap();
    }
    same_answers(&engine, &Engine::new(&snap2));
    // Firewall change: delete a rule and flip a collection's action.
    let mut changed3 = changed.clone();
    let fw = &mut changed3.azure_firewalls[0];
    fw.rule_collections[1].rules.remove(3);
    fw.rule_collections[1].action = palisade_model::FirewallAction::Deny;
    let snap3 = compile(&changed3);
    let (fw0, compiled) = snap3.firewalls().next().unwrap();
    engine.update_firewall(fw0, compiled).unwrap();
    same_answers(&engine, &Engine::new(&snap3));
}

/// Issue 15: a DNAT'd flow meets the target subnet's inbound NSG at the translated address
/// (FW-4), so deleting any inbound rule of that NSG must re-check the flows to the firewall's
/// frontend too, though the frontend lies outside every rule's box. Each inbound rule is also
/// made to allow SSH from anywhere to anything, its destination set to the translated address
/// and to the frontend, and its ports set to the frontend's DNAT port (the original packet,
/// met from inside) — each checked against an engine built from scratch.
#[test]
fn fw_4_recheck_of_a_dnat_targets_inbound_nsg_covers_the_dnat_flows() {
    use palisade_model::{AddressItem, PortRange};
    let g = HubSpoke::small(1);
    let net = g.build();
    let snap = compile(&net);
    let grid = reach::cuts(&snap);
    // Spoke 0 holds the DNAT target.
    let at = net
        .network_security_groups
        .iter()
        .position(|n| n.name == "nsg-0")
        .unwrap();
    let nsg = &net.network_security_groups[at];
    let inbound: Vec<usize> = (0..nsg.security_rules.len())
        .filter(|k| nsg.security_rules[*k].direction == Direction::Inbound)
        .collect();
    assert!(!inbound.is_empty());
    let translated = net.azure_firewalls[0]
        .rule_collections
        .iter()
        .flat_map(|c| &c.rules)
        .find_map(|r| r.translated_address.clone())
        .unwrap();
    let frontend = AddressItem::Prefix(ip(palisade_analyze::gen::FRONTEND_IP).into());
    for k in inbound {
        for edit in 0..5 {
            let mut changed = net.clone();
            let rules = &mut changed.network_security_groups[at].security_rules;
            let r = &mut rules[k];
            match edit {
                0 => {
                    rules.remove(k);
                }
                1 => {
                    r.protocol = Protocol::Tcp;
                    r.access = Access::Allow;
                    r.source.address_prefixes = vec![AddressItem::Any];
                    r.destination.address_prefixes = vec![AddressItem::Any];
                    r.destination.port_ranges = vec![PortRange::single(22)];
                }
                2 => r.destination.address_prefixes = vec![translated.clone()],
                3 => {
                    r.destination.address_prefixes = vec![frontend.clone()];
                    r.access = Access::Allow;
                }
                _ => {
                    r.protocol = Protocol::Tcp;
                    r.destination.address_prefixes = vec![AddressItem::Any];
                    r.destination.port_ranges = vec![PortRange::single(2222)];
                    r.access = match r.access {
                        Access::Allow => Access::Deny,
                        Access::Deny => Access::Allow,
                    };
                }
            }
            let snap2 = compile(&changed);
            let (idx, _) = snap.nsgs().find(|(_, n)| n.name == "nsg-0").unwrap();
            let mut engine = Engine::new(&snap);
            let rules = snap2.nsg(idx).direction(Direction::Inbound);
            engine.update_nsg(idx, Direction::Inbound, rules).unwrap();
            same_answers(&engine, &Engine::with_cuts(&snap2, &grid));
        }
    }
}

/// Issue 15: broad firewall edits one after another (a rule widened to every destination, as
/// the bench's broad change) give the destination classes new rows each time, filling the cell
/// table's room and then laying it out again; the re-checked answers stay those of an engine
/// built from scratch after every edit (spec DIAG-7, FW-3).
#[test]
fn recheck_after_successive_broad_firewall_edits_equals_from_scratch() {
    use palisade_model::{AddressItem, RuleCollectionKind};
    let g = HubSpoke::small(2);
    let mut net = g.build();
    let snap0 = compile(&net);
    let grid = reach::cuts(&snap0);
    let mut engine = Engine::new(&snap0);
    let fw = &net.azure_firewalls[0];
    let rules: Vec<(usize, usize)> = (0..fw.rule_collections.len())
        .filter(|c| fw.rule_collections[*c].kind == RuleCollectionKind::Network)
        .flat_map(|c| (0..fw.rule_collections[c].rules.len()).map(move |k| (c, k)))
        .take(6)
        .collect();
    assert_eq!(rules.len(), 6);
    for (i, (c, k)) in rules.into_iter().enumerate() {
        let r = &mut net.azure_firewalls[0].rule_collections[c].rules[k];
        r.source_addresses = vec![AddressItem::Prefix(g.spoke(i % g.spokes))];
        r.destination_addresses = vec![AddressItem::Any];
        let snap = compile(&net);
        let (fw0, compiled) = snap.firewalls().next().unwrap();
        engine
            .update_firewall(fw0, compiled)
            .expect("spoke prefixes and any are boundaries already");
        same_answers(&engine, &Engine::with_cuts(&snap, &grid));
    }
}

/// Issue 15: two firewall rules alike but for their destination swap places when one's
/// collection moves ahead (FW-1), so each rule's index now names the other. The cells of
/// one now equal the other's old cells; the NSG edits that follow re-plan paths through the
/// firewall, and their answers must name the rule that now decides (FW-2, DIAG-7), as an
/// engine built from scratch does, not the rule a saved path result named under that index.
#[test]
fn recheck_after_a_collection_swap_names_the_rules_by_their_new_order() {
    use palisade_model::{AddressItem, FirewallAction, NetworkProtocol, PortRange};
    use palisade_model::{FirewallRule, RuleCollectionKind};
    let g = HubSpoke::small(3);
    let mut net = g.build();
    let fw = &mut net.azure_firewalls[0];
    let first = (0..fw.rule_collections.len())
        .find(|i| fw.rule_collections[*i].kind == RuleCollectionKind::Network)
        .expect("the generated network has a network rule collection");
    // A second network collection just after the first.
    let mut copy = fw.rule_collections[first].clone();
    copy.name.push_str("-second");
    copy.priority += 5;
    fw.rule_collections.push(copy);
    let second = fw.rule_collections.len() - 1;
    for (at, spoke) in [(first, 1), (second, 2)] {
        let mut r = FirewallRule::named(format!("to-spoke-{spoke}"));
        r.ip_protocols = vec![NetworkProtocol::Tcp];
        r.source_addresses = vec![AddressItem::Any];
        r.destination_addresses = vec![AddressItem::Prefix(g.spoke(spoke))];
        r.destination_ports = vec![PortRange::ANY];
        let c = &mut net.azure_firewalls[0].rule_collections[at];
        c.action = FirewallAction::Allow;
        c.rules = vec![r];
    }
    let snap0 = compile(&net);
    let grid = reach::cuts(&snap0);
    let mut engine = Engine::new(&snap0);
    let fw = &mut net.azure_firewalls[0];
    fw.rule_collections[second].priority = fw.rule_collections[first].priority - 1;
    let snap = compile(&net);
    let (fw0, compiled) = snap.firewalls().next().unwrap();
    engine
        .update_firewall(fw0, compiled)
        .expect("no new boundary");
    same_answers(&engine, &Engine::with_cuts(&snap, &grid));
    // NSG-4: each NSG's first rule opened to every source, one after another.
    for n in 0..net.network_security_groups.len().min(6) {
        let nsg = &mut net.network_security_groups[n];
        let Some(r) = nsg.security_rules.first_mut() else {
            continue;
        };
        r.source.address_prefixes = vec![AddressItem::Any];
        let (name, dir) = (nsg.name.clone(), r.direction);
        let snap = compile(&net);
        let (idx, _) = snap.nsgs().find(|(_, x)| x.name == name).unwrap();
        engine
            .update_nsg(idx, dir, snap.nsg(idx).direction(dir))
            .expect("any is a boundary already");
        same_answers(&engine, &Engine::with_cuts(&snap, &grid));
    }
}

/// Issue 15: a firewall rule deleted (every later rule index shifts, FW-2), the rule after it
/// edited, the rule added back, a DNAT rule deleted and added back (FW-4), with an NSG edit
/// after each step that re-plans paths through the firewall (NSG-4). The engine keeps the
/// later rules under their slots and cuts the classes in place; each step's answers must
/// equal an engine built from scratch (DIAG-7), naming the rules that decide now.
#[test]
fn recheck_after_firewall_rules_deleted_and_added_back_equals_from_scratch() {
    use palisade_model::{AddressItem, PortRange, RuleCollectionKind};
    let g = HubSpoke::small(4);
    let mut net = g.build();
    let snap0 = compile(&net);
    let grid = reach::cuts(&snap0);
    let mut engine = Engine::new(&snap0);
    let network = net.azure_firewalls[0]
        .rule_collections
        .iter()
        .position(|c| c.kind == RuleCollectionKind::Network && c.rules.len() >= 3)
        .expect("the generated network has a network collection of three rules");
    let nat = net.azure_firewalls[0]
        .rule_collections
        .iter()
        .position(|c| c.kind == RuleCollectionKind::Nat && !c.rules.is_empty())
        .expect("the generated network has a DNAT rule");
    let deleted = net.azure_firewalls[0].rule_collections[network].rules[1].clone();
    let dnat = net.azure_firewalls[0].rule_collections[nat].rules[0].clone();
    type Edit = Box<dyn Fn(&mut Network)>;
    let steps: Vec<Edit> = vec![
        Box::new(move |n: &mut Network| {
            n.azure_firewalls[0].rule_collections[network]
                .rules
                .remove(1);
        }),
        Box::new(move |n: &mut Network| {
            let r = &mut n.azure_firewalls[0].rule_collections[network].rules[1];
            r.destination_ports = vec![PortRange::ANY];
        }),
        Box::new(move |n: &mut Network| {
            let rules = &mut n.azure_firewalls[0].rule_collections[network].rules;
            rules.insert(1, deleted.clone());
        }),
        Box::new(move |n: &mut Network| {
            n.azure_firewalls[0].rule_collections[nat].rules.remove(0);
        }),
        Box::new(move |n: &mut Network| {
            let rules = &mut n.azure_firewalls[0].rule_collections[nat].rules;
            rules.insert(0, dnat.clone());
        }),
        Box::new(move |n: &mut Network| {
            n.azure_firewalls[0].rule_collections[network]
                .rules
                .remove(0);
        }),
    ];
    for (i, step) in steps.iter().enumerate() {
        step(&mut net);
        let snap = compile(&net);
        let (fw0, compiled) = snap.firewalls().next().unwrap();
        engine
            .update_firewall(fw0, compiled)
            .expect("a deletion or a rule put back names no new boundary");
        same_answers(&engine, &Engine::with_cuts(&snap, &grid));
        let count = net.network_security_groups.len();
        let nsg = &mut net.network_security_groups[i % count];
        let Some(r) = nsg.security_rules.first_mut() else {
            continue;
        };
        r.source.address_prefixes = vec![AddressItem::Any];
        r.access = match r.access {
            Access::Allow => Access::Deny,
            Access::Deny => Access::Allow,
        };
        let (name, dir) = (nsg.name.clone(), r.direction);
        let snap = compile(&net);
        let (idx, _) = snap.nsgs().find(|(_, x)| x.name == name).unwrap();
        engine
            .update_nsg(idx, dir, snap.nsg(idx).direction(dir))
            .expect("any is a boundary already");
        same_answers(&engine, &Engine::with_cuts(&snap, &grid));
    }
}

/// Issue 15: a collection moved ahead of another and back again (FW-1), with NSG edits in
/// between (NSG-4): the cells that named the moved rules are retired, not the firewall's saved
/// paths, and the cells walked again after the move back must name the rules as they are now
/// (DIAG-7), as an engine built from scratch does.
#[test]
fn recheck_after_a_collection_moved_and_back_equals_from_scratch() {
    use palisade_model::{AddressItem, FirewallAction, RuleCollectionKind};
    let g = HubSpoke::small(5);
    let mut net = g.build();
    let fw = &mut net.azure_firewalls[0];
    let first = (0..fw.rule_collections.len())
        .find(|i| fw.rule_collections[*i].kind == RuleCollectionKind::Network)
        .expect("the generated network has a network rule collection");
    // A second network collection after the first, of the same rules with the other action.
    let mut copy = fw.rule_collections[first].clone();
    copy.name.push_str("-second");
    copy.priority += 5;
    copy.action = if copy.action == FirewallAction::Allow {
        FirewallAction::Deny
    } else {
        FirewallAction::Allow
    };
    fw.rule_collections.push(copy);
    let last = fw.rule_collections.len() - 1;
    let snap0 = compile(&net);
    let grid = reach::cuts(&snap0);
    let mut engine = Engine::new(&snap0);
    let fw = &net.azure_firewalls[0];
    let (p_first, p_last) = (
        fw.rule_collections[first].priority,
        fw.rule_collections[last].priority,
    );
    for (round, priority) in [p_first - 1, p_last, p_first - 1, p_last]
        .into_iter()
        .enumerate()
    {
        net.azure_firewalls[0].rule_collections[last].priority = priority;
        let snap = compile(&net);
        let (fw0, compiled) = snap.firewalls().next().unwrap();
        engine
            .update_firewall(fw0, compiled)
            .expect("no new boundary");
        same_answers(&engine, &Engine::with_cuts(&snap, &grid));
        let nsg = &mut net.network_security_groups[round % 2];
        let Some(r) = nsg.security_rules.first_mut() else {
            continue;
        };
        r.source.address_prefixes = vec![AddressItem::Any];
        let (name, dir) = (nsg.name.clone(), r.direction);
        let snap = compile(&net);
        let (idx, _) = snap.nsgs().find(|(_, x)| x.name == name).unwrap();
        engine
            .update_nsg(idx, dir, snap.nsg(idx).direction(dir))
            .expect("any is a boundary already");
        same_answers(&engine, &Engine::with_cuts(&snap, &grid));
    }
}

/// Issue 15: a parallel build converts the firewall's rules in chunks on the pool; its layer
/// (entries, their positions per item, fingerprints) must serve a re-check as the serial one
/// does: a collection moved ahead of another and back (FW-1), and one of its rules deleted
/// (FW-3 first match), each answered as an engine built from scratch (DIAG-7).
#[test]
fn recheck_on_a_parallel_build_equals_from_scratch() {
    use palisade_model::RuleCollectionKind;
    let mut g = HubSpoke::target();
    (g.spokes, g.nsg_rules, g.firewall_rules, g.seed) = (12, 6, 120, 3);
    let mut net = g.build();
    let snap0 = compile(&net);
    let grid = reach::cuts(&snap0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut engine = pool.install(|| Engine::parallel(&snap0));
    same_answers(&engine, &Engine::with_cuts(&snap0, &grid));
    let fw = &net.azure_firewalls[0];
    let network: Vec<usize> = (0..fw.rule_collections.len())
        .filter(|i| fw.rule_collections[*i].kind == RuleCollectionKind::Network)
        .collect();
    let (a, b) = (network[0], *network.last().unwrap());
    let (pa, pb) = (
        fw.rule_collections[a].priority,
        fw.rule_collections[b].priority,
    );
    for priority in [pa.saturating_sub(1), pb] {
        net.azure_firewalls[0].rule_collections[b].priority = priority;
        let snap = compile(&net);
        let (id, compiled) = snap.firewalls().next().unwrap();
        engine
            .update_firewall(id, compiled)
            .expect("no new boundary");
        same_answers(&engine, &Engine::with_cuts(&snap, &grid));
    }
    let rules = &mut net.azure_firewalls[0].rule_collections[a].rules;
    assert!(!rules.is_empty(), "the generated collection has rules");
    rules.remove(0);
    let snap = compile(&net);
    let (id, compiled) = snap.firewalls().next().unwrap();
    engine
        .update_firewall(id, compiled)
        .expect("no new boundary");
    same_answers(&engine, &Engine::with_cuts(&snap, &grid));
}

/// DIAG-7 / issue 6 item 5: the diff lists exactly the flows whose verdict changes.
#[test]
fn diff_lists_exactly_the_changed_flows() {
    let g = HubSpoke::small(5);
    let net = g.build();
    let mut changed = net.clone();
    let n = changed
        .network_security_groups
        .iter_mut()
        .find(|n| n.name == "nsg-2")
        .unwrap();
    for r in &mut n.security_rules {
        r.access = Access::Allow;
    }
    changed.azure_firewalls[0].rule_collections[1].action = palisade_model::FirewallAction::Deny;
    let (old, new) = (compile(&net), compile(&changed));
    let d = diff::diff(&old, &new);
    assert!(!d.changes.is_empty());
    let addrs = small_addresses(&g);
    let opts = TraceOptions::default();
    for &s in &addrs {
        for &t in &addrs {
            for p in PROTOCOLS {
                for dp in if p.has_ports() {
                    DPORTS.to_vec()
                } else {
                    vec![0]
                } {
                    let flow = Flow {
                        source: s,
                        source_port: 50000,
                        destination: t,
                        destination_port: dp,
                        protocol: p,
                        host: None,
                        app_protocol: None,
                    };
                    let (a, b) = (
                        old.trace(&flow, &opts).verdict,
                        new.trace(&flow, &opts).verdict,
                    );
                    let k = flow.key();
                    let listed = d.find(k.protocol, s, t, k.src_port, k.dst_port);
                    // `trace` without a host cannot tell ByName from Deny.
                    let seen = listed.is_some_and(|c| as_trace(c.before) != as_trace(c.after));
                    assert_eq!(seen, a != b, "{flow:?}: {a:?} → {b:?}, listed {listed:?}");
                }
            }
        }
    }
    // Every change's example flow really changes.
    for c in &d.changes {
        for set in &c.flows {
            let e = &set.example;
            let flow = Flow {
                source: ip(&e.source),
                source_port: e.source_port,
                destination: ip(&e.destination),
                destination_port: e.destination_port,
                protocol: Protocol::parse(&e.protocol).unwrap(),
                host: None,
                app_protocol: None,
            };
            if as_trace(c.before) != as_trace(c.after) {
                assert_ne!(
                    old.trace(&flow, &opts).verdict,
                    new.trace(&flow, &opts).verdict,
                    "{e:?}"
                );
            }
        }
    }
}

/// Issue 15: after random rule edits (NSG and firewall: flip the access, open the ports, widen
/// the source to any, rename, delete or add a rule; NSG: move a rule's priority, SSH from
/// anywhere to anything or any port to the DNAT's translated address; firewall: narrow to one
/// port, move a rule to the front of its collection, change a collection's priority with and
/// without a change of order), the incrementally re-checked engine answers as one built
/// from scratch over the edited snapshot (on the same address grid), edit after edit. The paths
/// this covers: edits that keep every rule's name keep the layer's memo keys, renames and
/// deletions renew them; an edit of the DNAT target's inbound NSG re-checks the DNAT'd flows only
/// when the rule's destination holds the translated address or the frontend.
mod recheck_property {
    use super::*;
    use palisade_model::{AddressItem, FirewallAction, PortRange, RuleCollectionKind};
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    proptest! {
        // Failures are kept beside this file (`reach.proptest-regressions`) and replayed first;
        // the default looks for a `lib.rs` above `tests/` and so would keep nothing.
        #![proptest_config(ProptestConfig {
            cases: 16,
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
            ..ProptestConfig::default()
        })]
        #[test]
        fn incremental_recheck_equals_from_scratch(
            seed in 1u64..8,
            edits in proptest::collection::vec((any::<bool>(), 0usize..64, 0usize..64, 0u8..10), 1..5),
        ) {
            let g = HubSpoke::small(seed);
            let mut net = g.build();
            // The DNAT rule's translated address: an NSG rule whose destination holds it (or
            // the frontend) is met by every DNAT'd flow (FW-4).
            let translated = net.azure_firewalls[0]
                .rule_collections
                .iter()
                .flat_map(|c| &c.rules)
                .find_map(|r| r.translated_address.clone())
                .expect("the generated network has a DNAT rule");
            let snap0 = compile(&net);
            let grid = reach::cuts(&snap0);
            let mut engine = Engine::new(&snap0);
            for (nsg_edit, a, b, op) in edits {
                // An edit may name a protocol or port no rule used before (an IPv6 family
                // appearing with ICMPv6): the engine refuses it untouched, and the edit is undone.
                let before = net.clone();
                if nsg_edit {
                    let count = net.network_security_groups.len();
                    let n = &mut net.network_security_groups[a % count];
                    if n.security_rules.is_empty() {
                        continue;
                    }
                    let k = b % n.security_rules.len();
                    let name = n.name.clone();
                    let dir = n.security_rules[k].direction;
                    let len = n.security_rules.len();
                    let r = &mut n.security_rules[k];
                    match op {
                        0 => {
                            r.access = match r.access {
                                Access::Allow => Access::Deny,
                                Access::Deny => Access::Allow,
                            }
                        }
                        1 => r.destination.port_ranges = vec![PortRange::ANY],
                        2 => r.source.address_prefixes = vec![AddressItem::Any],
                        // The same rule under another name: the answers must name it.
                        4 => r.name.push_str("-renamed"),
                        // NSG-4: its priority moved (before or after others, ties by order).
                        6 => r.priority = 95 + 10 * (a % (len + 1)) as u32,
                        // SSH from anywhere to anything: on the DNAT target's NSG, every
                        // DNAT'd flow meets it, from outside translated (FW-4).
                        7 => {
                            r.protocol = Protocol::Tcp;
                            r.access = Access::Allow;
                            r.source.address_prefixes = vec![AddressItem::Any];
                            r.destination.address_prefixes = vec![AddressItem::Any];
                            r.destination.port_ranges = vec![PortRange::single(22)];
                        }
                        // Only the translated address, any port.
                        8 => {
                            r.destination.address_prefixes = vec![translated.clone()];
                            r.destination.port_ranges = vec![PortRange::ANY];
                        }
                        // A rule added: a copy under a new name, just after this one.
                        9 => {
                            let mut copy = r.clone();
                            copy.name.push_str("-added");
                            copy.priority += 5;
                            copy.access = match copy.access {
                                Access::Allow => Access::Deny,
                                Access::Deny => Access::Allow,
                            };
                            n.security_rules.push(copy);
                        }
                        _ => {
                            n.security_rules.remove(k);
                        }
                    }
                    let snap = compile(&net);
                    let (idx, _) = snap.nsgs().find(|(_, x)| x.name == name).unwrap();
                    if engine.update_nsg(idx, dir, snap.nsg(idx).direction(dir)).is_err() {
                        net = before;
                        continue;
                    }
                    same_answers(&engine, &Engine::with_cuts(&snap, &grid));
                } else {
                    let fw = &mut net.azure_firewalls[0];
                    let network: Vec<usize> = (0..fw.rule_collections.len())
                        .filter(|i| fw.rule_collections[*i].kind == RuleCollectionKind::Network)
                        .collect();
                    let at = network[a % network.len()];
                    let ahead = network
                        .iter()
                        .map(|i| fw.rule_collections[*i].priority)
                        .min()
                        .unwrap_or(200);
                    let c = &mut fw.rule_collections[at];
                    if c.rules.is_empty() {
                        continue;
                    }
                    let k = b % c.rules.len();
                    match op {
                        // FW-2.4: a rule moved to the front of its collection.
                        6 => {
                            let r = c.rules.remove(k);
                            c.rules.insert(0, r);
                        }
                        // FW-1: the collection's priority changed (ahead of every other
                        // network collection, or after some).
                        7 => c.priority = ahead - 1 + (b % 4) as u32,
                        // FW-1: the priority moved without a change of order (collections are
                        // ten apart): the answers are relabelled, not re-checked.
                        9 => c.priority += 1,
                        // A rule added after this one: a copy under a new name, its ports
                        // opened.
                        8 => {
                            let mut copy = c.rules[k].clone();
                            copy.name.push_str("-added");
                            copy.destination_ports = vec![PortRange::ANY];
                            c.rules.insert(k + 1, copy);
                        }
                        0 => {
                            c.action = if c.action == FirewallAction::Allow {
                                FirewallAction::Deny
                            } else {
                                FirewallAction::Allow
                            }
                        }
                        1 => c.rules[k].destination_ports = vec![PortRange::ANY],
                        2 => c.rules[k].source_addresses = vec![AddressItem::Any],
                        // Narrowed to one destination port: the classes are cut, not rebuilt.
                        3 => c.rules[k].destination_ports = vec![PortRange::single(3389)],
                        4 => c.rules[k].name.push_str("-renamed"),
                        _ => {
                            c.rules.remove(k);
                        }
                    }
                    let snap = compile(&net);
                    let (fw0, compiled) = snap.firewalls().next().unwrap();
                    if engine.update_firewall(fw0, compiled).is_err() {
                        net = before;
                        continue;
                    }
                    same_answers(&engine, &Engine::with_cuts(&snap, &grid));
                }
            }
        }
    }
}

/// The reach examples' arguments: any words give numbers or an error naming the argument,
/// never a panic; three or four whole numbers are taken as given (N at least 1).
mod example_args {
    use palisade_analyze::reach::bench::example_args;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    proptest! {
        // Failures are kept beside this file (`reach.proptest-regressions`) and replayed first.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
            ..ProptestConfig::default()
        })]
        #[test]
        fn any_words_give_sizes_or_an_error(words in proptest::collection::vec(".{0,8}", 0..6)) {
            match example_args(words.clone(), 7) {
                Ok((s, n, f, r)) => {
                    prop_assert!(words.is_empty() || words.len() >= 3);
                    prop_assert!(r >= 1);
                    if words.is_empty() {
                        prop_assert_eq!((s, n, f, r), (500, 50, 5000, 7));
                    }
                }
                Err(e) => prop_assert!(e.contains("argument") || e.contains("expected")),
            }
        }

        #[test]
        fn numbers_are_taken_as_given(s in 0usize..1000, n in 0usize..100, f in 0usize..10000, r in 0usize..50) {
            let words = [s, n, f, r].map(|x| x.to_string());
            prop_assert_eq!(example_args(words.clone(), 3), Ok((s, n, f, r.max(1))));
            prop_assert_eq!(example_args(words[..3].to_vec(), 3), Ok((s, n, f, 3)));
        }
    }
}
