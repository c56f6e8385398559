//! The lab's topology, planned without touching the kernel: which namespaces exist, which
//! addresses each holds, how they are wired to the router, which routes each subnet's traffic
//! takes and which NSG tables each workload enforces. `net.rs` carries it out.
//!
//! Shape: every *place* (a NIC, the other addresses of a subnet, a firewall, the internet) is one
//! namespace with one veth `eth0` to the router namespace. Each end is point-to-point: the place
//! holds its addresses as /32s (/128s) and a default route via `169.254.0.1` (`fe80::1`), the
//! router holds `169.254.0.1/32` (`fe80::1/64`) on every link and a host route back to each
//! address. IPv6 is built like IPv4, through a firewall too when an IPv6 route names one of the
//! firewall's IPv6 addresses (the firewall's place then holds it). The router looks up a
//! packet in the table of the subnet it came from (`ip rule iif LINK`), filled with that subnet's
//! effective routes (RT-3 … RT-5); traffic from the internet and the firewalls uses the main table.

use ipnet::IpNet;
use palisade_model::NextHopType;
use palisade_policy::intervals::{prefix_range, to_prefixes, Family, IntervalSet};
use palisade_policy::routes::{RouteSource, RouteState};
use palisade_policy::{Snapshot, SubnetId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::render::{sanitize, Target};

/// The router end of every link (link-local, so it collides with no network's addresses).
pub const ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
/// The router end of every link for IPv6 (link-local: the same on every link).
pub const ROUTER_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The address of the internet's test servers and DNS server, in the benchmarking range
/// (RFC 2544), which no virtual network uses.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 80);
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 53);
/// First kernel routing table id of the per-subnet tables.
const TABLE_BASE: u32 = 1000;
/// Longest run name: the router's link names are `<run>v<index>` and must fit in 15 bytes.
pub const MAX_RUN_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum PlaceKind {
    /// A NIC: its own NSG and its subnet's.
    Nic(String),
    /// Addresses of a subnet that belong to no NIC (an App Service Environment's instances, a
    /// flow's source): the subnet's NSG only.
    Subnet(String),
    /// A firewall (a next hop `VirtualAppliance`): forwards statefully.
    Firewall(String),
    Internet,
}

/// One namespace and its link to the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub kind: PlaceKind,
    pub netns: String,
    /// The link's name in the router namespace (`eth0` inside the place).
    pub router_link: String,
    pub addresses: Vec<IpAddr>,
    /// `vnet/subnet` whose routes the router applies to traffic from here.
    pub subnet: Option<String>,
    /// NSG tables applied in the place (host mode).
    pub tables: Vec<NsgTable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsgTable {
    pub target: Target,
    pub table: String,
}

/// One kernel route of a subnet's routing table in the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum KernelRoute {
    /// Out of a link to whoever holds the destination.
    Dev {
        prefix: IpNet,
        link: String,
    },
    /// To a next hop on a link (a virtual appliance).
    Via {
        prefix: IpNet,
        gateway: IpAddr,
        link: String,
    },
    Blackhole {
        prefix: IpNet,
    },
    /// Go on to the main table (VnetLocal, peering: the router's /32 routes find the place).
    Throw {
        prefix: IpNet,
    },
}

impl KernelRoute {
    pub fn prefix(&self) -> IpNet {
        match self {
            KernelRoute::Dev { prefix, .. }
            | KernelRoute::Via { prefix, .. }
            | KernelRoute::Blackhole { prefix }
            | KernelRoute::Throw { prefix } => *prefix,
        }
    }
}

impl fmt::Display for KernelRoute {
    /// `ip route` syntax, without the `table`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelRoute::Dev { prefix, link } => write!(f, "{prefix} dev {link}"),
            KernelRoute::Via {
                prefix,
                gateway,
                link,
            } => write!(f, "{prefix} via {gateway} dev {link} onlink"),
            KernelRoute::Blackhole { prefix } => write!(f, "blackhole {prefix}"),
            KernelRoute::Throw { prefix } => write!(f, "throw {prefix}"),
        }
    }
}

/// A subnet's effective routes as one kernel routing table in the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetTable {
    pub subnet: String,
    pub id: u32,
    pub routes: Vec<KernelRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPlan {
    pub run: String,
    pub router: String,
    pub places: Vec<Place>,
    pub tables: Vec<SubnetTable>,
    /// Test names the DNS server answers (name → address).
    pub names: BTreeMap<String, Ipv4Addr>,
    /// What the lab leaves out (IPv6, next hops it cannot build).
    pub notes: Vec<String>,
}

impl LabPlan {
    pub fn internet(&self) -> &Place {
        self.places
            .iter()
            .find(|p| p.kind == PlaceKind::Internet)
            .expect("every plan has an internet place")
    }

    /// The place holding `addr`.
    pub fn place_of(&self, addr: IpAddr) -> Option<&Place> {
        self.places.iter().find(|p| p.addresses.contains(&addr))
    }

    /// Does any place hold an IPv6 address (the router then forwards IPv6 too)?
    pub fn has_ipv6(&self) -> bool {
        self.places
            .iter()
            .any(|p| p.addresses.iter().any(IpAddr::is_ipv6))
    }

    /// A place by NIC, subnet or firewall name, or by one of its addresses.
    pub fn place_named(&self, name: &str) -> Option<&Place> {
        if let Ok(a) = name.parse::<IpAddr>() {
            return self.place_of(a);
        }
        self.places.iter().find(|p| match &p.kind {
            PlaceKind::Nic(n) | PlaceKind::Firewall(n) => n.eq_ignore_ascii_case(name),
            PlaceKind::Subnet(s) => {
                s.eq_ignore_ascii_case(name)
                    || s.rsplit('/')
                        .next()
                        .is_some_and(|s| s.eq_ignore_ascii_case(name))
            }
            PlaceKind::Internet => name.eq_ignore_ascii_case("internet"),
        })
    }

    /// The IPv4 prefixes `subnet`'s routing table sends to a virtual appliance, resolved by
    /// longest prefix (a more specific route elsewhere cuts its range out). Empty without a
    /// table.
    pub fn appliance_prefixes(&self, subnet: &str) -> Vec<IpNet> {
        let Some(table) = self.tables.iter().find(|t| t.subnet == subnet) else {
            return vec![];
        };
        let mut routes: Vec<&KernelRoute> = table
            .routes
            .iter()
            .filter(|r| r.prefix().addr().is_ipv4())
            .collect();
        routes.sort_by_key(|r| r.prefix().prefix_len());
        let mut out = IntervalSet::empty();
        for r in routes {
            let (lo, hi) = prefix_range(&r.prefix());
            let range = IntervalSet::range(lo, hi);
            out = match r {
                KernelRoute::Via { .. } => out.union(&range),
                _ => out.subtract(&range),
            };
        }
        to_prefixes(&out, Family::V4)
    }

    /// Every namespace of the run, router first.
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.router.clone())
            .chain(self.places.iter().map(|p| p.netns.clone()))
            .collect()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("lab name `{0}`: expected 1 to {MAX_RUN_LEN} lowercase letters or digits (it prefixes interface names, which the kernel limits to 15 bytes)")]
    BadRun(String),
    #[error("the network has no workload address to build: no NIC with an address and no flow address inside a subnet")]
    Empty,
}

/// The namespace prefix of a run: every namespace of the run starts with it.
pub fn netns_prefix(run: &str) -> String {
    format!("pal-{run}-")
}

/// Plan the lab for `snap`. `extra` are more addresses to hold (the flows' endpoints): inside a
/// subnet but on no NIC they join the subnet's place; outside every subnet, the internet.
pub fn plan(snap: &Snapshot, run: &str, extra: &[IpAddr]) -> Result<LabPlan, PlanError> {
    if run.is_empty()
        || run.len() > MAX_RUN_LEN
        || !run
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(PlanError::BadRun(run.to_string()));
    }
    let prefix = netns_prefix(run);
    let mut notes = vec![];
    let mut places: Vec<Place> = vec![];
    let mut taken: BTreeSet<IpAddr> = BTreeSet::new();
    let subnet_name = |id: SubnetId| {
        let s = snap.subnet(id);
        format!("{}/{}", s.vnet, s.name)
    };
    let new_place = |places: &mut Vec<Place>,
                     kind: PlaceKind,
                     tag: &str,
                     addresses: Vec<IpAddr>,
                     subnet: Option<String>,
                     tables: Vec<NsgTable>| {
        let i = places.len();
        places.push(Place {
            kind,
            netns: format!("{prefix}{tag}{i}"),
            router_link: format!("{run}v{i}"),
            addresses,
            subnet,
            tables,
        });
    };

    for (_, nic) in snap.nics() {
        let addresses: Vec<IpAddr> = nic
            .addresses
            .iter()
            .copied()
            .filter(|a| taken.insert(*a))
            .collect();
        if addresses.is_empty() {
            continue;
        }
        let mut tables = vec![];
        if let Some(s) = nic.subnet {
            if let Some(nsg) = snap.subnet(s).nsg {
                tables.push(NsgTable {
                    target: Target::Subnet(subnet_name(s)),
                    table: format!("pal_s_{}", sanitize(&snap.nsg(nsg).name)),
                });
            }
        }
        if let Some(nsg) = nic.nsg {
            tables.push(NsgTable {
                target: Target::Nic(nic.name.clone()),
                table: format!("pal_n_{}", sanitize(&snap.nsg(nsg).name)),
            });
        }
        new_place(
            &mut places,
            PlaceKind::Nic(nic.name.clone()),
            "n",
            addresses,
            nic.subnet.map(subnet_name),
            tables,
        );
    }

    // Firewalls a route leads to.
    let mut firewalls: BTreeMap<String, (Vec<IpAddr>, Option<SubnetId>)> = BTreeMap::new();
    for (_, s) in snap.subnets() {
        for r in &s.routes.routes {
            let (NextHopType::VirtualAppliance, Some(ip)) =
                (r.next_hop_type, r.next_hop_ip_address)
            else {
                continue;
            };
            if taken.contains(&ip) {
                continue;
            }
            if let Some(fw) = snap.firewall_at(ip) {
                let e = firewalls
                    .entry(snap.firewall(fw).name.clone())
                    .or_insert_with(|| (vec![], snap.locate(ip).subnet));
                if !e.0.contains(&ip) {
                    e.0.push(ip);
                }
            }
        }
    }
    for (name, (addrs, subnet)) in firewalls {
        taken.extend(addrs.iter().copied());
        new_place(
            &mut places,
            PlaceKind::Firewall(name),
            "f",
            addrs,
            subnet.map(subnet_name),
            vec![],
        );
    }

    // Flow endpoints: inside a subnet → that subnet's place; elsewhere → the internet.
    let mut by_subnet: BTreeMap<SubnetId, Vec<IpAddr>> = BTreeMap::new();
    let mut outside: Vec<IpAddr> = vec![];
    for &a in extra {
        if !taken.insert(a) {
            continue;
        }
        match snap.locate(a).subnet {
            Some(s) => by_subnet.entry(s).or_default().push(a),
            None => outside.push(a),
        }
    }
    // One place per address, so that two of them talk across the router as two machines do.
    for (s, addrs) in by_subnet {
        let name = subnet_name(s);
        for a in addrs {
            let tables = snap
                .subnet(s)
                .nsg
                .map(|nsg| NsgTable {
                    target: Target::Subnet(name.clone()),
                    table: format!("pal_s_{}", sanitize(&snap.nsg(nsg).name)),
                })
                .into_iter()
                .collect();
            new_place(
                &mut places,
                PlaceKind::Subnet(name.clone()),
                "s",
                vec![a],
                Some(name.clone()),
                tables,
            );
        }
    }
    if places.is_empty() {
        return Err(PlanError::Empty);
    }
    for a in [IpAddr::V4(SERVER_ADDR), IpAddr::V4(DNS_ADDR)] {
        if taken.insert(a) {
            outside.push(a);
        }
    }
    new_place(&mut places, PlaceKind::Internet, "i", outside, None, vec![]);

    let tables = subnet_tables(snap, &places, &mut notes);
    let mut names = BTreeMap::new();
    names.insert("lab.test".to_string(), SERVER_ADDR);
    Ok(LabPlan {
        run: run.to_string(),
        router: format!("{prefix}rtr"),
        places,
        tables,
        names,
        notes,
    })
}

/// One routing table per subnet that has a place: its active effective routes (and those that
/// drop), as the router carries them out.
fn subnet_tables(snap: &Snapshot, places: &[Place], notes: &mut Vec<String>) -> Vec<SubnetTable> {
    let internet_link = places
        .iter()
        .find(|p| p.kind == PlaceKind::Internet)
        .map(|p| p.router_link.clone())
        .unwrap_or_default();
    let link_of = |ip: IpAddr| {
        places
            .iter()
            .find(|p| p.addresses.contains(&ip))
            .map(|p| p.router_link.clone())
    };
    let wanted: BTreeSet<&str> = places.iter().filter_map(|p| p.subnet.as_deref()).collect();
    let mut out = vec![];
    for (id, s) in snap.subnets() {
        let name = format!("{}/{}", s.vnet, s.name);
        if !wanted.contains(name.as_str()) {
            continue;
        }
        let mut routes = vec![];
        let mut seen = BTreeSet::new();
        for r in &s.routes.routes {
            if r.state == RouteState::Invalid && !r.drops {
                continue;
            }
            for p in &r.address_prefix {
                let prefix = p.trunc();
                // The effective list holds the winner first for a prefix (RT-5 is resolved at
                // compile time); a later duplicate would only be refused by the kernel.
                if !seen.insert(prefix) {
                    continue;
                }
                let route = if r.drops {
                    KernelRoute::Blackhole { prefix }
                } else {
                    match (r.next_hop_type, r.next_hop_ip_address) {
                        (NextHopType::VnetLocal | NextHopType::VNetPeering, _) => {
                            KernelRoute::Throw { prefix }
                        }
                        // A service endpoint reaches the service's public addresses directly.
                        (NextHopType::Internet | NextHopType::VirtualNetworkServiceEndpoint, _) => {
                            KernelRoute::Dev {
                                prefix,
                                link: internet_link.clone(),
                            }
                        }
                        (NextHopType::VirtualAppliance, Some(gateway)) => {
                            match link_of(gateway)
                                .filter(|_| gateway.is_ipv4() == prefix.addr().is_ipv4())
                            {
                                Some(link) => KernelRoute::Via {
                                    prefix,
                                    gateway,
                                    link,
                                },
                                None => {
                                    notes.push(format!(
                                        "{name}: {prefix} → {gateway}: nothing at that address in the lab, dropped"
                                    ));
                                    KernelRoute::Blackhole { prefix }
                                }
                            }
                        }
                        (NextHopType::None, _) => KernelRoute::Blackhole { prefix },
                        (other, _) => {
                            if r.source == RouteSource::User {
                                notes.push(format!(
                                    "{name}: {prefix} → {}: not built in the lab, dropped",
                                    other.as_str()
                                ));
                            }
                            KernelRoute::Blackhole { prefix }
                        }
                    }
                };
                routes.push(route);
            }
        }
        out.push(SubnetTable {
            subnet: name,
            id: TABLE_BASE + id.index() as u32,
            routes,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(name: &str) -> Snapshot {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/scenarios")
            .join(name)
            .join("network.json");
        let loaded = palisade_load::load(&palisade_load::Source::files([file]));
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        loaded.snapshot.unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn run_names_fit_interface_names() {
        let snap = scenario("layered-nsg");
        for bad in ["", "Lab", "lab-1", "toolongrun", "ü"] {
            assert_eq!(
                plan(&snap, bad, &[]),
                Err(PlanError::BadRun(bad.to_string())),
                "{bad:?}"
            );
        }
        let p = plan(&snap, "abcdefgh", &[]).unwrap();
        for place in &p.places {
            assert!(place.router_link.len() <= 15, "{}", place.router_link);
            assert!(place.netns.starts_with("pal-abcdefgh-"));
        }
    }

    // spec NSG-6: a NIC in a subnet meets both NSGs; the lab applies both tables in its place.
    #[test]
    fn layered_nsg_places_and_tables() {
        let snap = scenario("layered-nsg");
        let outside = [ip("203.0.113.20"), ip("10.2.1.4"), ip("10.2.3.99")];
        let p = plan(&snap, "t", &outside).unwrap();
        let web1 = p.place_named("web-vm1-nic").unwrap();
        assert_eq!(web1.addresses, vec![ip("10.2.1.4")]);
        let targets: Vec<&Target> = web1.tables.iter().map(|t| &t.target).collect();
        assert!(matches!(targets[0], Target::Subnet(s) if s.ends_with("/web-subnet")));
        assert!(matches!(targets[1], Target::Nic(n) if n == "web-vm1-nic"));
        // No NSG anywhere on the jumpbox: no table.
        assert!(p.place_named("jumpbox-nic").unwrap().tables.is_empty());
        // An address on no NIC joins its subnet's place, with the subnet NSG only.
        let data = p.place_of(ip("10.2.3.99")).unwrap();
        assert!(matches!(&data.kind, PlaceKind::Subnet(s) if s.ends_with("/data-subnet")));
        assert_eq!(data.tables.len(), 1);
        // Outside addresses, and the servers, live in the internet.
        let inet = p.internet();
        assert!(inet.addresses.contains(&ip("203.0.113.20")));
        assert!(inet.addresses.contains(&IpAddr::V4(SERVER_ADDR)));
        // Every address is held exactly once; names are unique.
        let mut all: Vec<IpAddr> = p.places.iter().flat_map(|p| p.addresses.clone()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        let mut names = p.namespaces();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), p.places.len() + 1);
    }

    // spec RT-5, RT-8, RT-3.1: each subnet's table holds its own effective routes — the UDR to
    // the appliance on the broken subnet, the more specific Internet routes on the fixed one,
    // the VNet itself handed back to the main table.
    #[test]
    fn asymmetric_routing_tables() {
        let snap = scenario("asymmetric-routing");
        let p = plan(
            &snap,
            "t",
            &[ip("10.3.0.10"), ip("10.3.2.10"), ip("70.37.57.58")],
        )
        .unwrap();
        let fw = p
            .places
            .iter()
            .find(|p| matches!(&p.kind, PlaceKind::Firewall(n) if n == "asym-firewall"))
            .expect("the firewall a route leads to gets a place");
        assert_eq!(fw.addresses, vec![ip("10.3.1.4")]);
        let table = |subnet: &str| {
            p.tables
                .iter()
                .find(|t| t.subnet.ends_with(subnet))
                .unwrap_or_else(|| panic!("no table for {subnet}"))
        };
        let default: IpNet = "0.0.0.0/0".parse().unwrap();
        for subnet in ["/ase-broken-subnet", "/ase-fixed-subnet"] {
            let t = table(subnet);
            assert!(
                t.routes.contains(&KernelRoute::Via {
                    prefix: default,
                    gateway: ip("10.3.1.4"),
                    link: fw.router_link.clone(),
                }),
                "{subnet}: {:?}",
                t.routes
            );
            assert!(t.routes.iter().any(
                |r| matches!(r, KernelRoute::Throw { prefix } if prefix.contains(&ip("10.3.0.10")))
            ));
        }
        let mgmt: IpNet = "70.37.57.58/32".parse().unwrap();
        let internet = KernelRoute::Dev {
            prefix: mgmt,
            link: p.internet().router_link.clone(),
        };
        assert!(table("/ase-fixed-subnet").routes.contains(&internet));
        assert!(!table("/ase-broken-subnet")
            .routes
            .iter()
            .any(|r| r.prefix() == mgmt));
        assert_eq!(
            internet.to_string(),
            format!("70.37.57.58/32 dev {}", p.internet().router_link)
        );
        // Both subnets send everything to the firewall but what a more specific route takes
        // elsewhere: the fixed one's /32 to the internet, the VNet itself.
        let to_firewall = p.appliance_prefixes(&table("/ase-fixed-subnet").subnet);
        let covers = |a: &str| to_firewall.iter().any(|n| n.contains(&ip(a)));
        assert!(
            covers("203.0.113.7") && covers("70.37.57.57"),
            "{to_firewall:?}"
        );
        assert!(
            !covers("70.37.57.58") && !covers("10.3.0.10"),
            "{to_firewall:?}"
        );
        let broken = p.appliance_prefixes(&table("/ase-broken-subnet").subnet);
        assert!(broken.iter().any(|n| n.contains(&ip("70.37.57.58"))));
        // The firewall's own subnet sends nothing to an appliance.
        assert!(p
            .appliance_prefixes(fw.subnet.as_deref().unwrap())
            .is_empty());
    }
}
