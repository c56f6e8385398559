//! Asymmetric-route detection (DIAG-9, RT-9): for each subnet and each inbound entry that reaches
//! it without the firewall — sources its NSG admits from outside the virtual network, and
//! declared `via: Route` dependencies — the reply is routed on its own from the subnet back to the
//! source. A reply whose next hop is an appliance or gateway never saw the request: the
//! connection breaks. Each finding names the route that causes it and the fix.
//!
//! Exact per address block: a source prefix is split by every route prefix inside it, so a /32
//! `→ Internet` route inside `0.0.0.0/0` is credited to just that /32.

use ipnet::IpNet;
use palisade_model::{Access, NextHopType};
use palisade_policy::addresses::{host_net, AZURE_WIRE_SERVER};
use palisade_policy::prefixes::{aggregate, difference};
use palisade_policy::routes::EffectiveRoute;
use palisade_policy::trace::assumed;
use palisade_policy::{Snapshot, SubnetId};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `<vnet>/<subnet>`.
    pub subnet: String,
    /// What admits the traffic: `<nsg>/<rule>` or a dependency entry.
    pub entry: String,
    /// The source blocks whose replies go astray.
    pub source_prefixes: Vec<String>,
    pub reply_next_hop: String,
    pub reply_next_hop_address: Option<String>,
    /// Route table (or `System Route`) and route that carry the reply.
    pub route_table: String,
    pub route: String,
    pub suggestion: String,
    /// Unknown values (FMT-4) of the entry's rule and the reply's route table (issue 17).
    pub assumed: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Subnets checked, and inbound entries examined.
    pub subnets: usize,
    pub entries: usize,
}

/// An inbound entry: a name and the sources it admits.
struct InboundEntry {
    name: String,
    sources: Vec<IpNet>,
    /// The entry admits every source (`*`, `Internet`): unknown clients.
    open: bool,
}

/// Check every subnet. `declared` adds known inbound sources (name, prefixes), e.g. a
/// dependency list's `via: Route` entries.
pub fn check(snap: &Snapshot, declared: &[(String, Vec<IpNet>)]) -> Report {
    let mut report = Report {
        subnets: snap.subnets().len(),
        ..Default::default()
    };
    // Addresses that are not "outside": the virtual networks and their peers, the platform.
    let mut inside: Vec<IpNet> = snap
        .network
        .virtual_networks
        .iter()
        .flat_map(|v| v.address_space.iter().copied())
        .collect();
    inside.extend(snap.network.virtual_networks.iter().flat_map(|v| {
        v.virtual_network_peerings
            .iter()
            .flat_map(|p| p.remote_address_space.iter().copied())
    }));
    inside.push(host_net(AZURE_WIRE_SERVER));
    // Only public sources arrive on a public address: private and special ranges cannot.
    let public = palisade_policy::addresses::TagContext::new(&inside).internet;
    for (si, subnet) in snap.subnets() {
        let mut entries: Vec<InboundEntry> = vec![];
        if let Some(n) = subnet.nsg {
            let nsg = snap.nsg(n);
            for r in nsg
                .inbound
                .rules
                .iter()
                .filter(|r| r.access == Access::Allow && !r.is_default && !r.audit)
            {
                let sources = intersect(&difference(&r.source, &inside), &public);
                if !sources.is_empty() {
                    let open = r.source.iter().any(|p| p.prefix_len() == 0)
                        || difference(&public, &r.source).is_empty();
                    entries.push(InboundEntry {
                        name: format!("{}/{}", nsg.name, r.name),
                        sources,
                        open,
                    });
                }
            }
        }
        for (name, prefixes) in declared {
            entries.push(InboundEntry {
                name: name.clone(),
                sources: aggregate(prefixes),
                open: false,
            });
        }
        report.entries += entries.len();
        let route_prefixes: Vec<IpNet> = subnet
            .routes
            .routes
            .iter()
            .flat_map(|r| r.address_prefix.iter().copied())
            .collect();
        for e in entries {
            // Group the astray blocks by the route that carries their replies.
            let mut groups: Vec<(String, Vec<IpNet>, EffectiveRoute)> = vec![];
            for p in &e.sources {
                for (block, route) in split_by_routes(snap, si, *p, &route_prefixes) {
                    if !matches!(
                        route.next_hop_type,
                        NextHopType::VirtualAppliance
                            | NextHopType::VirtualNetworkGateway
                            | NextHopType::None
                    ) {
                        continue;
                    }
                    let key = format!("{}/{}", route.resource(), route.label());
                    match groups.iter_mut().find(|g| g.0 == key) {
                        Some(g) => g.1.extend(block),
                        None => groups.push((key, block, route)),
                    }
                }
            }
            for (_, blocks, route) in groups {
                let blocks = aggregate(&blocks);
                let shown: Vec<String> = blocks.iter().map(|b| b.to_string()).collect();
                let example = shown.first().cloned().unwrap_or_default();
                report.findings.push(Finding {
                    subnet: format!("{}/{}", subnet.vnet, subnet.name),
                    entry: e.name.clone(),
                    source_prefixes: shown,
                    reply_next_hop: route.next_hop_type.as_str().to_string(),
                    reply_next_hop_address: route.next_hop_ip_address.map(|a| a.to_string()),
                    assumed: assumed(
                        &snap.network,
                        [e.name.as_str(), route.resource().as_str()],
                    ),
                    route_table: route.resource(),
                    route: route.label(),
                    suggestion: if e.open {
                        "replies to arbitrary Internet clients cannot be routed back directly: put an application gateway in front and route its subnet to the Internet, or bring the traffic in through the firewall (DNAT, FW-4)".to_string()
                    } else {
                        format!("add routes `<prefix> → Internet` on table of {} for these sources (e.g. `{example} → Internet`; a service-tag route covers a tag's prefixes), RT-9", subnet.name)
                    },
                });
            }
        }
    }
    report
}

/// `a ∩ b` for prefix sets.
fn intersect(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let outside_b = difference(a, b);
    difference(a, &outside_b)
}

/// Split `p` into blocks that share one reply route: the part of `p` outside every more
/// specific route prefix, and each more specific prefix (minus deeper ones).
fn split_by_routes(
    snap: &Snapshot,
    subnet: SubnetId,
    p: IpNet,
    route_prefixes: &[IpNet],
) -> Vec<(Vec<IpNet>, EffectiveRoute)> {
    let routes = &snap.subnet(subnet).routes;
    let inner: Vec<IpNet> = route_prefixes
        .iter()
        .copied()
        .filter(|q| p.contains(q) && *q != p)
        .collect();
    let mut out = vec![];
    let mut push = |blocks: Vec<IpNet>| {
        if let Some(first) = blocks.first() {
            if let Some((_, r)) = routes.lookup(first.network()) {
                out.push((blocks, r.clone()));
            }
        }
    };
    push(difference(&[p], &inner));
    for q in &inner {
        let deeper: Vec<IpNet> = inner
            .iter()
            .copied()
            .filter(|d| q.contains(d) && d != q)
            .collect();
        push(difference(&[*q], &deeper));
    }
    out
}
