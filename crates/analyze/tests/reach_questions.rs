//! The questions asked of a big network (issue 15, item 4), answered from the matrix and checked
//! against `trace` flow by flow (DIAG-7): which subnets reach which, and what reaches a subnet
//! from the Internet.

use palisade_analyze::gen::HubSpoke;
use palisade_analyze::headerspace::Family;
use palisade_analyze::reach::{self, Engine, Reach};
use palisade_model::catalog::Catalogs;
use palisade_model::Protocol;
use palisade_policy::{CompileOptions, Flow, Snapshot, TraceOptions, Verdict};
use std::net::IpAddr;

fn compile(g: &HubSpoke) -> Snapshot {
    Snapshot::compile(
        &g.build(),
        &Catalogs::embedded(),
        &CompileOptions::default(),
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Every host of the hub and the spokes, plus a few outside addresses.
fn addresses(g: &HubSpoke) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = vec![];
    for n in std::iter::once(g.hub()).chain((0..g.spokes).map(|i| g.spoke(i))) {
        v.extend(n.hosts());
    }
    v.extend(["8.8.8.8", "203.0.113.3", "13.64.38.225", "52.1.2.3"].map(ip));
    v
}

/// The flows between two addresses the tests try: TCP and UDP on a few ports, ICMP.
fn flows(s: IpAddr, d: IpAddr) -> Vec<Flow> {
    let mut v = vec![];
    for p in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
        let ports: &[u16] = if p.has_ports() {
            &[22, 80, 443, 1500, 3389, 8080]
        } else {
            &[0]
        };
        for &dp in ports {
            v.push(Flow {
                source: s,
                source_port: if p.has_ports() { 50000 } else { 0 },
                destination: d,
                destination_port: dp,
                protocol: p,
                host: None,
                app_protocol: None,
            });
        }
    }
    v
}

fn subnet_name(snap: &Snapshot, a: IpAddr) -> Option<String> {
    let s = snap.subnet(snap.locate(a).subnet?);
    Some(format!("{}/{}", s.vnet, s.name))
}

fn example_flow(e: &reach::ExampleFlow) -> Flow {
    let protocol = match e.protocol.as_str() {
        "Tcp" => Protocol::Tcp,
        "Udp" => Protocol::Udp,
        "Icmp" => Protocol::Icmp,
        other => panic!("example protocol {other}"),
    };
    Flow {
        source: ip(&e.source),
        source_port: e.source_port,
        destination: ip(&e.destination),
        destination_port: e.destination_port,
        protocol,
        host: None,
        app_protocol: None,
    }
}

// spoke-to-spoke summary: a subnet pair is listed, with the flow's protocol and ports, exactly
// when trace allows some flow between them (spec DIAG-7).
#[test]
fn diag_7_subnet_matrix_lists_every_pair_trace_allows() {
    for seed in 1..=3 {
        let g = HubSpoke::small(seed);
        let snap = compile(&g);
        let engine = Engine::new(&snap);
        let m = engine.subnet_matrix();
        assert!(!m.links.is_empty(), "seed {seed}: nothing reaches anything");
        for l in &m.links {
            let t = snap.trace(&example_flow(&l.example), &TraceOptions::default());
            assert_eq!(t.verdict, Verdict::Allow, "seed {seed}: {l:?}");
        }
        let addrs = addresses(&g);
        let mut allowed = 0;
        for &s in &addrs {
            let Some(sn) = subnet_name(&snap, s) else {
                continue;
            };
            for &d in &addrs {
                let Some(dn) = subnet_name(&snap, d) else {
                    continue;
                };
                let link = m
                    .links
                    .iter()
                    .find(|l| l.source == sn && l.destination == dn);
                for flow in flows(s, d) {
                    if snap.trace(&flow, &TraceOptions::default()).verdict != Verdict::Allow {
                        continue;
                    }
                    allowed += 1;
                    let k = flow.key();
                    let point = [k.protocol as u128, k.src_port as u128, k.dst_port as u128];
                    let l = link.unwrap_or_else(|| panic!("{flow:?}: {sn} → {dn} not listed"));
                    assert_eq!(l.family, Family::V4);
                    assert!(l.l4.contains(&point), "{flow:?}: not in {:?}", l.services);
                }
            }
        }
        assert!(allowed > 20, "seed {seed}: {allowed} allowed flows");
    }
}

// `--from Internet --to SUBNET`: a flow from an Internet address into the subnet is in the
// report's allowed regions exactly when trace allows it, each entry's example is allowed by
// trace, and Internet
// means public addresses outside the virtual networks (NSG-8.3).
#[test]
fn diag_7_what_reaches_a_subnet_from_the_internet() {
    let (mut checked, mut reached) = (0, 0);
    for seed in 1..=3 {
        let g = HubSpoke::small(seed);
        let snap = compile(&g);
        let engine = Engine::new(&snap);
        let internet = reach::parse_scope(&snap, "Internet").unwrap();
        assert!(internet[0].contains(u32::from(ip4("8.8.8.8")) as u128));
        assert!(!internet[0].contains(u32::from(ip4("10.0.0.4")) as u128));
        assert!(!internet[0].contains(u32::from(ip4("192.168.1.1")) as u128));
        for i in 0..g.spokes {
            let name = subnet_name(&snap, IpAddr::V4(nth_host(&g, i))).unwrap();
            let to = reach::parse_scope(&snap, &name).unwrap();
            let report = reach::report(&engine, &internet, &to, false, &[Reach::Allow]);
            for e in &report.entries {
                assert_eq!(
                    (e.source.as_str(), e.destination.as_str()),
                    ("outside", &*name)
                );
                for f in &e.flows {
                    let t = snap.trace(&example_flow(&f.example), &TraceOptions::default());
                    assert_eq!(t.verdict, Verdict::Allow, "seed {seed}: {e:?}");
                }
            }
            let regions: Vec<_> = engine
                .regions(&internet, &to)
                .into_iter()
                .filter(|r| engine.outcome(r.outcome).verdict == Reach::Allow)
                .collect();
            for s in ["8.8.8.8", "203.0.113.3", "13.64.38.225", "52.1.2.3"].map(ip) {
                for d in g.spoke(i).hosts().step_by(5) {
                    for flow in flows(s, d) {
                        let allowed =
                            snap.trace(&flow, &TraceOptions::default()).verdict == Verdict::Allow;
                        let k = flow.key();
                        let p = [k.protocol as u128, k.src_port as u128, k.dst_port as u128];
                        let (sv, dv) = (v4_value(s), v4_value(d));
                        let listed = regions.iter().any(|r| {
                            r.src.contains(sv as u128)
                                && r.dst.contains(dv as u128)
                                && r.l4.contains(&p)
                        });
                        assert_eq!(allowed, listed, "seed {seed}: {flow:?}");
                        checked += 1;
                        reached += allowed as usize;
                    }
                }
            }
        }
    }
    eprintln!("{checked} flows from the Internet checked, {reached} allowed");
    assert!(checked > 500, "{checked} flows checked");
}

fn v4_value(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(v) => u32::from(v),
        IpAddr::V6(_) => panic!("IPv4 only here"),
    }
}

fn ip4(s: &str) -> std::net::Ipv4Addr {
    s.parse().unwrap()
}

fn nth_host(g: &HubSpoke, i: usize) -> std::net::Ipv4Addr {
    match g.spoke(i) {
        ipnet::IpNet::V4(n) => n.hosts().nth(3).unwrap(),
        ipnet::IpNet::V6(_) => panic!("spokes are IPv4"),
    }
}
