//! Answers as JSON, in Network Watcher's shapes where Azure has the operation (DIAG-2..5) and
//! otherwise in the shapes of the CLI's `--output json` (`docs/cli-json.md`), which the tests
//! hold them to. Pure functions of the snapshot: no I/O. The CLI prints these same values for
//! `--output json`, and builds its text from the lookups here, so the two cannot drift apart.

use palisade_analyze::reach::{Reach, ReachReport};
use palisade_model::catalog::{DependencyCatalog, Via};
use palisade_model::{Access, Direction, PortRange, Protocol};
use palisade_policy::nsg::{CompiledNsg, CompiledRule};
use palisade_policy::routes::{EffectiveRoute, RouteSource, SubnetRoutes};
use palisade_policy::{Flow, NsgId, Snapshot, SubnetId, Trace};
use serde_json::{json, Value};
use std::net::IpAddr;

/// A question the network cannot answer as asked (unknown NIC, address in no subnet).
#[derive(Debug)]
pub struct NotAnswerable(pub String);

impl std::fmt::Display for NotAnswerable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn trace(flow: &Flow, trace: &Trace) -> Value {
    json!({
        "flow": flow,
        "verdict": trace.verdict,
        "decided_by": trace.decided_by,
        "hops": trace.hops,
        "next_hop": trace.next_hop,
        "reply": trace.reply,
        "stateful": trace.stateful,
        "translated": trace.translated.map(|(ip, port)| json!({"destination": ip, "destination_port": port})),
        "notes": trace.notes,
        "assumed": trace.assumed,
        "snapshot": trace.snapshot,
    })
}

/// The route a packet from `from` to `to` takes (RT-5), as DIAG-3 reports it.
pub struct RouteTo<'a> {
    pub prefix: ipnet::IpNet,
    pub route: &'a EffectiveRoute,
    /// The next hop's address: only a virtual appliance has one.
    pub address: Option<IpAddr>,
    /// Where the route comes from, in the effective-routes words (`User`, `Default`, ...).
    pub source: &'static str,
}

/// The route for `to` in the routes of `from`'s subnet; `None` when no route matches.
pub fn route_to(
    snap: &Snapshot,
    from: IpAddr,
    to: IpAddr,
) -> Result<Option<RouteTo<'_>>, NotAnswerable> {
    let loc = snap.locate(from);
    let routes: &SubnetRoutes = match loc.subnet {
        Some(s) => &snap.subnet(s).routes,
        None => match snap.unattached_route_tables().next() {
            Some((_, r)) if snap.unattached_route_tables().len() == 1 => r,
            _ => {
                return Err(NotAnswerable(format!(
                    "{from} is in no subnet of the network"
                )))
            }
        },
    };
    Ok(routes.lookup(to).map(|(prefix, route)| RouteTo {
        prefix,
        route,
        address: (route.next_hop_type == palisade_model::NextHopType::VirtualAppliance)
            .then_some(route.next_hop_ip_address)
            .flatten(),
        source: match route.source {
            RouteSource::User => "User",
            RouteSource::VirtualNetworkGateway => "VirtualNetworkGateway",
            RouteSource::Default if route.service.is_some() => "ServiceEndpoint",
            RouteSource::Default => "Default",
        },
    }))
}

/// DIAG-3, with Palisade's additions (`next_hop`, `route`).
pub fn next_hop(snap: &Snapshot, from: IpAddr, to: IpAddr) -> Result<Value, NotAnswerable> {
    let Some(RouteTo {
        prefix,
        route,
        address,
        source,
    }) = route_to(snap, from, to)?
    else {
        return Ok(
            json!({"next_hop": {"type": "None", "address": null}, "route": null, "nextHopType": "None", "routeTableId": "System Route"}),
        );
    };
    Ok(json!({
        "next_hop": {"type": route.next_hop_type.as_str(), "address": address},
        // `resource` and `label` are the words of the CLI's text, which is made from this value.
        "route": {"table": route.table, "name": route.name.clone().or(route.service.clone()), "prefix": prefix.to_string(), "source": source, "state": route.state,
                  "resource": route.resource(), "label": route.label()},
        "nextHopType": route.next_hop_type.as_str(),
        "nextHopIpAddress": address,
        "routeTableId": route.table.clone().unwrap_or_else(|| "System Route".into()),
    }))
}

/// A rule's protocol in the effective-rules words (`All` for any).
pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Any => "All",
        other => other.as_str(),
    }
}

/// Port ranges as effective rules show them (`first-last`).
pub fn ranges(p: &[PortRange]) -> Vec<String> {
    p.iter()
        .map(|r| format!("{}-{}", r.first, r.last))
        .collect()
}

fn access(a: Access) -> &'static str {
    match a {
        Access::Allow => "Allow",
        Access::Deny => "Deny",
    }
}

/// DIAG-4 rendering of one rule.
fn effective_rule(r: &CompiledRule, direction: Direction) -> Value {
    json!({
        "name": r.qualified_name(),
        "protocol": protocol_name(r.protocol),
        "sourcePortRanges": ranges(&r.source_ports),
        "destinationPortRanges": ranges(&r.destination_ports),
        "expandedSourceAddressPrefix": r.source.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "expandedDestinationAddressPrefix": r.destination.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "access": access(r.access),
        "priority": r.priority,
        "direction": format!("{direction:?}"),
        "unresolvable": r.unresolvable,
    })
}

/// The NSGs in force for a NIC (its subnet's, then its own) or a subnet: (association kind,
/// associated name, NSG), in NSG-6 inbound order.
pub fn applied_nsgs(
    snap: &Snapshot,
    nic: Option<&str>,
    subnet: Option<&str>,
) -> Result<Vec<(&'static str, String, NsgId)>, NotAnswerable> {
    let mut groups = vec![];
    match (nic, subnet) {
        (Some(n), _) => {
            let i = snap
                .nic_by_name(n)
                .ok_or_else(|| NotAnswerable(format!("no network interface named '{n}'")))?;
            let e = snap.nic(i);
            if let Some(s) = e.subnet.map(|s| snap.subnet(s)) {
                if let Some(g) = s.nsg {
                    groups.push(("subnet", format!("{}/{}", s.vnet, s.name), g));
                }
            }
            if let Some(g) = e.nsg {
                groups.push(("networkInterface", e.name.clone(), g));
            }
        }
        (None, Some(s)) => {
            let i = snap
                .subnet_by_name(s)
                .ok_or_else(|| NotAnswerable(format!("no subnet named '{s}'")))?;
            let e = snap.subnet(i);
            if let Some(g) = e.nsg {
                groups.push(("subnet", format!("{}/{}", e.vnet, e.name), g));
            }
        }
        (None, None) => return Err(NotAnswerable("give a NIC or a subnet".into())),
    }
    Ok(groups)
}

/// DIAG-4: `{"value": [{networkSecurityGroup, association, effectiveSecurityRules}]}`.
pub fn effective_rules(
    snap: &Snapshot,
    nic: Option<&str>,
    subnet: Option<&str>,
) -> Result<Value, NotAnswerable> {
    let value: Vec<Value> = applied_nsgs(snap, nic, subnet)?
        .into_iter()
        .map(|(kind, name, g)| {
            let nsg: &CompiledNsg = snap.nsg(g);
            let rules: Vec<Value> = [Direction::Inbound, Direction::Outbound]
                .into_iter()
                .flat_map(|d| {
                    nsg.direction(d)
                        .rules
                        .iter()
                        .map(move |r| effective_rule(r, d))
                })
                .collect();
            json!({
                "networkSecurityGroup": {"id": nsg.name},
                "association": {kind: {"id": name}},
                "effectiveSecurityRules": rules,
            })
        })
        .collect();
    Ok(json!({ "value": value }))
}

/// The subnet named, or the subnet of the NIC named (a subnet wins when both are given).
pub fn subnet_of(
    snap: &Snapshot,
    nic: Option<&str>,
    subnet: Option<&str>,
) -> Result<SubnetId, NotAnswerable> {
    match (subnet, nic) {
        (Some(s), _) => snap
            .subnet_by_name(s)
            .ok_or_else(|| NotAnswerable(format!("no subnet named '{s}'"))),
        (None, Some(n)) => {
            let i = snap
                .nic_by_name(n)
                .ok_or_else(|| NotAnswerable(format!("no network interface named '{n}'")))?;
            snap.nic(i).subnet.ok_or_else(|| {
                NotAnswerable(format!(
                    "network interface '{n}' is in no subnet of the network"
                ))
            })
        }
        (None, None) => Err(NotAnswerable("give a NIC or a subnet".into())),
    }
}

/// DIAG-5: the routes in force for a subnet (a NIC's: its subnet's).
pub fn effective_routes(
    snap: &Snapshot,
    nic: Option<&str>,
    subnet: Option<&str>,
) -> Result<Value, NotAnswerable> {
    let s = subnet_of(snap, nic, subnet)?;
    let value: Vec<Value> = snap
        .subnet(s)
        .routes
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "disableBgpRoutePropagation": r.disable_bgp_route_propagation,
                "source": r.source,
                "state": r.state,
                "addressPrefix": r.address_prefix.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "nextHopIpAddress": r.next_hop_ip_address.map(|a| vec![a.to_string()]).unwrap_or_default(),
                "nextHopType": r.next_hop_type.as_str(),
                "destinationServiceTags": r.destination_service_tags,
                "hasBgpOverride": false,
                "invalidReason": r.invalid_reason,
                "routeTable": r.table,
                "service": r.service,
            })
        })
        .collect();
    Ok(json!({ "value": value }))
}

/// DIAG-2: the NSGs of the workload at `local` (a NIC, or an address in a subnet without a
/// NIC resource), evaluated in NSG-6 order for `flow`. `access` is the first Deny, else the
/// last layer's Allow; `ruleName` is absent when no NSG applies (all traffic allowed).
pub fn ip_flow_verify(
    snap: &Snapshot,
    flow: &Flow,
    direction: Direction,
    local: IpAddr,
    nic: Option<&str>,
) -> Result<Value, NotAnswerable> {
    let layers = verify_layers(snap, direction, local, nic)?;
    Ok(verify(snap, flow, direction, &layers))
}

/// DIAG-2 with `remotePort: "*"`: every remote port. `Allow` only when every remote port is
/// allowed; otherwise the answer for the lowest denied port, which `remotePort` names. Ports
/// are tried once per range the rules' remote-port boundaries cut, so the answer is exact.
pub fn ip_flow_verify_any_remote_port(
    snap: &Snapshot,
    flow: &Flow,
    direction: Direction,
    local: IpAddr,
    nic: Option<&str>,
) -> Result<Value, NotAnswerable> {
    let layers = verify_layers(snap, direction, local, nic)?;
    let mut starts = std::collections::BTreeSet::from([0u32]);
    for (_, g) in &layers {
        for r in &snap.nsg(*g).direction(direction).rules {
            let remote = match direction {
                Direction::Inbound => &r.source_ports,
                Direction::Outbound => &r.destination_ports,
            };
            for p in remote {
                starts.insert(u32::from(p.first));
                starts.insert(u32::from(p.last) + 1);
            }
        }
    }
    let with_port = |p: u16| {
        let mut f = flow.clone();
        match direction {
            Direction::Inbound => f.source_port = p,
            Direction::Outbound => f.destination_port = p,
        }
        f
    };
    let mut first = None;
    for p in starts.into_iter().filter_map(|p| u16::try_from(p).ok()) {
        let mut v = verify(snap, &with_port(p), direction, &layers);
        if v["access"] == "Deny" {
            v["remotePort"] = json!(p.to_string());
            return Ok(v);
        }
        first.get_or_insert(v);
    }
    let mut v = first.unwrap_or_else(|| verify(snap, &with_port(0), direction, &layers));
    v["remotePort"] = json!("*");
    Ok(v)
}

/// The NSG layers of the workload at `local`, in NSG-6 order for `direction`.
fn verify_layers(
    snap: &Snapshot,
    direction: Direction,
    local: IpAddr,
    nic: Option<&str>,
) -> Result<Vec<(&'static str, NsgId)>, NotAnswerable> {
    let loc = snap.locate(local);
    let nic = match nic {
        Some(n) => {
            let i = snap
                .nic_by_name(n)
                .ok_or_else(|| NotAnswerable(format!("no network interface named '{n}'")))?;
            if !snap.nic(i).addresses.contains(&local) {
                return Err(NotAnswerable(format!(
                    "localIPAddress {local} is not an address of network interface '{n}'"
                )));
            }
            Some(i)
        }
        None => loc.nic,
    };
    let subnet = nic.and_then(|n| snap.nic(n).subnet).or(loc.subnet);
    if nic.is_none() && subnet.is_none() {
        return Err(NotAnswerable(format!(
            "{local} is the address of no network interface and in no subnet of the network"
        )));
    }
    let subnet_layer = subnet
        .and_then(|s| snap.subnet(s).nsg)
        .map(|g| ("SubnetNsg", g));
    let nic_layer = nic.and_then(|n| snap.nic(n).nsg).map(|g| ("NicNsg", g));
    let order = match direction {
        Direction::Inbound => [subnet_layer, nic_layer],
        Direction::Outbound => [nic_layer, subnet_layer],
    };
    Ok(order.into_iter().flatten().collect())
}

fn verify(
    snap: &Snapshot,
    flow: &Flow,
    direction: Direction,
    order: &[(&'static str, NsgId)],
) -> Value {
    let key = flow.key();
    let mut layers = vec![];
    let mut verdict: Option<(&str, String)> = None;
    for &(layer, g) in order {
        let nsg = snap.nsg(g);
        let rules = nsg.direction(direction);
        // The default rules end every direction, so some rule always matches.
        let Some(outcome) = rules.evaluate(&key) else {
            continue;
        };
        let rule = &rules.rules[outcome.rule];
        layers.push(json!({
            "layer": layer,
            "networkSecurityGroup": nsg.name,
            "ruleName": rule.qualified_name(),
            "priority": rule.priority,
            "access": access(rule.access),
        }));
        verdict = Some((access(rule.access), rule.qualified_name()));
        if rule.access == Access::Deny {
            break;
        }
    }
    match verdict {
        Some((a, rule)) => json!({"access": a, "ruleName": rule, "layers": layers}),
        None => json!({"access": "Allow", "layers": layers}),
    }
}

/// A rule as written (DIAG-6 `securityRules[]`, `defaultSecurityRules[]`): Azure's resource
/// shape, tags and ranges as the rule names them.
fn written_rule(r: &palisade_model::SecurityRule) -> Value {
    let text = |v: &[palisade_model::address::AddressItem]| {
        v.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let ports = |v: &[PortRange]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let prefix = if r.is_default {
        "defaultSecurityRules"
    } else {
        "securityRules"
    };
    json!({
        "name": r.name,
        "id": format!("{prefix}/{}", r.name),
        "properties": {
            "description": r.description,
            "protocol": if r.protocol == Protocol::Any { "*" } else { r.protocol.as_str() },
            "sourcePortRanges": ports(&r.source.port_ranges),
            "destinationPortRanges": ports(&r.destination.port_ranges),
            "sourceAddressPrefixes": text(&r.source.address_prefixes),
            "destinationAddressPrefixes": text(&r.destination.address_prefixes),
            "sourceApplicationSecurityGroups": r.source.application_security_groups.iter().map(|a| json!({"id": a})).collect::<Vec<_>>(),
            "destinationApplicationSecurityGroups": r.destination.application_security_groups.iter().map(|a| json!({"id": a})).collect::<Vec<_>>(),
            "access": access(r.access),
            "priority": r.priority,
            "direction": format!("{:?}", r.direction),
        }
    })
}

/// DIAG-6 for one NIC: the rules of its own NSG and of its subnet's as written, the default
/// rules, and the DIAG-4 effective rules (exactly `effective_rules` for the NIC).
pub fn security_group_view(snap: &Snapshot, nic: &str) -> Result<Value, NotAnswerable> {
    let written = |compiled: &str| -> Vec<Value> {
        snap.network
            .network_security_groups
            .iter()
            .find(|g| g.name.eq_ignore_ascii_case(compiled))
            .map(|g| g.security_rules.iter().map(written_rule).collect())
            .unwrap_or_default()
    };
    let mut associations = serde_json::Map::new();
    for (kind, name, g) in applied_nsgs(snap, Some(nic), None)? {
        let nsg = &snap.nsg(g).name;
        let key = match kind {
            "subnet" => "subnetAssociation",
            _ => "networkInterfaceAssociation",
        };
        associations.insert(
            key.into(),
            json!({"id": name, "networkSecurityGroup": {"id": nsg}, "securityRules": written(nsg)}),
        );
    }
    let defaults: Vec<Value> = palisade_policy::nsg::default_rules()
        .iter()
        .map(written_rule)
        .collect();
    associations.insert("defaultSecurityRules".into(), json!(defaults));
    let effective: Vec<Value> = effective_rules(snap, Some(nic), None)?["value"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| {
            g["effectiveSecurityRules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    associations.insert("effectiveSecurityRules".into(), json!(effective));
    let name = &snap
        .nic(snap.nic_by_name(nic).expect("applied_nsgs found it"))
        .name;
    Ok(json!({"networkInterfaces": [{"id": name, "securityRuleAssociations": associations}]}))
}

/// DIAG-9's declared inbound sources: a dependency list's `via: Route` entries with an address.
pub fn declared_sources(catalog: &DependencyCatalog) -> Vec<(String, Vec<ipnet::IpNet>)> {
    catalog
        .entries()
        .filter(|e| e.category.via == Via::Route)
        .filter_map(|e| {
            let ip = e.endpoint.ip_address()?;
            Some((
                format!("{}: {}", e.category.category, ip),
                vec![ipnet::IpNet::from(ip)],
            ))
        })
        .collect()
}

/// The verdicts a reachability report lists: reachable ones, or all with `all`.
pub fn reach_verdicts(all: bool) -> Vec<Reach> {
    if all {
        vec![
            Reach::Allow,
            Reach::ByName,
            Reach::Deny,
            Reach::Drop,
            Reach::Unknown,
        ]
    } else {
        vec![Reach::Allow, Reach::ByName]
    }
}

/// What each entry's verdict assumed: the unknown values of the controls that decided it.
pub fn reach_assumed(snap: &Snapshot, report: &ReachReport) -> Vec<Vec<String>> {
    report
        .entries
        .iter()
        .map(|e| {
            palisade_policy::trace::assumed(
                &snap.network,
                e.decided_by.iter().map(|c| c.resource.as_str()),
            )
        })
        .collect()
}

/// The reachability report as `palisade analyze reachability --output json` prints it.
pub fn reachability(report: &ReachReport, assumed: &[Vec<String>]) -> Value {
    let mut v = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Some(entries) = v.get_mut("entries").and_then(|e| e.as_array_mut()) {
        for (e, a) in entries.iter_mut().zip(assumed) {
            e["assumed"] = json!(a);
        }
    }
    v
}
