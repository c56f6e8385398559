//! The network map: virtual networks with every subnet (its prefixes, NSG, route table, NICs and
//! any firewall inside it), and the next hops of each subnet's user routes and peerings drawn as
//! arrows. Pure: a [`Snapshot`] in, SVG out; the layout is a list of boxes and arrows so it can be
//! checked without a browser.

use maud::{html, Markup};
use palisade_model::NextHopType;
use palisade_policy::routes::{RouteSource, RouteState};
use palisade_policy::Snapshot;
use std::collections::BTreeMap;

const LEFT: i32 = 20;
const VNET_WIDTH: i32 = 560;
const TARGETS_X: i32 = 840;
const TARGET_WIDTH: i32 = 220;
const ROW: i32 = 78;
const LINE: i32 = 16;

/// Where a next hop leads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// A subnet of the map (the one holding the appliance, or a peered network's first subnet).
    Subnet(usize),
    /// A node outside the virtual networks: `Internet`, `None (dropped)`, a gateway, an
    /// appliance that is not modelled.
    Outside(String),
}

/// One subnet row.
#[derive(Debug)]
pub struct SubnetBox {
    pub vnet: String,
    pub name: String,
    pub prefixes: Vec<String>,
    pub nsg: Option<String>,
    pub route_table: Option<String>,
    pub nics: Vec<String>,
    pub firewalls: Vec<String>,
    pub y: i32,
    pub height: i32,
}

/// Routes of one subnet that share a target: one arrow.
#[derive(Debug)]
pub struct Arrow {
    pub from: usize,
    pub to: Target,
    /// `kind`: `UDR` or `peering`; the routes' labels (`name prefix`).
    pub kind: &'static str,
    pub routes: Vec<String>,
}

#[derive(Debug)]
pub struct Map {
    /// Virtual networks: name, address space, first and last subnet index.
    pub vnets: Vec<(String, Vec<String>, std::ops::Range<usize>)>,
    pub subnets: Vec<SubnetBox>,
    pub arrows: Vec<Arrow>,
    pub outside: Vec<String>,
    /// Peerings between virtual networks of the map, by vnet index.
    pub peerings: Vec<(usize, usize)>,
}

impl Map {
    pub fn of(snapshot: &Snapshot) -> Map {
        let network = &snapshot.network;
        let mut subnets = vec![];
        let mut vnets = vec![];
        let mut y = 30;
        for v in &network.virtual_networks {
            let first = subnets.len();
            y += 30;
            for s in &v.subnets {
                let entry = snapshot.subnets().find(|(_, e)| {
                    e.vnet.eq_ignore_ascii_case(&v.name) && e.name.eq_ignore_ascii_case(&s.name)
                });
                let nics: Vec<String> = entry
                    .iter()
                    .flat_map(|(id, _)| {
                        snapshot
                            .nics()
                            .filter(move |(_, n)| n.subnet == Some(*id))
                            .map(|(_, n)| {
                                let nsg = n.nsg.map(|g| format!(" (NSG {})", snapshot.nsg(g).name));
                                let addresses: Vec<String> =
                                    n.addresses.iter().map(|a| a.to_string()).collect();
                                format!(
                                    "NIC {} {}{}",
                                    n.name,
                                    addresses.join(", "),
                                    nsg.unwrap_or_default()
                                )
                            })
                    })
                    .collect();
                let firewalls: Vec<String> = snapshot
                    .firewalls()
                    .filter(|(_, f)| {
                        f.private_ip_addresses.iter().any(|ip| {
                            let at = snapshot.locate(*ip).subnet;
                            at.is_some() && at == entry.map(|(id, _)| id)
                        })
                    })
                    .map(|(_, f)| f.name.clone())
                    .collect();
                let height = ROW + LINE * (nics.len() as i32);
                subnets.push(SubnetBox {
                    vnet: v.name.clone(),
                    name: s.name.clone(),
                    prefixes: s.address_prefixes.iter().map(|p| p.to_string()).collect(),
                    nsg: entry
                        .and_then(|(_, e)| e.nsg)
                        .map(|g| snapshot.nsg(g).name.clone()),
                    route_table: entry
                        .and_then(|(_, e)| e.route_table.clone())
                        .or_else(|| s.route_table.clone()),
                    nics,
                    firewalls,
                    y,
                    height,
                });
                y += height + 10;
            }
            y += 20;
            vnets.push((
                v.name.clone(),
                v.address_space.iter().map(|p| p.to_string()).collect(),
                first..subnets.len(),
            ));
        }
        let vnet_of = |addr: std::net::IpAddr| {
            network
                .virtual_networks
                .iter()
                .position(|v| v.address_space.iter().any(|p| p.contains(&addr)))
        };
        let mut grouped: BTreeMap<(usize, Target, &'static str), Vec<String>> = BTreeMap::new();
        for (i, b) in subnets.iter().enumerate() {
            let Some((_, entry)) = snapshot.subnets().find(|(_, e)| {
                e.vnet.eq_ignore_ascii_case(&b.vnet) && e.name.eq_ignore_ascii_case(&b.name)
            }) else {
                continue;
            };
            for r in &entry.routes.routes {
                if r.state != RouteState::Active {
                    continue;
                }
                let prefixes: Vec<String> =
                    r.address_prefix.iter().map(|p| p.to_string()).collect();
                let label = match &r.name {
                    Some(n) => format!("{n} {}", prefixes.join(" ")),
                    None => prefixes.join(" "),
                };
                let (target, kind) = match (r.source, r.next_hop_type) {
                    (_, NextHopType::VNetPeering) => {
                        // A peering's system route: to the peered network's first subnet.
                        let peer = r
                            .address_prefix
                            .first()
                            .and_then(|p| vnet_of(p.network()))
                            .and_then(|v| vnets.get(v))
                            .filter(|(_, _, range)| !range.is_empty());
                        match peer {
                            Some((_, _, range)) => (Target::Subnet(range.start), "peering"),
                            None => (
                                Target::Outside("peered network (not in the input)".into()),
                                "peering",
                            ),
                        }
                    }
                    (RouteSource::User, hop) => (
                        user_target(snapshot, &subnets, hop, r.next_hop_ip_address),
                        "UDR",
                    ),
                    _ => continue,
                };
                grouped.entry((i, target, kind)).or_default().push(label);
            }
        }
        let arrows: Vec<Arrow> = grouped
            .into_iter()
            .map(|((from, to, kind), routes)| Arrow {
                from,
                to,
                kind,
                routes,
            })
            .collect();
        let mut outside: Vec<String> = arrows
            .iter()
            .filter_map(|a| match &a.to {
                Target::Outside(n) => Some(n.clone()),
                Target::Subnet(_) => None,
            })
            .collect();
        outside.sort();
        outside.dedup();
        let by_name = |name: &str| {
            vnets
                .iter()
                .position(|(n, _, _)| n.eq_ignore_ascii_case(name))
        };
        let mut peerings = vec![];
        for (i, v) in network.virtual_networks.iter().enumerate() {
            for p in &v.virtual_network_peerings {
                let remote = p
                    .remote_virtual_network
                    .as_deref()
                    .and_then(by_name)
                    .or_else(|| {
                        p.remote_address_space
                            .first()
                            .and_then(|s| vnet_of(s.network()))
                    });
                if let Some(j) = remote.filter(|j| *j != i) {
                    let pair = (i.min(j), i.max(j));
                    if !peerings.contains(&pair) {
                        peerings.push(pair);
                    }
                }
            }
        }
        Map {
            vnets,
            subnets,
            arrows,
            outside,
            peerings,
        }
    }

    fn height(&self) -> i32 {
        let subnets = self
            .subnets
            .last()
            .map(|s| s.y + s.height + 60)
            .unwrap_or(120);
        let outside = 60 + 70 * self.outside.len() as i32;
        subnets.max(outside)
    }

    fn outside_y(&self, name: &str) -> i32 {
        let i = self.outside.iter().position(|n| n == name).unwrap_or(0) as i32;
        60 + 70 * i
    }

    fn vnet_top(&self, v: usize) -> i32 {
        let range = &self.vnets[v].2;
        self.subnets.get(range.start).map(|s| s.y - 30).unwrap_or(0)
    }

    /// The map as an SVG element.
    pub fn svg(&self) -> Markup {
        let width = TARGETS_X + TARGET_WIDTH + 20;
        let height = self.height();
        html! {
            svg #network-map xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
                viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="network map" {
                defs {
                    marker #arrow viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse" {
                        path d="M 0 0 L 10 5 L 0 10 z" fill="#444" {}
                    }
                }
                @for (v, (name, space, range)) in self.vnets.iter().enumerate() {
                    @let top = self.vnet_top(v);
                    @let bottom = self.subnets.get(range.end.saturating_sub(1)).map(|s| s.y + s.height + 10).unwrap_or(top + 40);
                    g class="vnet" data-vnet=(name) {
                        rect x=(LEFT) y=(top) width=(VNET_WIDTH) height=(bottom - top) rx="8" class="vnet-box" {}
                        text x=(LEFT + 10) y=(top + 20) class="vnet-name" { "virtual network " (name) "  " (space.join(", ")) }
                    }
                }
                @for (i, s) in self.subnets.iter().enumerate() {
                    g class="subnet" data-subnet=(format!("{}/{}", s.vnet, s.name)) id=(format!("subnet-{i}")) {
                        rect x=(LEFT + 15) y=(s.y) width=(VNET_WIDTH - 30) height=(s.height) rx="5" class="subnet-box" {}
                        text x=(LEFT + 25) y=(s.y + 18) class="subnet-name" { (s.name) "  " (s.prefixes.join(", ")) }
                        text x=(LEFT + 25) y=(s.y + 36) class=(if s.nsg.is_some() { "nsg" } else { "nsg none" }) {
                            "NSG: " (s.nsg.as_deref().unwrap_or("none"))
                        }
                        text x=(LEFT + 25) y=(s.y + 54) class="route-table" {
                            "route table: " (s.route_table.as_deref().unwrap_or("none"))
                        }
                        @for (k, nic) in s.nics.iter().enumerate() {
                            text x=(LEFT + 35) y=(s.y + 72 + LINE * k as i32) class="nic" { (nic) }
                        }
                        @for (k, fw) in s.firewalls.iter().enumerate() {
                            rect x=(LEFT + VNET_WIDTH - 200) y=(s.y + 8 + 26 * k as i32) width="160" height="22" rx="4" class="firewall" {}
                            text x=(LEFT + VNET_WIDTH - 192) y=(s.y + 24 + 26 * k as i32) class="firewall-name" { "firewall " (fw) }
                        }
                    }
                }
                @for name in &self.outside {
                    @let y = self.outside_y(name);
                    g class="outside" data-outside=(name) {
                        rect x=(TARGETS_X) y=(y) width=(TARGET_WIDTH) height="36" rx="18" class="outside-box" {}
                        text x=(TARGETS_X + 14) y=(y + 23) { (name) }
                    }
                }
                @for (a, b) in &self.peerings {
                    @let (ya, yb) = (self.vnet_top(*a) + 10, self.vnet_top(*b) + 10);
                    path class="peering" d=(format!("M {x} {ya} C {c} {ya}, {c} {yb}, {x} {yb}", x = LEFT, c = LEFT - 15))
                        marker-start="url(#arrow)" marker-end="url(#arrow)" {}
                }
                @for a in &self.arrows {
                    (self.arrow(a))
                }
            }
        }
    }

    fn arrow(&self, a: &Arrow) -> Markup {
        let from = &self.subnets[a.from];
        let (x1, y1) = (LEFT + VNET_WIDTH - 15, from.y + from.height / 2);
        let (d, (lx, ly, anchor)) = match &a.to {
            Target::Outside(name) => {
                let y2 = self.outside_y(name) + 18;
                let mid = (x1 + TARGETS_X) / 2;
                // The label ends just before the target, above the arrow's head.
                (
                    format!("M {x1} {y1} C {mid} {y1}, {mid} {y2}, {TARGETS_X} {y2}"),
                    (TARGETS_X - 6, y2 - 6, "end"),
                )
            }
            Target::Subnet(j) => {
                let to = &self.subnets[*j];
                let y2 = to.y + to.height / 2;
                // Loops out to the right and back, wider for longer jumps so arrows stay apart.
                let bulge = x1 + 60 + (y2 - y1).abs() / 8;
                // The label sits inside the target row, under the arrow's head, clear of the
                // arrows leaving for targets outside.
                (
                    format!("M {x1} {y1} C {bulge} {y1}, {bulge} {y2}, {x1} {y2}"),
                    (x1 - 8, y2 + 16, "end"),
                )
            }
        };
        let first = a.routes.first().cloned().unwrap_or_default();
        let label = match a.routes.len() {
            1 => first,
            n => format!("{first} +{} more", n - 1),
        };
        let label = match &a.to {
            Target::Subnet(_) => format!("from {}: {label}", from.name),
            Target::Outside(_) => label,
        };
        let to = match &a.to {
            Target::Outside(n) => n.clone(),
            Target::Subnet(j) => format!("{}/{}", self.subnets[*j].vnet, self.subnets[*j].name),
        };
        html! {
            g class=(format!("next-hop {}", a.kind)) data-from=(format!("{}/{}", from.vnet, from.name)) data-to=(to) {
                title { (a.kind) " → " (to) ": " (a.routes.join("; ")) }
                path d=(d) marker-end="url(#arrow)" {}
                text x=(lx) y=(ly) text-anchor=(anchor) class="route-label" { (label) }
            }
        }
    }
}

/// Where a user route's next hop leads: the subnet holding the appliance (a firewall's or a
/// NIC's address), or a node outside.
fn user_target(
    snapshot: &Snapshot,
    subnets: &[SubnetBox],
    hop: NextHopType,
    address: Option<std::net::IpAddr>,
) -> Target {
    match (hop, address) {
        (NextHopType::VirtualAppliance, Some(ip)) => {
            let at = snapshot.locate(ip).subnet.map(|id| snapshot.subnet(id));
            let row = at.and_then(|e| {
                subnets.iter().position(|s| {
                    s.vnet.eq_ignore_ascii_case(&e.vnet) && s.name.eq_ignore_ascii_case(&e.name)
                })
            });
            match row {
                Some(i) => Target::Subnet(i),
                None => Target::Outside(format!("appliance {ip} (not in the input)")),
            }
        }
        (NextHopType::None, _) => Target::Outside("None (dropped)".into()),
        (hop, _) => Target::Outside(hop.as_str().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Snapshot {
        let source = palisade_load::Source::files(vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/ase-egress-lockdown/network.json"
        ))]);
        palisade_load::load(&source)
            .snapshot
            .expect("the example compiles")
    }

    /// On every scenario network, every subnet is drawn once and every arrow leaves a drawn
    /// subnet for a drawn subnet or a drawn outside node.
    #[test]
    fn every_scenario_network_is_drawn_whole() {
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/scenarios"
        ));
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let network = entry.unwrap().path().join("network.json");
            if !network.exists() {
                continue;
            }
            let loaded = palisade_load::load(&palisade_load::Source::files(vec![network.clone()]));
            let snapshot = loaded
                .snapshot
                .unwrap_or_else(|| panic!("{}", network.display()));
            let map = Map::of(&snapshot);
            let subnets: usize = snapshot
                .network
                .virtual_networks
                .iter()
                .map(|v| v.subnets.len())
                .sum();
            assert_eq!(map.subnets.len(), subnets, "{}", network.display());
            let svg = map.svg().into_string();
            assert_eq!(svg.matches("data-subnet=").count(), subnets);
            for a in &map.arrows {
                assert!(a.from < map.subnets.len());
                match &a.to {
                    Target::Subnet(j) => assert!(*j < map.subnets.len()),
                    Target::Outside(n) => assert!(map.outside.contains(n)),
                }
            }
            seen += 1;
        }
        assert!(seen >= 4, "scenarios found: {seen}");
    }

    /// Every subnet of every virtual network is drawn, with its NSG and route table (DIAG-5:
    /// the arrows are the subnet's active user routes).
    #[test]
    fn every_subnet_and_the_firewall_route_are_drawn() {
        let snapshot = example();
        let map = Map::of(&snapshot);
        let expected: Vec<String> = snapshot
            .network
            .virtual_networks
            .iter()
            .flat_map(|v| {
                v.subnets
                    .iter()
                    .map(move |s| format!("{}/{}", v.name, s.name))
            })
            .collect();
        let drawn: Vec<String> = map
            .subnets
            .iter()
            .map(|s| format!("{}/{}", s.vnet, s.name))
            .collect();
        assert_eq!(drawn, expected);
        let ase = map
            .subnets
            .iter()
            .position(|s| s.name == "ase-subnet")
            .unwrap();
        assert_eq!(map.subnets[ase].nsg.as_deref(), Some("ase-nsg"));
        let fw = map
            .subnets
            .iter()
            .position(|s| s.firewalls == ["ase-firewall"])
            .unwrap();
        let to_fw = map
            .arrows
            .iter()
            .find(|a| a.from == ase && a.to == Target::Subnet(fw))
            .expect("the default route to the firewall");
        assert!(
            to_fw.routes.iter().any(|r| r == "to-firewall 0.0.0.0/0"),
            "{:?}",
            to_fw.routes
        );
        assert!(map.outside.iter().any(|o| o == "None (dropped)"));
        let svg = map.svg().into_string();
        for s in &expected {
            assert!(svg.contains(&format!("data-subnet=\"{s}\"")), "{s}");
        }
    }
}
