//! The lab: a small network built in network namespaces this test creates and removes (a Drop
//! guard removes them on failure too). The rendered NSG tables are applied to the workload's
//! namespace, real TCP connections are made from client namespaces, and the kernel's verdict
//! (connected vs. timed out) and the deciding rule's counter are compared with `Snapshot::trace`
//! for the same flows. Disagreements are collected and reported flow by flow.
//!
//! ```text
//!  client (10.50.2.4) ──┐
//!  inet (203.0.113.20,  ├── rtr (forwarding) ── app (10.50.1.4: app-nsg + app-nic-nsg tables)
//!        198.51.100.7) ─┘
//! ```

mod common;

use common::Netns;
use common::{connect, listen};
use palisade_host::apply;
use palisade_host::nft::Nft;
use palisade_host::render::{render, sanitize, HookMode, RenderOptions, Target};
use palisade_host::routes;
use palisade_model::Protocol;
use palisade_policy::{Flow, TraceOptions, Verdict};
use std::time::Instant;

struct Case {
    from_ns: usize,
    src: &'static str,
    sport: u16,
    dst: &'static str,
    dport: u16,
}

#[test]
fn kernel_verdicts_agree_with_trace_host_mode() {
    require_kernel!();
    run_lab(false);
}

/// The subnet's table on the router (`forward`), the NIC's table on the workload (`input`/`output`).
#[test]
fn kernel_verdicts_agree_with_trace_router_mode() {
    require_kernel!();
    run_lab(true);
}

fn run_lab(router: bool) {
    let started = Instant::now();
    let snap = common::lab_snapshot();
    // Namespaces: 0 client, 1 inet, 2 rtr, 3 app (dropped, so deleted, in reverse on exit).
    let client = Netns::new("client");
    let inet = Netns::new("inet");
    let rtr = Netns::new("rtr");
    let app = Netns::new("app");
    common::link(
        &app,
        "eth0",
        &["10.50.1.4/24"],
        &rtr,
        "app0",
        &["10.50.1.1/24"],
    );
    common::link(
        &client,
        "eth0",
        &["10.50.2.4/24"],
        &rtr,
        "cli0",
        &["10.50.2.1/24"],
    );
    common::link(
        &inet,
        "eth0",
        &["203.0.113.20/24", "198.51.100.7/24"],
        &rtr,
        "net0",
        &["203.0.113.1/24", "198.51.100.1/24"],
    );
    rtr.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    app.exec(&["ip", "route", "add", "default", "via", "10.50.1.1"])
        .unwrap();
    client
        .exec(&["ip", "route", "add", "default", "via", "10.50.2.1"])
        .unwrap();
    inet.exec(&["ip", "route", "add", "default", "via", "203.0.113.1"])
        .unwrap();

    // Host mode: the workload namespace holds the subnet NSG's table and the NIC NSG's table: a
    // packet passes only if both allow, as NSG-6 requires. Router mode: the subnet's table sits
    // on the router's forward hook instead.
    let nft = Nft::new(Some(app.name.clone()));
    let nft_rtr = Nft::new(Some(rtr.name.clone()));
    let mut tables = vec![];
    for target in [
        Target::Subnet("app".into()),
        Target::Nic("app-vm-nic".into()),
    ] {
        let on_router = router && matches!(target, Target::Subnet(_));
        let opts = RenderOptions {
            hook: if on_router {
                HookMode::Router
            } else {
                HookMode::Host
            },
            ..Default::default()
        };
        let plan = render(&snap, &target, &opts).unwrap();
        let at = if on_router {
            nft_rtr.clone()
        } else {
            nft.clone()
        };
        let (state, _) = apply::apply(&at, &plan, None).unwrap();
        assert!(apply::diff(&at, &plan, Some(&state)).unwrap().is_clean());
        tables.push((plan, at));
    }
    // The subnet's user routes in the workload namespace, through netlink; then removed.
    let (route_plan, _) = routes::plan_routes(&snap, snap.subnet_by_name("app").unwrap());
    let owned = routes::apply_routes(Some(&app.name), &route_plan, &[]).unwrap();
    assert_eq!(owned.len(), 2);
    let shown = app.exec(&["ip", "route", "show", "proto", "99"]).unwrap();
    assert!(shown.contains("10.60.0.0/16 via 10.50.1.1"), "{shown}");
    assert!(shown.contains("blackhole 192.0.2.0/24"), "{shown}");
    // Idempotent.
    let again = routes::apply_routes(Some(&app.name), &route_plan, &owned).unwrap();
    assert_eq!(again, owned);

    let nss = [&client, &inet];
    let cases = [
        Case {
            from_ns: 0,
            src: "10.50.2.4",
            sport: 41000,
            dst: "10.50.1.4",
            dport: 8080,
        }, // allow 100
        Case {
            from_ns: 0,
            src: "10.50.2.4",
            sport: 41001,
            dst: "10.50.1.4",
            dport: 8081,
        }, // NIC deny-8081
        Case {
            from_ns: 0,
            src: "10.50.2.4",
            sport: 41002,
            dst: "10.50.1.4",
            dport: 9000,
        }, // audit, then AllowVnetInBound
        Case {
            from_ns: 0,
            src: "10.50.2.4",
            sport: 41003,
            dst: "10.50.1.4",
            dport: 22,
        }, // AllowVnetInBound
        Case {
            from_ns: 1,
            src: "203.0.113.20",
            sport: 41004,
            dst: "10.50.1.4",
            dport: 22,
        }, // deny-ssh-from-net
        Case {
            from_ns: 1,
            src: "203.0.113.20",
            sport: 41005,
            dst: "10.50.1.4",
            dport: 8005,
        }, // partners set
        Case {
            from_ns: 1,
            src: "198.51.100.7",
            sport: 41006,
            dst: "10.50.1.4",
            dport: 80,
        }, // partners set
        Case {
            from_ns: 1,
            src: "198.51.100.7",
            sport: 41007,
            dst: "10.50.1.4",
            dport: 443,
        }, // Internet tag set
        Case {
            from_ns: 1,
            src: "198.51.100.7",
            sport: 41008,
            dst: "10.50.1.4",
            dport: 9000,
        }, // DenyAllInBound
        Case {
            from_ns: 1,
            src: "203.0.113.20",
            sport: 41009,
            dst: "10.50.1.4",
            dport: 8081,
        }, // NIC deny-8081
    ];
    let mut disagreements = vec![];
    let mut checked = 0;
    for c in &cases {
        let flow = Flow {
            source: c.src.parse().unwrap(),
            source_port: c.sport,
            destination: c.dst.parse().unwrap(),
            destination_port: c.dport,
            protocol: Protocol::Tcp,
            host: None,
            app_protocol: None,
        };
        let trace = snap.trace(&flow, &TraceOptions::default());
        let expect_connect = trace.verdict == Verdict::Allow;
        let decided = trace.decided_by.clone();
        let before: Vec<_> = tables
            .iter()
            .map(|(t, at)| apply::counters(at, &t.table).unwrap())
            .collect();
        let listener = listen(app.name.clone(), c.dport);
        let connected = connect(
            nss[c.from_ns].name.clone(),
            flow.source,
            c.sport,
            flow.destination,
            c.dport,
        );
        drop(listener);
        checked += 1;
        if connected != expect_connect {
            disagreements.push(format!(
                "{}:{} → {}:{}: trace says {:?} ({:?}), kernel {}",
                c.src,
                c.sport,
                c.dst,
                c.dport,
                trace.verdict,
                decided,
                if connected { "connected" } else { "dropped" }
            ));
            continue;
        }
        // The deciding NSG rule's counter moved (in the table of the NSG that decided).
        if let Some(d) = decided.filter(|d| d.layer == "nsg" || d.layer == "default") {
            let Some(ti) = tables.iter().position(|(t, _)| t.nsg == d.resource) else {
                disagreements.push(format!("no table for deciding NSG {}", d.resource));
                continue;
            };
            let counter = format!("in_{}", sanitize(d.rule.as_deref().unwrap_or("")));
            let after = apply::counters(&tables[ti].1, &tables[ti].0.table).unwrap();
            let b = before[ti].get(&counter).map(|x| x.0).unwrap_or(0);
            let a = after.get(&counter).map(|x| x.0).unwrap_or(0);
            if a <= b {
                disagreements.push(format!(
                    "{}:{} → {}:{}: trace names {}/{}, but counter {counter} did not move ({b} → {a})",
                    c.src, c.sport, c.dst, c.dport, d.resource, d.rule.unwrap_or_default()
                ));
            }
        }
    }
    // The audit rule counted flow 3 (and flow 9) without deciding them (PAL-5.3).
    let audit = apply::counters(&tables[0].1, &tables[0].0.table).unwrap();
    assert!(audit["in_audit_9000"].0 >= 2, "{audit:?}");

    // Outbound: app-nsg denies app → clients:7000 (deny-client-7000-out), allows :7001.
    for (port, want) in [(7000u16, false), (7001, true)] {
        let flow = Flow {
            source: "10.50.1.4".parse().unwrap(),
            source_port: 42000 + port,
            destination: "10.50.2.4".parse().unwrap(),
            destination_port: port,
            protocol: Protocol::Tcp,
            host: None,
            app_protocol: None,
        };
        let trace = snap.trace(&flow, &TraceOptions::default());
        assert_eq!(trace.verdict == Verdict::Allow, want, "{trace:?}");
        let listener = listen(client.name.clone(), port);
        let connected = connect(
            app.name.clone(),
            flow.source,
            flow.source_port,
            flow.destination,
            port,
        );
        drop(listener);
        checked += 1;
        if connected != want {
            disagreements.push(format!(
                "outbound :{port}: trace {:?}, kernel connected={connected}",
                trace.verdict
            ));
        }
    }

    assert_eq!(routes::remove_routes(Some(&app.name), &owned).unwrap(), 2);
    assert!(app
        .exec(&["ip", "route", "show", "proto", "99"])
        .unwrap()
        .trim()
        .is_empty());
    for (t, at) in &tables {
        assert!(apply::remove_table(at, &t.table).unwrap());
    }
    assert!(nft.tables().unwrap().is_empty());
    assert!(nft_rtr.tables().unwrap().is_empty());
    eprintln!(
        "lab (router mode: {router}): {checked} flows checked in {:?}",
        started.elapsed()
    );
    assert!(
        disagreements.is_empty(),
        "kernel and trace disagree:\n{}",
        disagreements.join("\n")
    );
}
