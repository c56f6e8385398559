//! Agreement on a shared scenario: `../shared/scenarios/layered-nsg`, built in network
//! namespaces — one per NIC (holding its NIC NSG's and its subnet NSG's tables, host mode), one
//! "outside" namespace holding every other address the flows use, and a router between them.
//! Every TCP flow of `flows.yaml` is sent for real; the kernel's outcome (connected / dropped)
//! must equal `Snapshot::trace`'s verdict, and the deciding rule's counter must move in the
//! table of the NSG that `trace` names. Flows that are replies (`reply_to`) or not TCP are
//! listed as skipped. All namespaces are deleted on drop, also when the test fails.

mod common;

use common::{connect, listen, Netns};
use palisade_host::apply;
use palisade_host::nft::Nft;
use palisade_host::render::{render, sanitize, RenderOptions, Target};
use palisade_model::{Direction, Protocol};
use palisade_policy::{Flow, TraceOptions, Verdict};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

#[derive(Deserialize)]
struct Flows {
    flows: Vec<FlowCase>,
}

#[derive(Deserialize)]
struct FlowCase {
    name: String,
    protocol: String,
    source: IpAddr,
    source_port: Option<u16>,
    destination: IpAddr,
    destination_port: Option<u16>,
    reply_to: Option<String>,
}

/// One namespace and the tables applied in it: NSG name → table name.
struct Place {
    ns: Netns,
    tables: BTreeMap<String, String>,
}

#[test]
fn layered_nsg_kernel_agrees_with_trace() {
    require_kernel!();
    let started = Instant::now();
    let snap = common::layered_nsg();
    let text =
        std::fs::read_to_string(common::shared().join("scenarios/layered-nsg/flows.yaml")).unwrap();
    let flows: Flows = serde_saphyr::from_str(&text).unwrap();

    let rtr = Netns::new("rtr");
    rtr.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let mut places: Vec<Place> = vec![];
    let mut where_is: BTreeMap<IpAddr, usize> = BTreeMap::new();
    // Point-to-point links: the workload end holds its /32 and a default route via 169.254.0.1,
    // the router end holds 169.254.0.1 and a /32 route back.
    let attach = |ns: &Netns, idx: usize, addrs: &[IpAddr]| {
        let rif = format!("v{idx}");
        common::sh(&[
            "ip", "link", "add", "eth0", "netns", &ns.name, "type", "veth", "peer", &rif, "netns",
            &rtr.name,
        ])
        .unwrap();
        ns.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
        rtr.exec(&["ip", "link", "set", &rif, "up"]).unwrap();
        rtr.exec(&["ip", "addr", "add", "169.254.0.1/32", "dev", &rif])
            .unwrap();
        for a in addrs {
            ns.exec(&["ip", "addr", "add", &format!("{a}/32"), "dev", "eth0"])
                .unwrap();
            rtr.exec(&["ip", "route", "add", &format!("{a}/32"), "dev", &rif])
                .unwrap();
        }
        ns.exec(&["ip", "route", "add", "169.254.0.1", "dev", "eth0"])
            .unwrap();
        ns.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "169.254.0.1",
            "dev",
            "eth0",
        ])
        .unwrap();
    };
    for (i, nic) in snap.nics() {
        let v4: Vec<IpAddr> = nic
            .addresses
            .iter()
            .copied()
            .filter(IpAddr::is_ipv4)
            .collect();
        if v4.is_empty() {
            continue;
        }
        let ns = Netns::new(&format!("nic{}", i.index()));
        attach(&ns, places.len(), &v4);
        let nft = Nft::new(Some(ns.name.clone()));
        let mut tables = BTreeMap::new();
        let mut targets = vec![];
        if let Some(s) = nic.subnet {
            if snap.subnet(s).nsg.is_some() {
                targets.push(("s", Target::Subnet(snap.subnet(s).name.clone())));
            }
        }
        if nic.nsg.is_some() {
            targets.push(("n", Target::Nic(nic.name.clone())));
        }
        for (kind, target) in targets {
            let mut plan = render(&snap, &target, &RenderOptions::default()).unwrap();
            plan.table = format!("pal_{kind}_{}", sanitize(&plan.nsg));
            apply::apply(&nft, &plan, None).unwrap();
            tables.insert(plan.nsg.clone(), plan.table.clone());
        }
        for a in &v4 {
            where_is.insert(*a, places.len());
        }
        places.push(Place { ns, tables });
    }
    // Everything else the flows name lives outside the virtual network.
    let mut outside_addrs: Vec<IpAddr> = vec![];
    for f in &flows.flows {
        for a in [f.source, f.destination] {
            if a.is_ipv4() && !where_is.contains_key(&a) && !outside_addrs.contains(&a) {
                outside_addrs.push(a);
            }
        }
    }
    let outside = Netns::new("outside");
    attach(&outside, places.len(), &outside_addrs);
    for a in &outside_addrs {
        where_is.insert(*a, places.len());
    }
    places.push(Place {
        ns: outside,
        tables: BTreeMap::new(),
    });

    let mut disagreements = vec![];
    let mut skipped = vec![];
    let mut checked = 0;
    for (k, f) in flows.flows.iter().enumerate() {
        if f.reply_to.is_some() || !f.protocol.eq_ignore_ascii_case("tcp") {
            skipped.push(format!("{} (reply or not TCP)", f.name));
            continue;
        }
        let flow = Flow {
            source: f.source,
            source_port: f.source_port.unwrap_or(40000 + k as u16),
            destination: f.destination,
            destination_port: f.destination_port.unwrap_or(80),
            protocol: Protocol::Tcp,
            host: None,
            app_protocol: None,
        };
        let trace = snap.trace(&flow, &TraceOptions::default());
        if trace.hops.iter().any(|h| h.layer.starts_with("Firewall")) {
            skipped.push(format!("{} (crosses a firewall)", f.name));
            continue;
        }
        let (src, dst) = (where_is[&flow.source], where_is[&flow.destination]);
        if src == dst {
            skipped.push(format!(
                "{} (source and destination in one namespace)",
                f.name
            ));
            continue;
        }
        // The NSG hop that decided, and so the namespace whose table must count it.
        let decided = trace.decided_by.clone();
        let counted = decided.as_ref().and_then(|d| {
            let hop = trace.hops.iter().rev().find(|h| {
                (h.layer == "NicNsg" || h.layer == "SubnetNsg")
                    && h.resource == d.resource
                    && h.rule == d.rule
            })?;
            let place = if hop.direction == Some(Direction::Outbound) {
                src
            } else {
                dst
            };
            let prefix = if hop.direction == Some(Direction::Outbound) {
                "out"
            } else {
                "in"
            };
            let table = places[place].tables.get(&d.resource)?.clone();
            Some((
                place,
                table,
                format!("{prefix}_{}", sanitize(d.rule.as_deref()?)),
            ))
        });
        let before = counted.as_ref().map(|(p, t, c)| {
            let nft = Nft::new(Some(places[*p].ns.name.clone()));
            apply::counters(&nft, t)
                .unwrap()
                .get(c)
                .map(|x| x.0)
                .unwrap_or(0)
        });
        let listener = listen(places[dst].ns.name.clone(), flow.destination_port);
        let connected = connect(
            places[src].ns.name.clone(),
            flow.source,
            flow.source_port,
            flow.destination,
            flow.destination_port,
        );
        drop(listener);
        checked += 1;
        let expect = trace.verdict == Verdict::Allow;
        if connected != expect {
            disagreements.push(format!(
                "{}: trace {:?} by {:?}, kernel {}",
                f.name,
                trace.verdict,
                decided,
                if connected { "connected" } else { "dropped" }
            ));
            continue;
        }
        if let (Some((p, t, c)), Some(b)) = (&counted, before) {
            let nft = Nft::new(Some(places[*p].ns.name.clone()));
            let a = apply::counters(&nft, t)
                .unwrap()
                .get(c)
                .map(|x| x.0)
                .unwrap_or(0);
            if a <= b {
                disagreements.push(format!(
                    "{}: trace names {t}/{c}, its counter did not move ({b} → {a})",
                    f.name
                ));
            }
        }
    }
    eprintln!(
        "layered-nsg lab: {checked} flows sent in {:?}; skipped: {}",
        started.elapsed(),
        skipped.join(", ")
    );
    assert!(checked >= 10, "too few flows checked: {checked}");
    assert!(
        disagreements.is_empty(),
        "kernel and trace disagree on {} flow(s):\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}
