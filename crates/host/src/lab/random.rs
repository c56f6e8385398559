//! Random flows over a network (`lab check --random N --seed S`), drawn so that they exercise
//! its rules: endpoints are the NICs' and subnets' addresses, hosts inside the prefixes the NSG
//! rules name and a few Internet hosts; ports are the ends of the rules' port ranges and common
//! service ports. Deterministic: the same network, count and seed give the same flows.

use super::check::FlowCase;
use ipnet::IpNet;
use palisade_policy::endpoints::first_usable;
use palisade_policy::Snapshot;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// splitmix64: small, fast, and good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Internet hosts in the documentation ranges, which no rule is likely to name.
const INTERNET: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 7),
    Ipv4Addr::new(198, 51, 100, 7),
];
const COMMON_PORTS: [u16; 8] = [22, 53, 80, 123, 443, 1433, 3389, 8080];

/// An Internet host for IPv6 flows (documentation range).
const INTERNET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

/// `n` random TCP, UDP and ICMP echo flows over `snap`, each within one family (PAL-5.1),
/// named `random-<i> <protocol> <src> → <dst>`.
pub fn flows(snap: &Snapshot, n: usize, seed: u64) -> Vec<FlowCase> {
    let mut rng = Rng(seed);
    let mut workloads: BTreeSet<IpAddr> = BTreeSet::new();
    for (_, nic) in snap.nics() {
        workloads.extend(nic.addresses.iter().copied());
    }
    for (_, s) in snap.subnets() {
        workloads.extend(s.prefixes.iter().filter_map(first_usable));
    }
    // A firewall forwards; it is a hop of flows, not an end (its subnet's first address often
    // is the firewall's).
    workloads.retain(|a| snap.firewall_at(*a).is_none());
    let mut others: BTreeSet<IpAddr> = INTERNET.into_iter().map(IpAddr::V4).collect();
    if workloads.iter().any(IpAddr::is_ipv6) {
        others.insert(IpAddr::V6(INTERNET6));
    }
    let mut ports: BTreeSet<u16> = COMMON_PORTS.into_iter().collect();
    for (_, nsg) in snap.nsgs() {
        for r in nsg.inbound.rules.iter().chain(&nsg.outbound.rules) {
            for p in r.source.iter().chain(&r.destination) {
                // A host inside a named prefix, unless the prefix is huge (a tag's `Internet`).
                if let IpNet::V4(p) = p {
                    if p.prefix_len() >= 8 {
                        let size = 1u64 << (32 - p.prefix_len());
                        let host = u32::from(p.network()) as u64 + rng.next() % size;
                        let a = IpAddr::V4(Ipv4Addr::from(host as u32));
                        if !workloads.contains(&a) && !snap.in_virtual_network(a) {
                            others.insert(a);
                        }
                    }
                }
            }
            for pr in r.destination_ports.iter() {
                ports.insert(pr.first);
                ports.insert(pr.last);
            }
        }
    }
    let workloads: Vec<IpAddr> = workloads.into_iter().collect();
    let ports: Vec<u16> = ports.into_iter().filter(|p| *p != 0).collect();
    let mut out = vec![];
    if workloads.is_empty() {
        return out;
    }
    for i in 0..n {
        let w = workloads[rng.below(workloads.len())];
        let same_family = |a: &&IpAddr| a.is_ipv4() == w.is_ipv4();
        let workloads: Vec<IpAddr> = workloads.iter().filter(same_family).copied().collect();
        let others: Vec<IpAddr> = others.iter().filter(same_family).copied().collect();
        // Half the flows stay inside the networks, a quarter leave, a quarter come in.
        let (src, dst) = match rng.below(4) {
            0 | 1 => {
                let d = workloads[rng.below(workloads.len())];
                if d == w {
                    (w, others[rng.below(others.len())])
                } else {
                    (w, d)
                }
            }
            2 => (w, others[rng.below(others.len())]),
            _ => (others[rng.below(others.len())], w),
        };
        // A tenth ICMP echo, a fifth UDP, the rest TCP.
        let protocol = match rng.below(10) {
            0 => "Icmp",
            1 | 2 => "Udp",
            _ => "Tcp",
        };
        // Distinct source ports (an echo's identifier): no two flows share a connection's
        // 4-tuple.
        let sport = 20000 + i as u16 % 40000;
        let dport = ports[rng.below(ports.len())];
        // The name says what was sent: a report line needs no lookup.
        let (name, dport) = if protocol == "Icmp" {
            (format!("random-{i} Icmp {src} → {dst}"), None)
        } else {
            let (from, to) = (SocketAddr::new(src, sport), SocketAddr::new(dst, dport));
            (format!("random-{i} {protocol} {from} → {to}"), Some(dport))
        };
        out.push(FlowCase {
            name,
            protocol: protocol.into(),
            source: src,
            source_port: Some(sport),
            destination: dst,
            destination_port: dport,
            host: None,
            reply_to: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layered() -> Snapshot {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/scenarios/layered-nsg/network.json");
        palisade_load::load(&palisade_load::Source::files([file]))
            .snapshot
            .unwrap()
    }

    // spec PAL-5.1: one family per flow; a dual-stack network gets flows of both.
    #[test]
    fn dual_stack_flows_keep_to_one_family() {
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dual-stack.yaml");
        let s = palisade_load::load(&palisade_load::Source::files([file]))
            .snapshot
            .unwrap();
        let a = flows(&s, 200, 3);
        assert!(a
            .iter()
            .all(|f| f.source.is_ipv4() == f.destination.is_ipv4()));
        assert!(a.iter().any(|f| f.source.is_ipv6()));
        assert!(a.iter().any(|f| f.source.is_ipv4()));
        assert!(a.iter().any(|f| f.destination == IpAddr::V6(INTERNET6)));
    }

    #[test]
    fn deterministic_and_varied() {
        let s = layered();
        let a = flows(&s, 200, 7);
        assert_eq!(a, flows(&s, 200, 7));
        assert_ne!(a, flows(&s, 200, 8));
        assert_eq!(a.len(), 200);
        let inside =
            |f: &FlowCase| s.in_virtual_network(f.source) && s.in_virtual_network(f.destination);
        assert!(a.iter().any(inside));
        assert!(a.iter().any(|f| !s.in_virtual_network(f.source)));
        assert!(a.iter().any(|f| !s.in_virtual_network(f.destination)));
        assert!(a.iter().any(|f| f.protocol == "Udp"));
        // spec NSG-2.2: ICMP has no ports; an echo is a flow of its own.
        let icmp: Vec<&FlowCase> = a.iter().filter(|f| f.protocol == "Icmp").collect();
        assert!(!icmp.is_empty());
        assert!(icmp.iter().all(|f| f.destination_port.is_none()));
        assert!(a.iter().all(|f| f.source != f.destination));
        let ports: BTreeSet<u16> = a.iter().filter_map(|f| f.destination_port).collect();
        assert!(ports.len() > 5, "{ports:?}");
    }
}
