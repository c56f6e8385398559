//! Effective routes of a subnet (RT-3 … RT-7, RT-10) and their longest-prefix-match table.
//!
//! Selection (RT-5) is done at compile time: for every prefix, candidates are ranked by source
//! (user > gateway > default) and, among user routes, by how the prefix was written (CIDR >
//! regional tag > global tag > AzureCloud.region > AzureCloud). The LPM table keeps the best
//! candidate per prefix, so a lookup is one LPM probe.

use crate::matchers::Lpm;
use crate::prefixes::{contains_addr, net};
use ipnet::IpNet;
use palisade_model::catalog::Catalogs;
use palisade_model::{NextHopType, RoutePrefix, RouteTable, Subnet, VirtualNetwork};
use serde::Serialize;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RouteSource {
    Default,
    User,
    VirtualNetworkGateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RouteState {
    Active,
    Invalid,
}

/// One effective route (DIAG-5).
#[derive(Debug, Clone, Serialize)]
pub struct EffectiveRoute {
    /// User route name; `None` for system routes.
    pub name: Option<String>,
    /// Route table holding a user route.
    pub table: Option<String>,
    pub source: RouteSource,
    pub state: RouteState,
    /// `Overridden`, `NextHopUnreachable`, `Unresolvable`.
    pub invalid_reason: Option<&'static str>,
    pub address_prefix: Vec<IpNet>,
    pub next_hop_type: NextHopType,
    pub next_hop_ip_address: Option<IpAddr>,
    /// The service tag a route was written with (`destinationServiceTags`).
    pub destination_service_tags: Vec<String>,
    /// For a service-endpoint route, the service (`Microsoft.Storage`).
    pub service: Option<String>,
    pub disable_bgp_route_propagation: bool,
    /// The next hop cannot carry traffic (unreachable appliance, unresolved address): drop.
    #[serde(skip)]
    pub drops: bool,
}

impl EffectiveRoute {
    /// How diagnostics name the route: its name, the service of an endpoint route, or the
    /// system route's prefix (scenarios README, "Which control `expect` names").
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        if let Some(s) = &self.service {
            return s.clone();
        }
        self.address_prefix
            .first()
            .map(|p| p.to_string())
            .unwrap_or_default()
    }
    /// Route table name, or `System Route`.
    pub fn resource(&self) -> String {
        match (&self.source, &self.table) {
            (RouteSource::User, Some(t)) => t.clone(),
            _ => "System Route".to_string(),
        }
    }
}

/// Service → the service tag whose prefixes its endpoint routes cover (RT-7, RT-3.2).
pub fn service_endpoint_tag(service: &str) -> Option<&'static str> {
    Some(match service.to_ascii_lowercase().as_str() {
        "microsoft.storage" | "microsoft.storage.global" => "Storage",
        "microsoft.sql" => "Sql",
        "microsoft.eventhub" => "EventHub",
        "microsoft.servicebus" => "ServiceBus",
        "microsoft.keyvault" => "AzureKeyVault",
        "microsoft.azurecosmosdb" => "AzureCosmosDB",
        "microsoft.web" => "AppService",
        "microsoft.containerregistry" => "AzureContainerRegistry",
        "microsoft.cognitiveservices" => "CognitiveServicesManagement",
        "microsoft.azureactivedirectory" => "AzureActiveDirectory",
        _ => return None,
    })
}

/// The effective routes of one subnet and the table that selects among them.
#[derive(Debug)]
pub struct SubnetRoutes {
    pub routes: Vec<EffectiveRoute>,
    lpm: Lpm<u32>,
}

/// Rank for equal prefixes (RT-5 steps 3 and 4); lower wins.
fn rank(route: &EffectiveRoute) -> u8 {
    match route.source {
        RouteSource::User => match route.destination_service_tags.first() {
            None => 0,
            Some(t) => {
                let lower = t.to_ascii_lowercase();
                match (lower.starts_with("azurecloud"), t.contains('.')) {
                    (false, true) => 1,
                    (false, false) => 2,
                    (true, true) => 3,
                    (true, false) => 4,
                }
            }
        },
        RouteSource::VirtualNetworkGateway => 5,
        RouteSource::Default => 6,
    }
}

impl SubnetRoutes {
    /// Routes for a subnet of `vnet` using `table` (either may be absent for partial inputs).
    pub fn compile(
        vnet: Option<&VirtualNetwork>,
        subnet: Option<&Subnet>,
        table: Option<&RouteTable>,
        peered: &[IpNet],
        catalogs: &Catalogs,
    ) -> SubnetRoutes {
        let mut routes = vec![];
        let disable_bgp = table.is_some_and(|t| t.disable_bgp_route_propagation);
        let system = |prefix: IpNet, hop: NextHopType| EffectiveRoute {
            name: None,
            table: None,
            source: RouteSource::Default,
            state: RouteState::Active,
            invalid_reason: None,
            address_prefix: vec![prefix],
            next_hop_type: hop,
            next_hop_ip_address: None,
            destination_service_tags: vec![],
            service: None,
            disable_bgp_route_propagation: disable_bgp,
            drops: false,
        };
        let space: Vec<IpNet> = vnet.map(|v| v.address_space.clone()).unwrap_or_default();
        if vnet.is_some() {
            // RT-3.1 / RT-10: one VnetLocal route per address range.
            for p in &space {
                routes.push(system(*p, NextHopType::VnetLocal));
            }
            routes.push(system(net("0.0.0.0/0"), NextHopType::Internet));
            routes.push(system(net("::/0"), NextHopType::Internet));
            for reserved in [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "fc00::/7",
            ] {
                let r = net(reserved);
                // Equal: the VnetLocal route already covers it. Strictly containing: removed.
                if space.iter().any(|s| s.contains(&r)) {
                    continue;
                }
                routes.push(system(r, NextHopType::None));
            }
            for p in peered {
                routes.push(system(*p, NextHopType::VNetPeering));
            }
        }
        // RT-3.2 / RT-7: service endpoint routes for this subnet only.
        if let Some(s) = subnet {
            for ep in &s.service_endpoints {
                let Some(tag) = service_endpoint_tag(&ep.service) else {
                    continue;
                };
                let regional: Vec<&str> = ep
                    .locations
                    .iter()
                    .map(String::as_str)
                    .filter(|l| *l != "*")
                    .collect();
                let mut prefixes = vec![];
                if regional.is_empty() {
                    if let Some(t) = catalogs.service_tags.get(tag) {
                        prefixes.extend(t.address_prefixes.iter().copied());
                    }
                } else {
                    for l in regional {
                        let name = format!("{tag}.{}", l.replace(' ', ""));
                        if let Some(t) = catalogs.service_tags.get(&name) {
                            prefixes.extend(t.address_prefixes.iter().copied());
                        }
                    }
                }
                let mut r = system(net("0.0.0.0/0"), NextHopType::VirtualNetworkServiceEndpoint);
                r.address_prefix = prefixes;
                r.destination_service_tags = vec![tag.to_string()];
                r.service = Some(ep.service.clone());
                routes.push(r);
            }
        }
        // RT-4: user routes.
        if let Some(t) = table {
            let mut reachable: Vec<IpNet> = space.clone();
            reachable.extend(peered.iter().copied());
            for r in &t.routes {
                let mut e = EffectiveRoute {
                    name: Some(r.name.clone()),
                    table: Some(t.name.clone()),
                    source: RouteSource::User,
                    state: RouteState::Active,
                    invalid_reason: None,
                    address_prefix: vec![],
                    next_hop_type: r.next_hop_type,
                    next_hop_ip_address: r.next_hop_ip_address,
                    destination_service_tags: vec![],
                    service: None,
                    disable_bgp_route_propagation: disable_bgp,
                    drops: false,
                };
                match &r.address_prefix {
                    RoutePrefix::Cidr(p) => e.address_prefix.push(*p),
                    RoutePrefix::ServiceTag(tag) => {
                        e.destination_service_tags.push(tag.clone());
                        if let Some(st) = catalogs.service_tags.get(tag) {
                            e.address_prefix.extend(st.address_prefixes.iter().copied());
                        }
                    }
                    RoutePrefix::Unresolved(_) => {
                        e.state = RouteState::Invalid;
                        e.invalid_reason = Some("Unresolvable");
                    }
                }
                if r.next_hop_type == NextHopType::VirtualAppliance {
                    match r.next_hop_ip_address {
                        Some(ip) if vnet.is_none() || contains_addr(&reachable, ip) => {}
                        Some(_) => {
                            e.state = RouteState::Invalid;
                            e.invalid_reason = Some("NextHopUnreachable");
                            e.drops = true;
                        }
                        None => {
                            e.state = RouteState::Invalid;
                            e.invalid_reason = Some("Unresolvable");
                            e.drops = true;
                        }
                    }
                }
                routes.push(e);
            }
        }
        // RT-5: rank candidates per prefix; the LPM keeps the first entry of equal prefixes.
        let mut entries: Vec<(IpNet, u8, u32)> = vec![];
        for (i, r) in routes.iter().enumerate() {
            if r.invalid_reason == Some("Unresolvable") && !r.drops {
                continue;
            }
            for p in &r.address_prefix {
                entries.push((*p, rank(r), i as u32));
            }
        }
        entries.sort_by_key(|e| (e.0, e.1, e.2));
        // A route that loses its own prefix to a better-ranked one is Invalid (RT-5).
        for w in 0..entries.len() {
            let (p, _, i) = entries[w];
            if w > 0 && entries[w - 1].0 == p && entries[w - 1].2 != i {
                let loses_all = routes[i as usize].address_prefix.len() == 1;
                if loses_all && routes[i as usize].state == RouteState::Active {
                    routes[i as usize].state = RouteState::Invalid;
                    routes[i as usize].invalid_reason = Some("Overridden");
                }
            }
        }
        let lpm = Lpm::build(entries.into_iter().map(|(p, _, i)| (p, i)).collect());
        SubnetRoutes { routes, lpm }
    }

    /// RT-5: the route chosen for `dst`, with the prefix that matched.
    pub fn lookup(&self, dst: IpAddr) -> Option<(IpNet, &EffectiveRoute)> {
        let (p, i) = self.lpm.lookup(dst)?;
        Some((p, &self.routes[*i as usize]))
    }
}
