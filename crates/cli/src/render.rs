//! Presenting answers: human text by default, JSON with the documented schema
//! (`docs/cli-json.md`) on `--output json`.

use palisade_load::Checked;
use palisade_model::{AddressCheck, Direction};
use palisade_policy::{Flow, Snapshot, Trace};
use palisade_server::present;
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
    present::trace(flow, trace)
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
            println!(
                "        audit rule matched and passed over: {} (would {})",
                a.rule, a.access
            );
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
    if as_json {
        let v = present::next_hop(snap, from, to).map_err(|e| e.to_string())?;
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    match present::route_to(snap, from, to).map_err(|e| e.to_string())? {
        None => println!("next hop None (no route to {to})"),
        Some(r) => {
            let addr = r.address.map(|a| format!(" {a}")).unwrap_or_default();
            println!(
                "next hop {}{addr}  via {} / {} ({}, {})",
                r.route.next_hop_type.as_str(),
                r.route.resource(),
                r.route.label(),
                r.prefix,
                r.source
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn effective_rules(
    snap: &Snapshot,
    nic: Option<&str>,
    subnet: Option<&str>,
    as_json: bool,
) -> Result<ExitCode, String> {
    if as_json {
        let v = present::effective_rules(snap, nic, subnet).map_err(|e| e.to_string())?;
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let groups = present::applied_nsgs(snap, nic, subnet).map_err(|e| e.to_string())?;
    if groups.is_empty() {
        println!("no NSG applies: all traffic is allowed (NSG-6)");
    }
    for (kind, name, nsg) in groups {
        let nsg = snap.nsg(nsg);
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
                    present::protocol_name(r.protocol),
                    show(&r.source),
                    present::ranges(&r.source_ports).join(","),
                    show(&r.destination),
                    present::ranges(&r.destination_ports).join(","),
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
    if as_json {
        let v = present::effective_routes(snap, nic, subnet).map_err(|e| e.to_string())?;
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let s = snap.subnet(present::subnet_of(snap, nic, subnet).map_err(|e| e.to_string())?);
    let routes = &s.routes.routes;
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
