//! Presenting answers: human text by default, JSON with the documented schema
//! (`docs/cli-json.md`) on `--output json`.

use palisade_load::Checked;
use palisade_model::{Access, AddressCheck, Direction, PortRange, Protocol};
use palisade_policy::nsg::{CompiledNsg, CompiledRule};
use palisade_policy::routes::SubnetRoutes;
use palisade_policy::{Flow, Snapshot, Trace};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::process::ExitCode;

pub fn validation(loaded: &Checked, as_json: bool) {
    let counts = loaded.imported.network.counts();
    if as_json {
        let v = json!({
            "valid": !loaded.diagnostics.has_errors(),
            "files": loaded.imported.files,
            "counts": counts,
            "diagnostics": loaded.diagnostics,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    for d in loaded.diagnostics.iter() {
        println!("{d}");
    }
    let n = &loaded.imported.network;
    println!(
        "{} file(s): {} virtual network(s), {} NSG(s) with {} rule(s), {} route table(s) with {} route(s), {} firewall(s), {} firewall polic(ies), {} firewall rule(s); {} error(s), {} warning(s)",
        loaded.imported.files.len(),
        n.virtual_networks.len(),
        n.network_security_groups.len(),
        counts.security_rules,
        n.route_tables.len(),
        counts.routes,
        n.azure_firewalls.len(),
        n.firewall_policies.len(),
        counts.firewall_rules,
        loaded.diagnostics.errors().count(),
        loaded.diagnostics.iter().filter(|d| d.severity == palisade_model::Severity::Warning).count(),
    );
}

pub fn trace_json(flow: &Flow, trace: &Trace) -> Value {
    json!({
        "flow": flow,
        "verdict": trace.verdict,
        "decided_by": trace.decided_by,
        "hops": trace.hops,
        "next_hop": trace.next_hop,
        "reply": trace.reply,
        "stateful": trace.stateful,
        "notes": trace.notes,
        "assumed": trace.assumed,
        "snapshot": trace.snapshot,
    })
}

pub fn trace(flow: &Flow, trace: &Trace, as_json: bool) {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&trace_json(flow, trace)).unwrap_or_default()
        );
        return;
    }
    let host = flow
        .host
        .as_deref()
        .map(|h| format!("  host {h}"))
        .unwrap_or_default();
    println!(
        "flow    {} {}:{} → {}:{}{host}",
        flow.protocol.as_str(),
        flow.source,
        flow.source_port,
        flow.destination,
        flow.destination_port
    );
    for (i, h) in trace.hops.iter().enumerate() {
        let dir = h.direction.map(|d| format!(" {d:?}")).unwrap_or_default();
        let rule = h
            .rule
            .as_deref()
            .map(|r| format!("  {r}"))
            .unwrap_or_default();
        let prio = h
            .priority
            .map(|p| format!(" (priority {p})"))
            .unwrap_or_default();
        let nh = h
            .next_hop
            .as_ref()
            .map(|n| format!("  → {}", n.display()))
            .unwrap_or_default();
        println!(
            "{:>4}. {:<20} {:<8} {}{rule}{prio}{nh}  [{}]",
            i + 1,
            format!("{}{dir}", h.layer),
            h.result,
            h.resource,
            h.reason
        );
        if let Some(d) = &h.detail {
            println!("        {d}");
        }
        for a in &h.audit {
            println!("        audit rule matched and passed over: {a}");
        }
        if let Some(c) = h.address_check {
            let what = match c {
                AddressCheck::Enforce => "a transparent connection whose name does not resolve to the dialed address is denied",
                AddressCheck::Audit => "a name that does not resolve to the dialed address is logged and allowed",
                AddressCheck::Off => "the dialed address is not checked against the name",
            };
            println!("        addressCheck {c:?}: {what} (PAL-5.2)");
        }
        match &h.near_miss {
            Some(m) if m.differs.is_empty() => println!(
                "        nearest allow: {} — matches this flow, but comes after the deciding {}",
                m.rule,
                m.shadowed_by.as_deref().unwrap_or("rule")
            ),
            Some(m) => println!(
                "        nearest allow: {} — differs in {}",
                m.rule,
                m.differs.join(", ")
            ),
            None => {}
        }
    }
    if let Some(r) = &trace.reply {
        println!(
            "reply   routed by {} / {} → {}  ({})",
            r.resource,
            r.route,
            r.next_hop.display(),
            if r.symmetric {
                "symmetric"
            } else {
                "asymmetric: the reply leaves by another path"
            }
        );
    }
    for n in &trace.notes {
        println!("note    {n}");
    }
    for a in &trace.assumed {
        println!("assumed {a}");
    }
    let by = trace
        .decided_by
        .as_ref()
        .map(|d| {
            let rule = d.rule.as_deref().unwrap_or(if d.layer == "default" {
                "default action"
            } else {
                "connection state"
            });
            format!(" — {} {} / {}", d.layer, d.resource, rule)
        })
        .unwrap_or_default();
    let nh = trace
        .next_hop
        .as_ref()
        .map(|n| format!("; next hop {}", n.display()))
        .unwrap_or_default();
    println!("verdict {:?}{by}{nh}", trace.verdict);
}

pub fn next_hop(
    snap: &Snapshot,
    from: IpAddr,
    to: IpAddr,
    as_json: bool,
) -> Result<ExitCode, String> {
    let loc = snap.locate(from);
    let routes: &SubnetRoutes = match loc.subnet {
        Some(s) => &snap.subnet(s).routes,
        None => match snap.unattached_route_tables().next() {
            Some((_, r)) if snap.unattached_route_tables().len() == 1 => r,
            _ => return Err(format!("{from} is in no subnet of the input")),
        },
    };
    let Some((prefix, route)) = routes.lookup(to) else {
        if as_json {
            println!(
                "{}",
                json!({"next_hop": {"type": "None", "address": null}, "route": null, "nextHopType": "None", "routeTableId": "System Route"})
            );
        } else {
            println!("next hop None (no route to {to})");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let address = (route.next_hop_type == palisade_model::NextHopType::VirtualAppliance)
        .then_some(route.next_hop_ip_address)
        .flatten();
    let source = match route.source {
        palisade_policy::routes::RouteSource::User => "User",
        palisade_policy::routes::RouteSource::VirtualNetworkGateway => "VirtualNetworkGateway",
        palisade_policy::routes::RouteSource::Default => {
            if route.service.is_some() {
                "ServiceEndpoint"
            } else {
                "Default"
            }
        }
    };
    if as_json {
        let v = json!({
            "next_hop": {"type": route.next_hop_type.as_str(), "address": address},
            "route": {"table": route.table, "name": route.name.clone().or(route.service.clone()), "prefix": prefix.to_string(), "source": source, "state": route.state},
            "nextHopType": route.next_hop_type.as_str(),
            "nextHopIpAddress": address,
            "routeTableId": route.table.clone().unwrap_or_else(|| "System Route".into()),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let addr = address.map(|a| format!(" {a}")).unwrap_or_default();
        println!(
            "next hop {}{addr}  via {} / {} ({prefix}, {source})",
            route.next_hop_type.as_str(),
            route.resource(),
            route.label()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Any => "All",
        other => other.as_str(),
    }
}

fn ranges(p: &[PortRange]) -> Vec<String> {
    p.iter()
        .map(|r| format!("{}-{}", r.first, r.last))
        .collect()
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
        "access": match r.access { Access::Allow => "Allow", Access::Deny => "Deny" },
        "priority": r.priority,
        "direction": format!("{direction:?}"),
        "unresolvable": r.unresolvable,
    })
}

fn nsg_rules(nsg: &CompiledNsg) -> Vec<Value> {
    let mut v = vec![];
    for dir in [Direction::Inbound, Direction::Outbound] {
        for r in &nsg.direction(dir).rules {
            v.push(effective_rule(r, dir));
        }
    }
    v
}

pub fn effective_rules(
    snap: &Snapshot,
    nic: Option<&str>,
    subnet: Option<&str>,
    as_json: bool,
) -> Result<ExitCode, String> {
    let mut groups: Vec<(String, String, &CompiledNsg)> = vec![];
    if let Some(n) = nic {
        let i = snap
            .nic_by_name(n)
            .ok_or_else(|| format!("no network interface named '{n}'"))?;
        let e = snap.nic(i);
        if let Some(s) = e.subnet.map(|s| snap.subnet(s)) {
            if let Some(g) = s.nsg {
                groups.push((
                    "subnet".into(),
                    format!("{}/{}", s.vnet, s.name),
                    snap.nsg(g),
                ));
            }
        }
        if let Some(g) = e.nsg {
            groups.push(("networkInterface".into(), e.name.clone(), snap.nsg(g)));
        }
    } else if let Some(s) = subnet {
        let i = snap
            .subnet_by_name(s)
            .ok_or_else(|| format!("no subnet named '{s}'"))?;
        let e = snap.subnet(i);
        if let Some(g) = e.nsg {
            groups.push((
                "subnet".into(),
                format!("{}/{}", e.vnet, e.name),
                snap.nsg(g),
            ));
        }
    }
    if as_json {
        let value: Vec<Value> = groups
            .iter()
            .map(|(kind, name, nsg)| {
                json!({
                    "networkSecurityGroup": {"id": nsg.name},
                    "association": {kind: {"id": name}},
                    "effectiveSecurityRules": nsg_rules(nsg),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"value": value})).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if groups.is_empty() {
        println!("no NSG applies: all traffic is allowed (NSG-6)");
    }
    for (kind, name, nsg) in groups {
        println!("{} (on {kind} {name})", nsg.name);
        for dir in [Direction::Inbound, Direction::Outbound] {
            for r in &nsg.direction(dir).rules {
                let show = |set: &[ipnet::IpNet]| {
                    let s: Vec<String> = set.iter().take(4).map(|p| p.to_string()).collect();
                    if set.len() > 4 {
                        format!("{} (+{} more)", s.join(","), set.len() - 4)
                    } else {
                        s.join(",")
                    }
                };
                println!(
                    "  {:<8} {:>5} {:<5} {:<4} {} :{} → {} :{}  {}{}",
                    format!("{dir:?}"),
                    r.priority,
                    format!("{:?}", r.access),
                    protocol_name(r.protocol),
                    show(&r.source),
                    ranges(&r.source_ports).join(","),
                    show(&r.destination),
                    ranges(&r.destination_ports).join(","),
                    r.qualified_name(),
                    if r.audit { " (audit)" } else { "" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn effective_routes(
    snap: &Snapshot,
    subnet: Option<&str>,
    nic: Option<&str>,
    as_json: bool,
) -> Result<ExitCode, String> {
    let s = match (subnet, nic) {
        (Some(s), _) => snap
            .subnet_by_name(s)
            .ok_or_else(|| format!("no subnet named '{s}'"))?,
        (None, Some(n)) => {
            let i = snap
                .nic_by_name(n)
                .ok_or_else(|| format!("no network interface named '{n}'"))?;
            snap.nic(i)
                .subnet
                .ok_or_else(|| format!("network interface '{n}' is in no subnet of the input"))?
        }
        _ => return Err("give --subnet or --nic".into()),
    };
    let s = snap.subnet(s);
    let routes = &s.routes.routes;
    if as_json {
        let value: Vec<Value> = routes
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
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"value": value})).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("effective routes of {}/{}", s.vnet, s.name);
    for r in routes {
        let prefixes: Vec<String> = r
            .address_prefix
            .iter()
            .take(3)
            .map(|p| p.to_string())
            .collect();
        let more = if r.address_prefix.len() > 3 {
            format!(" (+{} more)", r.address_prefix.len() - 3)
        } else {
            String::new()
        };
        let addr = r
            .next_hop_ip_address
            .map(|a| format!(" {a}"))
            .unwrap_or_default();
        let reason = r
            .invalid_reason
            .map(|x| format!(" ({x})"))
            .unwrap_or_default();
        println!(
            "  {:<8} {:<8}{:<20} {}{more} → {}{addr}  {}",
            format!("{:?}", r.source),
            format!("{:?}", r.state),
            reason,
            prefixes.join(","),
            r.next_hop_type.as_str(),
            r.name.clone().or(r.service.clone()).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
