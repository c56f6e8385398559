//! Presenting answers: human text by default, JSON with the documented schema
//! (`docs/cli-json.md`) on `--output json`.

use palisade_load::Checked;
use palisade_model::Direction;
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
    trace_value(&trace_json(flow, trace), as_json);
}

/// A trace as `present::trace` shapes it, whether made here or answered by a server: the text is
/// made from the JSON so both print alike.
pub fn trace_value(v: &Value, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let f = &v["flow"];
    let host = f["host"]
        .as_str()
        .map(|h| format!("  host {h}"))
        .unwrap_or_default();
    println!(
        "flow    {} {}:{} → {}:{}{host}",
        s(&f["protocol"]),
        s(&f["source"]),
        f["source_port"],
        s(&f["destination"]),
        f["destination_port"]
    );
    for (i, h) in list(&v["hops"]).iter().enumerate() {
        let dir = h["direction"]
            .as_str()
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        let rule = h["rule"]
            .as_str()
            .map(|r| format!("  {r}"))
            .unwrap_or_default();
        let prio = h["priority"]
            .as_u64()
            .map(|p| format!(" (priority {p})"))
            .unwrap_or_default();
        let nh = next_hop_text(&h["next_hop"])
            .map(|n| format!("  → {n}"))
            .unwrap_or_default();
        println!(
            "{:>4}. {:<20} {:<8} {}{rule}{prio}{nh}  [{}]",
            i + 1,
            format!("{}{dir}", s(&h["layer"])),
            s(&h["result"]),
            s(&h["resource"]),
            s(&h["reason"])
        );
        if let Some(d) = h["detail"].as_str() {
            println!("        {d}");
        }
        for a in list(&h["audit"]) {
            println!(
                "        audit rule matched and passed over: {} (would {})",
                s(&a["rule"]),
                s(&a["access"])
            );
        }
        if let Some(c) = h["address_check"].as_str() {
            let what = match c {
                "Enforce" => "a transparent connection whose name does not resolve to the dialed address is denied",
                "Audit" => "a name that does not resolve to the dialed address is logged and allowed",
                _ => "the dialed address is not checked against the name",
            };
            println!("        addressCheck {c}: {what} (PAL-5.2)");
        }
        let m = &h["near_miss"];
        if m.is_object() {
            let differs: Vec<&str> = list(&m["differs"]).iter().map(s).collect();
            if differs.is_empty() {
                println!(
                    "        nearest allow: {} — matches this flow, but comes after the deciding {}",
                    s(&m["rule"]),
                    m["shadowed_by"].as_str().unwrap_or("rule")
                );
            } else {
                println!(
                    "        nearest allow: {} — differs in {}",
                    s(&m["rule"]),
                    differs.join(", ")
                );
            }
        }
    }
    let r = &v["reply"];
    if r.is_object() {
        println!(
            "reply   routed by {} / {} → {}  ({})",
            s(&r["resource"]),
            s(&r["route"]),
            next_hop_text(&r["next_hop"]).unwrap_or_default(),
            if r["symmetric"].as_bool() == Some(true) {
                "symmetric"
            } else {
                "asymmetric: the reply leaves by another path"
            }
        );
    }
    let t = &v["translated"];
    if t.is_object() {
        println!(
            "dnat    destination translated to {}:{} (FW-4)",
            s(&t["destination"]),
            t["destination_port"]
        );
    }
    for n in list(&v["notes"]) {
        println!("note    {}", s(n));
    }
    for a in list(&v["assumed"]) {
        println!("assumed {}", s(a));
    }
    let d = &v["decided_by"];
    let by = if d.is_object() {
        let layer = s(&d["layer"]);
        let rule = d["rule"].as_str().unwrap_or(if layer == "default" {
            "default action"
        } else {
            "connection state"
        });
        format!(" — {layer} {} / {rule}", s(&d["resource"]))
    } else {
        String::new()
    };
    let nh = next_hop_text(&v["next_hop"])
        .map(|n| format!("; next hop {n}"))
        .unwrap_or_default();
    println!("verdict {}{by}{nh}", s(&v["verdict"]));
}

/// A string field, empty when absent.
fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `{"type", "address"}` as `NextHop::display` writes it.
fn next_hop_text(v: &Value) -> Option<String> {
    let t = v["type"].as_str()?;
    Some(match v["address"].as_str() {
        Some(a) => format!("{t} {a}"),
        None => t.to_string(),
    })
}

pub fn next_hop(
    snap: &Snapshot,
    from: IpAddr,
    to: IpAddr,
    as_json: bool,
) -> Result<ExitCode, String> {
    let v = present::next_hop(snap, from, to).map_err(|e| e.to_string())?;
    next_hop_value(&v, to, as_json);
    Ok(ExitCode::SUCCESS)
}

/// A next hop as `present::next_hop` shapes it, made here or answered by a server.
pub fn next_hop_value(v: &Value, to: IpAddr, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let r = &v["route"];
    if !r.is_object() {
        println!("next hop None (no route to {to})");
        return;
    }
    let addr = v["next_hop"]["address"]
        .as_str()
        .map(|a| format!(" {a}"))
        .unwrap_or_default();
    println!(
        "next hop {}{addr}  via {} / {} ({}, {})",
        s(&v["nextHopType"]),
        s(&r["resource"]),
        s(&r["label"]),
        s(&r["prefix"]),
        s(&r["source"])
    );
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
